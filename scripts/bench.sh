#!/usr/bin/env bash
# Benchmarks against `bao agent` on a stack of their own; prints markdown
# tables and writes target/bench/results.json. See scripts/bench.py for knobs.
#   scripts/bench.sh                                          full run (about 17 minutes, most of it the fleet tables)
#   BENCH_RUNS=1 BENCH_SIDECAR_SECONDS=5 BENCH_SIZES=10 BENCH_FLEET=smoke scripts/bench.sh   smoke
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/build-images.sh >/dev/null
export VK_STACK_DIR=$ROOT/target/bench-stack
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh down
scripts/stack.sh up 2>/dev/null
python3 scripts/bench.py
# Leased secrets: the synchronizer sidecar beside bao agent's templates.
python3 scripts/bench_leased.py
# vault-kubernetes-env beside bank-vaults' vault-env, on this stack.
scripts/bench-env.sh
# Injection by annotation: admission time with and without deploy/injector/, pod to Running (single-node cluster).
scripts/bench-injector.sh
