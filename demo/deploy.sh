#!/usr/bin/env bash
# Applies the demo manifests with the values of a profile:
#   demo/deploy.sh demo/profile
# KUBECTL may name the kubectl command (default: kubectl).
set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
PROFILE=${1:?usage: deploy.sh <profile>}
KUBECTL=${KUBECTL:-kubectl}
set -a
# shellcheck disable=SC1090
source "$PROFILE"
set +a
for f in "$DIR"/manifests/*.yaml; do
    # ${VAR} placeholders only; fails on a placeholder the profile lacks.
    python3 - "$f" <<'PY' | $KUBECTL apply --server-side --field-manager=vault-kubernetes-demo -f -
import os, re, sys
text = open(sys.argv[1]).read()
def sub(m):
    name = m.group(1)
    if name not in os.environ:
        sys.exit(f"{sys.argv[1]}: ${{{name}}} not set by the profile")
    return os.environ[name]
sys.stdout.write(re.sub(r"\$\{([A-Z_]+)\}", sub, text))
PY
done
