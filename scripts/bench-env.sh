#!/usr/bin/env bash
# vault-kubernetes-env beside bank-vaults' vault-env on the same secrets
# (scripts/bench_env.py). scripts/bench.sh calls it on its running stack;
# alone, it builds what it needs and runs a stack of its own:
#   scripts/bench-env.sh                 (BENCH_RUNS=1 for a quick look)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/setup.sh vault-env
if [[ ! -f ${VK_STACK_DIR:-/nonexistent}/env ]]; then
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin vault-kubernetes-env
    export VK_STACK_DIR=$ROOT/target/bench-env-stack
    trap 'scripts/stack.sh down' EXIT
    scripts/stack.sh down
    scripts/stack.sh up 2>/dev/null
fi
python3 scripts/bench_env.py
