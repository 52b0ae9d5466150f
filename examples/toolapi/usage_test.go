//go:build !usagemerged

package main

import (
	"testing"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// checkUsage is filled in once the usage Service lands.
func checkUsage(t *testing.T, srv *e2e.Server, key string) {}
