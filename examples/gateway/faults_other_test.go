//go:build !linux

package main

import "os/exec"

// dieWithParent is Linux-only (Pdeathsig); elsewhere an interrupted run
// may leave its gateway subprocesses to be ended by hand.
func dieWithParent(*exec.Cmd) {}
