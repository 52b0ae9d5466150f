package storetest

import (
	"runtime"
	"testing"
)

// RetainedHeap starts measuring the Go heap that a benchmark's loop leaves
// behind. Call it after setup, before the loop (and before b.ResetTimer),
// and call the function it returns right after the loop with the values
// that hold the state, which are kept alive until measured. It reports
// retained-B/op: the live heap after the loop minus the live heap before,
// both measured after a full collection, divided by b.N. Unlike ns/op the
// number is deterministic, so it shows what a change to a store's layout
// saves. For a backend whose data lives outside the Go heap (SQLite,
// PostgreSQL) it counts only what the Go side keeps.
func RetainedHeap(b *testing.B) (done func(keep ...any)) {
	b.Helper()
	before := liveHeap()
	return func(keep ...any) {
		b.StopTimer()
		after := liveHeap()
		runtime.KeepAlive(keep)
		if b.N > 0 {
			b.ReportMetric(float64(int64(after)-int64(before))/float64(b.N), "retained-B/op")
		}
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
