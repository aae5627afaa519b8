#!/usr/bin/env bash
# Sets up Vault (or OpenBao) for leased secrets: the `database` engine
# against a PostgreSQL server, a `pki` mount with a root CA, a role `app` in
# each, and the policy `vk-leased` with exactly what the synchronizer needs
# for them. Uses the CLI named by $VAULT_CLI (default: bao if found, else
# vault) with the usual VAULT_ADDR / VAULT_TOKEN of an admin.
#
#   POSTGRES_HOST, POSTGRES_PORT      where Vault reaches PostgreSQL (required)
#   POSTGRES_USER                     a role that may CREATE ROLE (required)
#   POSTGRES_PASSWORD_FILE            its password (required; never on a command line)
#   POSTGRES_DATABASE                 default postgres
#   DB_DEFAULT_TTL, DB_MAX_TTL        the credentials' lease (default 20s and 1m:
#                                     short, so tests and the demo see renewals
#                                     and new credentials within a minute)
#   PKI_MAX_TTL                       the longest certificate the role issues (default 24h)
#   DB_ALLOWED_ROLES                  database roles that may use the connection (default
#                                     app; the stack's tests add roles of their own: *)
#
# Idempotent: re-running rewrites the same configuration, policy and roles
# (the root CA is generated once).
set -euo pipefail
CLI=${VAULT_CLI:-$(command -v bao || command -v vault)}
: "${POSTGRES_HOST:?}" "${POSTGRES_PORT:?}" "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD_FILE:?}"

mounts=$("$CLI" secrets list -format=json)
[[ $mounts == *'"database/"'* ]] || "$CLI" secrets enable database >/dev/null
[[ $mounts == *'"pki/"'* ]] || "$CLI" secrets enable pki >/dev/null

# The connection: the password goes in as a file argument, the URL carries
# only the template Vault fills in. No TLS: the server listens on loopback.
"$CLI" write database/config/postgres plugin_name=postgresql-database-plugin \
    connection_url="postgresql://{{username}}:{{password}}@$POSTGRES_HOST:$POSTGRES_PORT/${POSTGRES_DATABASE:-postgres}?sslmode=disable" \
    username="$POSTGRES_USER" password=@"$POSTGRES_PASSWORD_FILE" \
    password_authentication=scram-sha-256 allowed_roles="${DB_ALLOWED_ROLES:-app}" >/dev/null
# A login role that expires with its lease (VALID UNTIL follows renewals);
# revocation drops it (the plugin's default revocation statements).
"$CLI" write database/roles/app db_name=postgres \
    creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';" \
    default_ttl="${DB_DEFAULT_TTL:-20s}" max_ttl="${DB_MAX_TTL:-1m}" >/dev/null

# PKI: the mount's own maximum is 30 days; a root for 10 years, issuing
# certificates for the demo's names. generate_lease: each certificate gets a
# lease, so revoking the lease (on the pod's shutdown) revokes the
# certificate; OpenBao warns about it for mounts issuing very many.
"$CLI" secrets tune -max-lease-ttl=87600h pki >/dev/null
# (OpenBao warns that no AIA URLs are configured: shown only on failure.)
if ! "$CLI" read pki/cert/ca >/dev/null 2>&1; then
    out=$("$CLI" write pki/root/generate/internal common_name="vault-kubernetes demo root CA" \
        key_type=ec ttl=87600h 2>&1) || { echo "$out" >&2; exit 1; }
fi
# (That warning is printed on every write: shown only on failure.)
out=$("$CLI" write pki/roles/app allowed_domains=vk.test,svc,cluster.local allow_subdomains=true \
    allow_bare_domains=true allow_localhost=true allow_ip_sans=true key_type=ec \
    ttl=1h max_ttl="${PKI_MAX_TTL:-24h}" generate_lease=true 2>&1) || { echo "$out" >&2; exit 1; }

# What the synchronizer needs: mint (database creds are a read, a
# certificate an update), renew and revoke its leases. The default policy
# has sys/leases/renew (and lookup) already, but not revoke; renew is
# listed too so that the policy says it all.
"$CLI" policy write vk-leased - >/dev/null <<'POLICY'
path "database/creds/app" {
  capabilities = ["read"]
}
path "pki/issue/app" {
  capabilities = ["update"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}
POLICY
