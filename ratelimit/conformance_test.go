package ratelimit_test

import (
	"testing"
	"time"

	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/ratelimit/limitertest"
)

func TestConformance(t *testing.T) {
	limitertest.Run(t, func(_ *testing.T, now func() time.Time) ratelimit.Limiter {
		return ratelimit.NewMemory(&ratelimit.MemoryOptions{Now: now})
	})
}
