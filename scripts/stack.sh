#!/usr/bin/env bash
# The real local stack: etcd, kube-apiserver, an OpenBao dev server and
# PostgreSQL on loopback, bootstrapped with what the binaries need
# (namespace, service account, RBAC, Kubernetes auth, KV mounts, sample
# data, and for leased secrets the database engine against PostgreSQL and a
# PKI mount: demo/vault-setup-leased.sh).
#
#   scripts/stack.sh up       start and bootstrap (runs scripts/setup.sh first)
#   scripts/stack.sh up --cluster
#                             the same plus a single-node cluster (containerd,
#                             controller-manager, scheduler, kubelet) running the
#                             images of scripts/build-images.sh; one per machine
#   scripts/stack.sh down     stop exactly what `up` started (pid files) and remove its state
#   scripts/stack.sh status   what runs where
#   scripts/stack.sh env      the demo pod's environment as `export NAME=value` lines
#
# State and logs: $VK_STACK_DIR (default target/stack in the repository).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${VK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-kubernetes}
BIN=$CACHE/bin
STATE=${VK_STACK_DIR:-$ROOT/target/stack}
NAMESPACE=vk-demo
SERVICE_ACCOUNT=vault-kubernetes
ROLE=demo
K8S_VERSION=1.36.3

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# A port whose successor is free too: OpenBao's dev mode puts its cluster
# listener on the next port.
free_port_pair() {
    python3 - <<'PY'
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 1)); print(port); break
    except OSError:
        pass
    finally:
        a.close(); b.close()
PY
}

# Starts a process in the background, records its pid.
start() { # name logfile cmd...
    local name=$1 logfile=$2
    shift 2
    "$@" >"$logfile" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

# Polls a command until it succeeds or the deadline passes.
wait_for() { # name seconds logfile cmd...
    local name=$1 seconds=$2 logfile=$3
    shift 3
    local end=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
            tail -n 20 "$logfile" >&2 || true
            die "$name exited during start-up; see $logfile"
        fi
        ((SECONDS < end)) || { tail -n 20 "$logfile" >&2 || true; die "$name not ready after ${seconds}s; see $logfile"; }
        sleep 0.2
    done
}

running() { [[ -f $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# PostgreSQL from Debian's package (scripts/setup.sh): the newest major
# version installed.
pg_bin() {
    local d
    d=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n1)
    [[ -n $d && -x $d/postgres ]] || die "PostgreSQL is not installed; run scripts/setup.sh"
    echo "$d"
}

# A cluster of our own under $STATE/postgres, TCP on 127.0.0.1 only (no
# Unix socket), no fsync (nothing here needs to survive). The server refuses
# to run as root: as root, it runs as the package's `postgres` user.
start_postgres() { # port
    local port=$1 bin d=$STATE/postgres as=()
    bin=$(pg_bin)
    mkdir -p "$d"
    # No newline: Vault's CLI reads a password file (@file) byte for byte.
    openssl rand -hex 16 | tr -d '\n' >"$d/admin-password"
    chmod 600 "$d/admin-password"
    if [[ $(id -u) == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "no user postgres to run PostgreSQL as (Debian's package creates it)"
        as=(setpriv --reuid=postgres --regid=postgres --init-groups)
        chown -R postgres: "$d"
        "${as[@]}" test -w "$d" || die "user postgres cannot write $d: every directory above it must be searchable (o+x)"
    fi
    "${as[@]}" "$bin/initdb" -D "$d/data" -U vkadmin --pwfile="$d/admin-password" \
        --auth=scram-sha-256 --no-sync --no-instructions -E UTF8 --locale=C >"$STATE/postgres-initdb.log" 2>&1 ||
        { tail -n 20 "$STATE/postgres-initdb.log" >&2; die "initdb failed; see $STATE/postgres-initdb.log"; }
    log "postgresql on 127.0.0.1:$port ($("$bin/postgres" --version))"
    start postgres "$STATE/postgres.log" "${as[@]}" "$bin/postgres" -D "$d/data" \
        -c listen_addresses=127.0.0.1 -c port="$port" -c unix_socket_directories= \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
        -c shared_buffers=16MB -c max_connections=100 -c log_min_messages=warning
    PG_BIN=$bin
}

make_certs() {
    local d=$STATE/pki
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=vault-kubernetes test CA" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    # One serving certificate for 127.0.0.1 used by kube-apiserver and OpenBao's TLS listeners.
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:vault.test\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 30 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
    # A client certificate for the mTLS listener.
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=vault-kubernetes client" \
        -keyout "$d/client.key" -out "$d/client.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 30 -extfile "$d/client.ext" -out "$d/client.crt" 2>/dev/null
    # Service-account token signing keys.
    openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
    openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
    chmod 600 "$d"/*.key
}

kube() { "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }
# shellcheck source=scripts/cluster.sh
source "$ROOT/scripts/cluster.sh"
bao() { VAULT_ADDR=$VAULT_HTTP VAULT_TOKEN=root "$BIN/bao" "$@"; }

up() {
    local cluster=
    [[ ${1:-} == --cluster ]] && cluster=1
    if running openbao || running kube-apiserver || running etcd || running postgres; then
        die "already running (scripts/stack.sh status); run scripts/stack.sh down first"
    fi
    "$ROOT/scripts/setup.sh"
    local t0=$SECONDS
    # A failed start leaves nothing running behind it.
    trap 'stop_all' ERR EXIT
    rm -rf "$STATE"
    mkdir -p "$STATE"
    if [[ -n $cluster ]]; then
        cluster_lock
        t0=$SECONDS
        cluster_record_host
    fi
    make_certs

    local etcd_port etcd_peer kube_port bao_port bao_tls_port bao_mtls_port pg_port
    etcd_port=$(free_port); etcd_peer=$(free_port); kube_port=$(free_port)
    bao_port=$(free_port_pair); bao_tls_port=$(free_port); bao_mtls_port=$(free_port)
    pg_port=$(free_port)

    # etcd data on tmpfs: nothing here needs to survive, and fsyncs are free.
    local data_root=/dev/shm
    [[ -w $data_root ]] || data_root=$STATE
    local etcd_data
    etcd_data=$(mktemp -d "$data_root/vk-etcd.XXXXXX")
    echo "$etcd_data" >"$STATE/etcd.data"
    log "etcd on 127.0.0.1:$etcd_port"
    start etcd "$STATE/etcd.log" "$BIN/etcd" --name vk --data-dir "$etcd_data" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "vk=http://127.0.0.1:$etcd_peer" --log-level warn --unsafe-no-fsync

    local admin_token
    admin_token=$(openssl rand -hex 24)
    printf '%s,admin,admin-uid,"system:masters"\n' "$admin_token" >"$STATE/pki/tokens.csv"
    local issuer=https://127.0.0.1:$kube_port

    # OpenBao dev server plus two extra listeners from a config file: TLS
    # with our CA, and TLS that requires a client certificate.
    cat >"$STATE/openbao.hcl" <<EOF
listener "tcp" {
  address = "127.0.0.1:$bao_tls_port"
  tls_cert_file = "$STATE/pki/server.crt"
  tls_key_file = "$STATE/pki/server.key"
}
listener "tcp" {
  address = "127.0.0.1:$bao_mtls_port"
  tls_cert_file = "$STATE/pki/server.crt"
  tls_key_file = "$STATE/pki/server.key"
  tls_require_and_verify_client_cert = true
  tls_client_ca_file = "$STATE/pki/ca.crt"
}
# Every request, one JSON line each (secrets HMAC'd): benchmarks count them.
audit "file" "requests" {
  options {
    file_path = "$STATE/openbao-audit.log"
  }
}
EOF
    log "openbao on 127.0.0.1:$bao_port (http), :$bao_tls_port (tls), :$bao_mtls_port (mtls)"
    start openbao "$STATE/openbao.log" env -u VAULT_ADDR -u BAO_ADDR -u VAULT_TOKEN \
        "$BIN/bao" server -dev -dev-root-token-id=root -dev-no-store-token \
        -dev-listen-address="127.0.0.1:$bao_port" \
        -config="$STATE/openbao.hcl"

    start_postgres "$pg_port"

    wait_for etcd 30 "$STATE/etcd.log" curl -sf "http://127.0.0.1:$etcd_port/health"
    # Pods need the ServiceAccount admission plugin (their projected token
    # volume); host processes get their token from `kubectl create token`.
    local admission=(--disable-admission-plugins ServiceAccount)
    [[ -n $cluster ]] && admission=(--enable-admission-plugins ServiceAccount)
    log "kube-apiserver on 127.0.0.1:$kube_port"
    start kube-apiserver "$STATE/kube-apiserver.log" "$BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$kube_port" \
        --tls-cert-file "$STATE/pki/server.crt" --tls-private-key-file "$STATE/pki/server.key" \
        --client-ca-file "$STATE/pki/ca.crt" --token-auth-file "$STATE/pki/tokens.csv" \
        --authorization-mode RBAC \
        --service-account-issuer "$issuer" --api-audiences "$issuer" \
        --service-account-key-file "$STATE/pki/sa.pub" --service-account-signing-key-file "$STATE/pki/sa.key" \
        --service-cluster-ip-range 10.0.0.0/24 \
        "${admission[@]}" \
        --enable-priority-and-fairness=false \
        --audit-log-path "$STATE/audit.log" --audit-policy-file "$ROOT/scripts/audit-policy.yaml" \
        --audit-log-maxsize 0 --audit-log-mode batch --audit-log-batch-max-wait 1s

    cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$kube_port", certificate-authority: "$STATE/pki/ca.crt"}
users:
- name: admin
  user: {token: "$admin_token"}
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF
    chmod 600 "$STATE/kubeconfig"

    VAULT_HTTP=http://127.0.0.1:$bao_port
    [[ -n $cluster ]] && cluster_start_containerd
    wait_for openbao 60 "$STATE/openbao.log" curl -sf "$VAULT_HTTP/v1/sys/health"
    wait_for kube-apiserver 120 "$STATE/kube-apiserver.log" \
        curl -sf --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$kube_port/readyz"
    log "servers ready after $((SECONDS - t0))s; bootstrapping"

    # Kubernetes: the demo pod's namespace, service account and RBAC.
    kube apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $NAMESPACE}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: $SERVICE_ACCOUNT, namespace: $NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: $SERVICE_ACCOUNT, namespace: $NAMESPACE}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, create, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: $SERVICE_ACCOUNT, namespace: $NAMESPACE}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: $SERVICE_ACCOUNT}
subjects:
- {kind: ServiceAccount, name: $SERVICE_ACCOUNT, namespace: $NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: vk-demo-auth-delegator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects:
- {kind: ServiceAccount, name: $SERVICE_ACCOUNT, namespace: $NAMESPACE}
EOF

    # A pod-like service-account directory.
    local sa_dir=$STATE/serviceaccount
    mkdir -p "$sa_dir"
    kube create token "$SERVICE_ACCOUNT" -n "$NAMESPACE" --audience "$issuer" --duration 24h >"$sa_dir/token"
    cp "$STATE/pki/ca.crt" "$sa_dir/ca.crt"
    printf '%s' "$NAMESPACE" >"$sa_dir/namespace"

    # OpenBao: Kubernetes auth at two mounts, KV v2 and v1, policy, role, data.
    local ca_pem
    ca_pem=$(cat "$STATE/pki/ca.crt")
    for mount in kubernetes k8s; do
        bao auth enable -path="$mount" kubernetes >/dev/null
        bao write "auth/$mount/config" kubernetes_host="https://127.0.0.1:$kube_port" \
            kubernetes_ca_cert="$ca_pem" disable_local_ca_jwt=true >/dev/null
    done
    bao auth enable approle >/dev/null
    VAULT_ADDR=$VAULT_HTTP VAULT_TOKEN=root VAULT_CLI=$BIN/bao "$ROOT/demo/vault-setup.sh" >/dev/null
    # Leased secrets: database engine against our PostgreSQL, PKI mount.
    wait_for postgres 30 "$STATE/postgres.log" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port"
    VAULT_ADDR=$VAULT_HTTP VAULT_TOKEN=root VAULT_CLI=$BIN/bao POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$pg_port \
        POSTGRES_USER=vkadmin POSTGRES_PASSWORD_FILE=$STATE/postgres/admin-password DB_ALLOWED_ROLES='*' \
        "$ROOT/demo/vault-setup-leased.sh" >/dev/null
    for mount in kubernetes k8s; do
        bao write "auth/$mount/role/$ROLE" bound_service_account_names="$SERVICE_ACCOUNT" \
            bound_service_account_namespaces="$NAMESPACE" token_policies=vk-demo,vk-leased \
            token_ttl=1h token_max_ttl=24h >/dev/null
    done
    # AppRole with the same policy, so AppRole logins can be tried as the
    # Kubernetes ones (the secret id is as much a test credential as the
    # root token beside it in the env file).
    bao write "auth/approle/role/$ROLE" token_policies=vk-demo token_ttl=1h token_max_ttl=24h >/dev/null
    local approle_role_id approle_secret_id
    approle_role_id=$(bao read -field=role_id "auth/approle/role/$ROLE/role-id")
    approle_secret_id=$(bao write -f -field=secret_id "auth/approle/role/$ROLE/secret-id")

    [[ -n $cluster ]] && cluster_start_kube "$t0"

    cat >"$STATE/env" <<EOF
# The demo pod's environment (scripts/stack.sh env).
export VAULT_ADDR=$VAULT_HTTP
export VAULT_ROLE=$ROLE
export SERVICE_ACCOUNT_TOKEN_PATH=$sa_dir/token
export KUBERNETES_SERVICE_HOST=127.0.0.1
export KUBERNETES_SERVICE_PORT=$kube_port
export KUBERNETES_SERVICEACCOUNT_DIR=$sa_dir
# Admin access and extras for tests, the demo and benchmarks.
export VK_STACK_DIR=$STATE
export VK_BIN=$BIN
export VK_NAMESPACE=$NAMESPACE
export VK_SERVICE_ACCOUNT=$SERVICE_ACCOUNT
export VK_VAULT_ROOT_TOKEN=root
export VK_APPROLE_ROLE_ID=$approle_role_id
export VK_APPROLE_SECRET_ID=$approle_secret_id
export VK_VAULT_TLS_ADDR=https://127.0.0.1:$bao_tls_port
export VK_VAULT_MTLS_ADDR=https://127.0.0.1:$bao_mtls_port
export VK_CA_CERT=$STATE/pki/ca.crt
export VK_CLIENT_CERT=$STATE/pki/client.crt
export VK_CLIENT_KEY=$STATE/pki/client.key
export VK_KUBE_ADDR=https://127.0.0.1:$kube_port
export VK_KUBE_ADMIN_TOKEN=$admin_token
export VK_KUBE_AUDIENCE=$issuer
export VK_KUBECONFIG=$STATE/kubeconfig
export VK_VAULT_AUDIT_LOG=$STATE/openbao-audit.log
export VK_KUBE_AUDIT_LOG=$STATE/audit.log
# PostgreSQL behind the database secrets engine (database/creds/app,
# pki/issue/app, policy vk-leased: demo/vault-setup-leased.sh).
export VK_POSTGRES_HOST=127.0.0.1
export VK_POSTGRES_PORT=$pg_port
export VK_POSTGRES_ADMIN=vkadmin
export VK_POSTGRES_ADMIN_PASSWORD_FILE=$STATE/postgres/admin-password
export VK_PG_BIN=$PG_BIN
EOF
    if [[ -n $cluster ]]; then
        cat >>"$STATE/env" <<EOF
# The single-node cluster (scripts/stack.sh up --cluster).
export VK_CLUSTER=1
export VK_NODE=$NODE
export VK_POD_LOGS_DIR=$STATE/pod-logs
export VK_CONTAINERD_ADDRESS=$CTR_SOCK
export VK_SA_PUBLIC_KEY=$STATE/pki/sa.pub
export VK_PAUSE_IMAGE=$PAUSE_IMAGE
export VK_SHELL_IMAGE=$SHELL_IMAGE
# psql, openssl and a shell: the leased-secrets demo's app (scripts/setup.sh).
export VK_TOOLS_IMAGE=$TOOLS_IMAGE
EOF
    fi
    trap - ERR EXIT
    # The exact line for this stack: VK_STACK_DIR may differ from the
    # default (test.sh and demo.sh use their own), and `env` reads it.
    log "up in $((SECONDS - t0))s; for the demo pod's environment:"
    printf 'eval "$(VK_STACK_DIR=%q %q/scripts/stack.sh env)"\n' "$STATE" "$ROOT" >&2
}

stop_process() { # name [signal]
    local name=$1 signal=${2:-TERM} pid
    [[ -f $STATE/$name.pid ]] || return 0
    pid=$(cat "$STATE/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -s "$signal" "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped $name (pid $pid)"
    fi
    rm -f "$STATE/$name.pid"
}

# Clients before servers: an API server with watches connected exits slowly.
stop_all() {
    local name
    for name in kubelet kube-scheduler kube-controller-manager; do stop_process "$name"; done
    cluster_stop_containers
    for name in containerd openbao kube-apiserver etcd; do stop_process "$name"; done
    # After OpenBao (its connections): SIGINT is PostgreSQL's fast shutdown,
    # which does not wait for clients to disconnect as SIGTERM does.
    stop_process postgres INT
    cluster_cleanup_host
    stop_process cluster-lock
}

down() {
    stop_all
    if [[ -f $STATE/etcd.data ]]; then
        rm -rf "$(cat "$STATE/etcd.data")"
    fi
    rm -rf "$STATE"
}

# Resident memory of what up started: its processes and their children,
# with the pods' shims and containers in cluster mode.
memory() {
    local f roots=()
    for f in "$STATE"/*.pid; do roots+=("$(cat "$f")"); done
    # The pods' shims outlive nothing of ours but are reparented: found by
    # the address of this stack's containerd on their command line.
    if [[ -S $CTR_SOCK ]]; then
        local c
        for f in /proc/[0-9]*/cmdline; do
            { c=$(tr '\0' ' ' <"$f"); } 2>/dev/null || continue
            [[ $c == *"-address $CTR_SOCK "* ]] && roots+=("$(basename "$(dirname "$f")")")
        done
    fi
    ps -e -o pid=,ppid=,rss= | python3 -c '
import sys
procs = [tuple(map(int, l.split())) for l in sys.stdin if l.strip()]
todo, seen = [int(p) for p in sys.argv[1:]], set()
while todo:
    p = todo.pop()
    if p not in seen:
        seen.add(p)
        todo += [c for c, pp, _ in procs if pp == p]
rss = sum(r for p, _, r in procs if p in seen)
print("memory: %d MiB resident in %d processes" % (rss // 1024, len(seen & {p for p, _, _ in procs})))
' "${roots[@]}" || true
}

status() {
    local name
    for name in etcd kube-apiserver openbao postgres containerd kube-controller-manager kube-scheduler kubelet; do
        [[ -f $STATE/$name.pid ]] || [[ $name == etcd || $name == kube-apiserver || $name == openbao || $name == postgres ]] || continue
        if running "$name"; then
            echo "$name: running (pid $(cat "$STATE/$name.pid"))"
        else
            echo "$name: stopped"
        fi
    done
    memory
    if [[ -f $STATE/env ]]; then
        grep -E '^export (VAULT_ADDR|VK_VAULT_TLS_ADDR|VK_VAULT_MTLS_ADDR|VK_KUBE_ADDR)=' "$STATE/env" | sed 's/^export //'
    fi
}

case ${1:-} in
    up) up "${2:-}" ;;
    down) down ;;
    status) status ;;
    env) [[ -f $STATE/env ]] || die "stack not up (run scripts/stack.sh up)"; grep '^export ' "$STATE/env" ;;
    *) echo "usage: $0 up [--cluster]|down|status|env" >&2; exit 2 ;;
esac
