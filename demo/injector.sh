#!/usr/bin/env bash
# Installs the injector (deploy/injector/) with the values of a profile,
# waits until the API server injects, then applies the annotation-only
# workloads of demo/injected/ (after demo/deploy.sh, which makes their
# namespace, service account and RBAC):
#   demo/injector.sh demo/profile
# KUBECTL may name the kubectl command (default: kubectl). The profile's
# VAULT_ADDR, IMAGE_PREFIX and IMAGE_TAG go into the injector's ConfigMap,
# and, when set, IMAGE_PULL_POLICY and KUBERNETES_SERVICE_HOST/PORT (the
# local cluster's differences). Needs PyYAML.
set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
INJECTOR=$DIR/../deploy/injector
PROFILE=${1:?usage: injector.sh <profile>}
KUBECTL=${KUBECTL:-kubectl}
set -a
# shellcheck disable=SC1090
source "$PROFILE"
set +a
apply() { $KUBECTL apply --server-side --force-conflicts --field-manager=vault-kubernetes-demo "$@" >/dev/null; }
apply -f "$INJECTOR/00-namespace.yaml" -f "$INJECTOR/20-mutating-policy.yaml" -f "$INJECTOR/30-validating-policy.yaml"
python3 - "$INJECTOR/10-configmap.yaml" <<'PY' | apply -f -
import os, sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
env, data = os.environ, cm["data"]
data["vaultAddr"] = env["VAULT_ADDR"]
for key, program in [("authenticatorImage", "authenticator"), ("tokenRenewerImage", "token-renewer"),
                     ("synchronizerImage", "synchronizer"), ("envImage", "env")]:
    data[key] = f"{env['IMAGE_PREFIX']}{program}:{env['IMAGE_TAG']}"
for key, var in [("imagePullPolicy", "IMAGE_PULL_POLICY"), ("kubernetesServiceHost", "KUBERNETES_SERVICE_HOST"),
                 ("kubernetesServicePort", "KUBERNETES_SERVICE_PORT")]:
    if env.get(var):
        data[key] = env[var]
yaml.safe_dump(cm, sys.stdout, sort_keys=False)
PY
# The API server loads new policies and parameters within seconds: a
# Deployment created earlier would have its first pod refused.
probe='{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "injector-probe", "namespace": "'$NAMESPACE'",
  "annotations": {"vault-kubernetes.io/role": "probe"}}, "spec": {
  "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
  "containers": [{"name": "c", "image": "x", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}'
for _ in $(seq 60); do
    status=$(echo "$probe" | $KUBECTL create --dry-run=server -o 'jsonpath={.metadata.annotations.vault-kubernetes\.io/status}' -f - 2>/dev/null || true)
    [[ $status == injected ]] && break
    sleep 0.5
done
[[ $status == injected ]] || { echo "injector.sh: the API server does not inject after 30s" >&2; exit 1; }
MANIFESTS=$DIR/injected "$DIR/deploy.sh" "$PROFILE"
