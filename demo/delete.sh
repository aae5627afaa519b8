#!/usr/bin/env bash
# Removes what deploy.sh created:  demo/delete.sh <namespace>
set -euo pipefail
NAMESPACE=${1:?usage: delete.sh <namespace>}
KUBECTL=${KUBECTL:-kubectl}
$KUBECTL delete clusterrolebinding "$NAMESPACE-auth-delegator" --ignore-not-found
$KUBECTL delete namespace "$NAMESPACE" --ignore-not-found --wait=false
