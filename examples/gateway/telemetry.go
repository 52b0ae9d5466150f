package main

import procsrv "github.com/keyledger/keyledger/examples/internal/server"

// telemetry is the gateway's observability, shared with the other
// examples: Prometheus /metrics (keyledger_*, http_server_*, Go runtime and
// process series) on the listener or on -metrics-addr, /healthz, /readyz
// (the store and, with -redis, Redis answer), OTLP/HTTP traces with -otlp,
// and an instrumented upstream client. newServer builds it and wires the
// KeyLedger to its providers; runWithClock mounts its Handler.
type telemetry = procsrv.Telemetry
