#!/usr/bin/env bash
# Sets up Vault (or OpenBao) for the demo: KV data, and the policy
# `vk-demo` with exactly what the three programs need. Uses the CLI named by
# $VAULT_CLI (default: bao if found, else vault) with the usual VAULT_ADDR /
# VAULT_TOKEN of an admin. Kubernetes auth mounts and roles are set up by the
# caller, because they need the cluster's address and CA.
#
# Idempotent: re-running rewrites the same data and policy.
set -euo pipefail
CLI=${VAULT_CLI:-$(command -v bao || command -v vault)}

# KV v2 at secret/ (dev servers have it); KV v1 at kv1/.
mounts=$("$CLI" secrets list -format=json)
[[ $mounts == *'"secret/"'* ]] || "$CLI" secrets enable -path=secret -version=2 kv
[[ $mounts == *'"kv1/"'* ]] || "$CLI" secrets enable -path=kv1 -version=1 kv

"$CLI" kv put -mount=secret k8s/first one=1 two=2
"$CLI" kv put -mount=secret k8s/second green=apple poison=base64:YXJzZW5pYw==
for name in alpha beta gamma; do
    "$CLI" kv put -mount=secret "k8s/folder/$name" user="$name" password="pw-$name"
done
"$CLI" kv put -mount=kv1 k8s/first one=1 two=2

# What the synchronizer needs: read the secrets, list the folders. No
# sys/mounts: the KV version comes from sys/internal/ui/mounts, which
# answers for paths the token has capabilities on. Token lookup, renewal
# and revocation of its own token are in Vault's default policy.
"$CLI" policy write vk-demo - <<'POLICY'
path "secret/data/k8s/*" {
  capabilities = ["read"]
}
path "secret/metadata/k8s/*" {
  capabilities = ["list"]
}
path "kv1/k8s/*" {
  capabilities = ["read", "list"]
}
POLICY

# Kubernetes auth, when the cluster is given: KUBERNETES_HOST (API server
# URL as Vault reaches it), KUBERNETES_CA_CERT (file), and from the profile
# VAULT_AUTH_MOUNT, VAULT_ROLE, NAMESPACE, SERVICE_ACCOUNT. TOKEN_POLICIES
# (default vk-demo; add vk-leased after demo/vault-setup-leased.sh). Vault reviews
# each pod's JWT with that JWT itself (the ClusterRoleBinding to
# system:auth-delegator in manifests/00-rbac.yaml).
if [[ -n ${KUBERNETES_HOST:-} ]]; then
    MOUNT=${VAULT_AUTH_MOUNT:-kubernetes}
    auths=$("$CLI" auth list -format=json)
    [[ $auths == *"\"$MOUNT/\""* ]] || "$CLI" auth enable -path="$MOUNT" kubernetes
    "$CLI" write "auth/$MOUNT/config" kubernetes_host="$KUBERNETES_HOST" \
        kubernetes_ca_cert=@"$KUBERNETES_CA_CERT" disable_local_ca_jwt=true
    "$CLI" write "auth/$MOUNT/role/${VAULT_ROLE:?}" \
        bound_service_account_names="${SERVICE_ACCOUNT:?}" bound_service_account_namespaces="${NAMESPACE:?}" \
        token_policies="${TOKEN_POLICIES:-vk-demo}" token_ttl="${TOKEN_TTL:-1h}" token_max_ttl="${TOKEN_MAX_TTL:-24h}"
fi
