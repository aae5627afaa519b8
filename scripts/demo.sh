#!/usr/bin/env bash
# The one-command demo: sets up what it needs, starts the real local stack,
# and plays the three scenarios the way a pod would: init containers in
# order, then the token renewer as a sidecar on a short-TTL role. Prints
# the binaries' own log lines and the resulting Secrets (names, annotation,
# keys and sizes: never values). Stops what it started.
#
#   scripts/demo.sh            (RENEWER_SECONDS=35 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RENEWER_SECONDS=${RENEWER_SECONDS:-35}

scripts/setup.sh
cargo build --release --locked -q
BIN=$ROOT/target/release

export VK_STACK_DIR=$ROOT/target/demo-stack
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh down
scripts/stack.sh up
eval "$(scripts/stack.sh env)"
kubectl() { "$VK_BIN/kubectl" --kubeconfig "$VK_KUBECONFIG" "$@"; }
VAULT_TOKEN=$VK_VAULT_ROOT_TOKEN "$VK_BIN/bao" write auth/kubernetes/role/demo-short \
    bound_service_account_names="$VK_SERVICE_ACCOUNT" bound_service_account_namespaces="$VK_NAMESPACE" \
    token_policies=vk-demo token_ttl=10s token_max_ttl=25s >/dev/null

# The pod's shared in-memory volume.
TOKENS=$(mktemp -d)
export VAULT_TOKEN_PATH=$TOKENS/token
banner() { printf '\n=== %s\n' "$*"; }

banner "scenario 1: init container vault-kubernetes-authenticator"
"$BIN/vault-kubernetes-authenticator"
stat -c 'token file %n: mode %a, %s bytes' "$VAULT_TOKEN_PATH"

banner "scenario 2: authenticator (ALLOW_FAIL=true) then vault-kubernetes-synchronizer"
export VAULT_SECRETS="secret/k8s/first, secret/data/k8s/second:second-renamed, secret/k8s/folder/, kv1/k8s/first:v1-first"
export SECRET_PREFIX=demo- SYNCHRONIZER_LABELS=app=demo
ALLOW_FAIL=true "$BIN/vault-kubernetes-authenticator"
"$BIN/vault-kubernetes-synchronizer"
echo "--- second start of the pod: nothing to write"
"$BIN/vault-kubernetes-synchronizer"
echo "--- Secrets in namespace $VK_NAMESPACE"
kubectl get secrets -n "$VK_NAMESPACE" -o json | python3 -c '
import base64, json, sys
for s in json.load(sys.stdin)["items"]:
    md = s["metadata"]
    source = (md.get("annotations") or {}).get("vault-secret", "-")
    keys = ", ".join("%s (%d bytes)" % (k, len(base64.b64decode(v))) for k, v in sorted((s.get("data") or {}).items()))
    print("%-22s vault-secret=%-28s %s" % (md["name"], source, keys))
'

banner "scenario 3: authenticator then vault-kubernetes-token-renewer as a sidecar (ttl 10s, max 25s, ${RENEWER_SECONDS}s)"
export VAULT_ROLE=demo-short
"$BIN/vault-kubernetes-authenticator"
VAULT_REAUTH=true VAULT_REVOKE_ON_SHUTDOWN=true "$BIN/vault-kubernetes-token-renewer" &
RENEWER=$!
sleep "$RENEWER_SECONDS"
kill -TERM "$RENEWER"
wait "$RENEWER"
echo "--- renewer exited with $?"
rm -rf "$TOKENS"
banner "demo done"
