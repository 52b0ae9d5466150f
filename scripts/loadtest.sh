#!/usr/bin/env bash
# The gateway load benchmark (examples/gateway TestLoadBench): a stub
# OpenAI upstream, a bare httputil.ReverseProxy and the gateway, each on a
# real listener in one process; closed loop and open loop (latency from
# the scheduled send time) for each, ratios to the bare proxy, and an exact
# reconciliation of the gateway's ledger afterwards.
#   scripts/loadtest.sh                          # SQLite, 5 s per phase
#   LOADBENCH_STORE=sqlite,postgres scripts/loadtest.sh   # needs KEYLEDGER_TEST_POSTGRES
#   LOADBENCH_DURATION=10s LOADBENCH_RATE=1000 LOADBENCH_CLIENTS=64 LOADBENCH_OUT=load.md scripts/loadtest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEYLEDGER_LOADBENCH=1 go test -run '^TestLoadBench$' -count=1 -timeout 30m -v ./examples/gateway | grep -v '^=== RUN\|^--- PASS'
