#!/usr/bin/env bash
# The injector's row of scripts/bench.sh (scripts/bench_injector.py): API-
# server admission time per pod with and without deploy/injector/, and pod
# creation to Running injected against hand-written, on a single-node
# cluster of its own (one per machine: waits for the machine's lock), always
# brought down again. About 2 minutes; BENCH_FLEET=smoke: about 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# The images bench.sh built (buildah's storage, as bench.sh uses it).
export VK_STACK_DIR=$ROOT/target/bench-cluster
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh down
scripts/stack.sh up --cluster 2>/dev/null
python3 scripts/bench_injector.py
