//go:build unix

package sqlitestore

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// spendLock is the advisory lock on "<database>-spend.lock" that keeps
// process holds exact across processes: the process that keeps its holds
// in memory (Options.ProcessHolds) holds it exclusively for as long as the
// store is open, and every other process takes it shared for each of its
// spend transactions, so that no process spends while another keeps holds
// that the database cannot see. The kernel drops the lock when a process
// dies.
type spendLock struct {
	f     *os.File
	mu    sync.Mutex
	users int // spend transactions of this process holding it shared
}

func openSpendLock(path string, exclusive bool, wait time.Duration) (*spendLock, error) {
	f, err := os.OpenFile(path+"-spend.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open spend lock: %w", err)
	}
	l := &spendLock{f: f}
	if !exclusive {
		return l, nil
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, ErrSpendLocked
			}
			return nil, fmt.Errorf("sqlitestore: spend lock: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// share takes the lock shared for one spend transaction, or fails with
// ErrSpendLocked if a process keeps holds in memory.
func (l *spendLock) share() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.users > 0 { // one lock per open file: count this process's users
		l.users++
		return nil
	}
	err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrSpendLocked
	}
	if err != nil {
		return fmt.Errorf("sqlitestore: spend lock: %w", err)
	}
	l.users = 1
	return nil
}

// unshare drops what share took.
func (l *spendLock) unshare() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.users--; l.users == 0 {
		_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	}
}

func (l *spendLock) close() error { return l.f.Close() }

// processHoldsSupported: the lock works here.
const processHoldsSupported = true
