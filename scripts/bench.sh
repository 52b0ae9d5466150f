#!/usr/bin/env bash
# Runs every benchmark BENCHMARKS.md reports, in benchstat-compatible
# format, into bench.txt (or the file given as $1). Set KEYLEDGER_TEST_REDIS
# and KEYLEDGER_TEST_POSTGRES to include the networked backends.
#   scripts/bench.sh            # -count 3
#   COUNT=6 scripts/bench.sh out.txt
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench.txt}
count=${COUNT:-3}
run() { go test -run '^$' -bench "$1" -benchmem -count "$count" "${@:2}"; }
{
  echo "# $(go version) on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
  run . ./store/memstore ./store/sqlitestore ./store/pgstore
  run 'Verify' ./apikey
  run 'Limiter' ./ratelimit
  run 'Debit|ReserveSettle' ./credits
  run 'Meter|Summary' ./usage
  run 'AuthorizeComplete' .
  run 'Middleware' ./httpapi
} 2>&1 | grep -E '^(#|Benchmark|goos|goarch|pkg|cpu)' | tee "$out"
