//go:build !unix

package sqlitestore

import "time"

// spendLock has no advisory file lock to use on this platform: process
// holds are refused (ErrProcessHoldsUnsupported) and spends take no lock.
type spendLock struct{}

func openSpendLock(string, bool, time.Duration) (*spendLock, error) { return &spendLock{}, nil }
func (*spendLock) share() error                                     { return nil }
func (*spendLock) unshare()                                         {}
func (*spendLock) close() error                                     { return nil }

const processHoldsSupported = false
