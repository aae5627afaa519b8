#!/usr/bin/env bash
# Applies the demo manifests with the values of a profile:
#   demo/deploy.sh demo/profile
# KUBECTL may name the kubectl command (default: kubectl). A profile may set
# OVERLAY to a file of local differences (demo/local/overlay.yaml): labels
# for the Namespace, fields for every pod spec, fields and extra env for
# every container. Applying an overlay needs PyYAML. MANIFESTS may name
# another folder of manifests (default: demo/manifests).
set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
PROFILE=${1:?usage: deploy.sh <profile>}
KUBECTL=${KUBECTL:-kubectl}
set -a
# shellcheck disable=SC1090
source "$PROFILE"
set +a
for f in "${MANIFESTS:-$DIR/manifests}"/*.yaml; do
    # ${VAR} placeholders only; fails on a placeholder the profile lacks.
    python3 - "$f" "${OVERLAY:-}" <<'PY' | $KUBECTL apply --server-side --field-manager=vault-kubernetes-demo -f -
import os, re, sys
def subst(path):
    def sub(m):
        name = m.group(1)
        if name not in os.environ:
            sys.exit(f"{path}: ${{{name}}} not set by the profile")
        return os.environ[name]
    return re.sub(r"\$\{([A-Z_]+)\}", sub, open(path).read())
text = subst(sys.argv[1])
if not sys.argv[2]:
    sys.stdout.write(text)
    sys.exit()
import yaml
overlay = yaml.safe_load(subst(sys.argv[2]))
docs = [d for d in yaml.safe_load_all(text) if d]
for doc in docs:
    if doc["kind"] == "Namespace":
        doc["metadata"].setdefault("labels", {}).update(overlay.get("namespaceLabels", {}))
    spec = doc.get("spec", {})
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
    pod = template["spec"] if template else (spec if doc["kind"] == "Pod" else None)
    if pod is None:
        continue
    pod.update(overlay.get("podSpec", {}))
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        extra = dict(overlay.get("container", {}))
        env = extra.pop("env", [])
        c.update(extra)
        c["env"] = [e for e in c.get("env", []) if e["name"] not in {x["name"] for x in env}] + env
yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
PY
done
