package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes a gateway subprocess of the fault harness die with
// the test binary, so that an interrupted run leaves no instance behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
