#!/usr/bin/env bash
# The one-command demo: sets up what it needs, builds the images, starts the
# local stack with its single-node cluster, and plays the three scenarios as
# real pods: the Deployments of demo/manifests, applied by demo/deploy.sh
# with the local profile (demo/local/), and the same programs injected by
# the API server into a Deployment and a Job that carry only annotations
# (deploy/injector/, demo/injected/, demo/injector.sh). Prints the pods like `kubectl get
# pods`, each container's own log lines (from the kubelet's pod log
# directory), and the Secrets (names, annotation, keys and sizes: never
# values). Stops everything it started.
#
#   scripts/demo.sh            (RENEWER_SECONDS=30 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RENEWER_SECONDS=${RENEWER_SECONDS:-30}

scripts/setup.sh
# shellcheck source=scripts/images-storage.sh
source scripts/images-storage.sh
scripts/build-images.sh

export VK_STACK_DIR=$ROOT/target/demo-stack
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh down
t0=$SECONDS
scripts/stack.sh up --cluster
eval "$(scripts/stack.sh env)"
kubectl() { "$VK_BIN/kubectl" --kubeconfig "$VK_KUBECONFIG" "$@"; }
export -f kubectl
banner() { printf '\n=== %s\n' "$*"; }
NAMESPACE=vault-kubernetes-demo

banner "Vault: demo/vault-setup.sh (KV data, policy, Kubernetes auth role with a 20s token TTL; the stack ran demo/vault-setup-leased.sh)"
VAULT_TOKEN=$VK_VAULT_ROOT_TOKEN VAULT_CLI=$VK_BIN/bao KUBERNETES_HOST=$VK_KUBE_ADDR KUBERNETES_CA_CERT=$VK_CA_CERT \
    VAULT_AUTH_MOUNT=kubernetes VAULT_ROLE=vault-kubernetes-demo NAMESPACE=$NAMESPACE SERVICE_ACCOUNT=vault-kubernetes \
    TOKEN_TTL=20s TOKEN_MAX_TTL=1h TOKEN_POLICIES=vk-demo,vk-leased demo/vault-setup.sh >/dev/null

banner "demo/deploy.sh demo/local/profile (the manifests of a real cluster + demo/local/overlay.yaml)"
NAMESPACE=$NAMESPACE KUBECTL=kubectl demo/deploy.sh demo/local/profile

banner "demo/injector.sh demo/local/profile (deploy/injector/ + demo/injected/: a Deployment and a Job that carry only annotations)"
NAMESPACE=$NAMESPACE KUBECTL=kubectl demo/injector.sh demo/local/profile

# Every replica Running with its init containers done, as the Deployments ask.
replicas=$(($(kubectl get deployments -n "$NAMESPACE" -o 'jsonpath={range .items[*]}{.spec.replicas}{"+"}{end}0')))
all_running() {
    kubectl get pods -n "$NAMESPACE" -l '!batch.kubernetes.io/job-name' -o json | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
ok = len(pods) == int(sys.argv[1]) and all(p["status"].get("phase") == "Running" and
    all(c.get("ready") for c in p["status"].get("containerStatuses", [])) for p in pods)
sys.exit(0 if ok else 1)' "$replicas"
}
end=$((SECONDS + 180))
until all_running; do
    ((SECONDS < end)) || { kubectl get pods -n "$NAMESPACE" -o wide >&2; echo "demo: $replicas pods not Running after 180s" >&2; exit 1; }
    sleep 1
done
echo "all demo pods Running $((SECONDS - t0))s after the start of the stack"
kubectl wait -n "$NAMESPACE" --for=condition=complete job/injected-job --timeout=120s >/dev/null ||
    { kubectl get pods -n "$NAMESPACE" -o wide >&2; echo "demo: job injected-job not complete after 120s" >&2; exit 1; }
echo "job injected-job Complete $((SECONDS - t0))s after the start of the stack"

banner "injected by the API server (deploy/injector/): vault-kubernetes.io/status and the containers added"
kubectl get pods -n "$NAMESPACE" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    status = (p["metadata"].get("annotations") or {}).get("vault-kubernetes.io/status")
    if status:
        init = ["%s%s" % (c["name"], " (native sidecar)" if c.get("restartPolicy") == "Always" else "")
                for c in p["spec"].get("initContainers", [])]
        print("%-36s %-9s %s: %s" % (p["metadata"]["name"], p["status"].get("phase"), status, ", ".join(init)))
'

banner "scenario 3 runs: the renewers keep their 20s tokens alive for ${RENEWER_SECONDS}s"
sleep "$RENEWER_SECONDS"

banner "kubectl get pods -n $NAMESPACE"
kubectl get pods -n "$NAMESPACE"

banner "each container's log (kubelet pod log directory $VK_POD_LOGS_DIR)"
for dir in "$VK_POD_LOGS_DIR/${NAMESPACE}"_*; do
    pod=$(basename "$dir" | cut -d_ -f2)
    for log in "$dir"/*/0.log; do
        container=$(basename "$(dirname "$log")")
        [[ -s $log ]] || continue
        # CRI log lines: <time> <stream> <P|F> <message>
        sed -E "s/^[^ ]+ [a-z]+ [PF] /  $pod\/$container: /" "$log"
    done
done

banner "Secrets in namespace $NAMESPACE (values never shown)"
kubectl get secrets -n "$NAMESPACE" -o json | python3 -c '
import base64, json, sys
for s in json.load(sys.stdin)["items"]:
    md = s["metadata"]
    source = (md.get("annotations") or {}).get("vault-secret", "-")
    keys = ", ".join("%s (%d bytes)" % (k, len(base64.b64decode(v))) for k, v in sorted((s.get("data") or {}).items()))
    print("%-22s vault-secret=%-28s %s" % (md["name"], source, keys))
'
banner "scenario 5, leased secrets: the login roles database/creds/app made in PostgreSQL, before and after the pod goes"
pg() {
    PGPASSWORD=$(cat "$VK_POSTGRES_ADMIN_PASSWORD_FILE") "$VK_PG_BIN/psql" -X -h "$VK_POSTGRES_HOST" \
        -p "$VK_POSTGRES_PORT" -U "$VK_POSTGRES_ADMIN" -d postgres -Atc "$1"
}
roles="select count(*) from pg_roles where rolname like 'v-%-app-%'"
echo "while the pod runs: $(pg "$roles") login role(s) (renewed; a new one before the max TTL)"
kubectl delete deployment leased -n "$NAMESPACE" >/dev/null
kubectl wait --for=delete pod -l app=leased -n "$NAMESPACE" --timeout=60s >/dev/null
echo "after the pod is deleted: $(pg "$roles") (its leases revoked on shutdown, VAULT_REVOKE_ON_SHUTDOWN)"

banner "scripts/stack.sh status"
scripts/stack.sh status
banner "demo done in $((SECONDS - t0))s; stopping the stack"
