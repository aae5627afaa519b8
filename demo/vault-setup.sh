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
