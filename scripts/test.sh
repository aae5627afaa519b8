#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and lints,
# builds the images, then runs the tests in two stages, each on a stack of
# its own that is always brought down again:
#   1. every test that needs no pod, on the fast host-process stack (runs in
#      parallel with other clones' test runs on the same machine);
#   2. tests/pods*.rs on the single-node cluster (`stack.sh up --cluster`,
#      one per machine: waits for another clone's cluster to finish).
#
#   scripts/test.sh [cargo test arguments]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

scripts/setup.sh
# shellcheck source=scripts/images-storage.sh
source scripts/images-storage.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# No import cycle, no module importing one above it (layers listed in the script).
python3 scripts/check-modules.py
scripts/build-images.sh

host_tests=()
for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    [[ $name == pods* ]] || host_tests+=(--test "$name")
done

# Stacks of their own, so a developer's running stack is left alone.
export VK_STACK_DIR=$ROOT/target/test-stack
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh down
scripts/stack.sh up
# The programs' log lines are collected under target/tmp/vk-logs (see
# tests/support) and scanned for secrets once every other test has run.
rm -rf "$ROOT/target/tmp/vk-logs"
# Most tests wait on servers and timers, not on the CPU.
RUST_TEST_THREADS=${RUST_TEST_THREADS:-8} cargo test --locked --lib --bins "${host_tests[@]}" "$@"
scripts/stack.sh down

export VK_STACK_DIR=$ROOT/target/test-cluster
scripts/stack.sh down
scripts/stack.sh up --cluster
# Every tests/pods*.rs file runs on the cluster: one file per feature, so
# work streams add pod tests without editing one shared file.
cluster_tests=()
for f in tests/pods*.rs; do cluster_tests+=(--test "$(basename "$f" .rs)"); done
RUST_TEST_THREADS=${RUST_TEST_THREADS:-8} cargo test --locked "${cluster_tests[@]}" "$@"
# Last: the log lines of both stages, scanned for secrets.
cargo test --locked --test log_scan -- --ignored --nocapture
