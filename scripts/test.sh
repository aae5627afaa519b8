#!/usr/bin/env bash
# The test command: installs what is missing, brings the real stack up,
# checks formatting and lints, runs every test against the stack, and
# always brings the stack down again.
#
#   scripts/test.sh [cargo test arguments]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

# A stack of its own, so a developer's running stack is left alone.
export VK_STACK_DIR=$ROOT/target/test-stack
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh down
scripts/stack.sh up
# The programs' log lines are collected under target/tmp/vk-logs (see
# tests/support) and scanned for secrets once every other test has run.
rm -rf "$ROOT/target/tmp/vk-logs"
# Most tests wait on servers and timers, not on the CPU.
RUST_TEST_THREADS=${RUST_TEST_THREADS:-8} cargo test --locked "$@"
cargo test --locked --test log_scan -- --ignored --nocapture
