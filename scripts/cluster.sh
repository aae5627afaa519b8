# The single-node cluster part of scripts/stack.sh (sourced by it, never
# run alone): containerd, kube-controller-manager, kube-scheduler and the
# kubelet next to the stack's etcd, kube-apiserver and OpenBao.
#
# One cluster per machine: the kubelet and containerd use fixed host paths
# (/run/containerd/s, /var/lib/kubelet/device-plugins, /var/log/containers,
# /var/lib/cni), the kubepods cgroups and host sysctls. `up --cluster`
# takes a machine-wide lock for the cluster's whole life (a holder process
# started by up, stopped last by down); a second `up --cluster` waits for it.
# shellcheck shell=bash

CLUSTER_LOCK=${VK_CLUSTER_LOCK:-/run/lock/vault-kubernetes-cluster.lock}
CLUSTER_LOCK_WAIT=${VK_CLUSTER_LOCK_WAIT:-1800}
NODE=vk-node
# Host paths the kubelet and containerd use whatever their configuration;
# down removes those that up found missing.
HOST_PATHS=(/run/containerd /var/lib/kubelet /var/log/containers /var/lib/cni /var/log/pods)
# What the kubelet sets at start (protectKernelDefaults: false); down restores them.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
CTR_SOCK=$STATE/containerd.sock

ctr_() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

# Waits up to CLUSTER_LOCK_WAIT seconds for the machine's cluster lock, then
# leaves a holder process with the lock open: it lives until down.
cluster_lock() {
    mkdir -p "$(dirname "$CLUSTER_LOCK")"
    exec 8>>"$CLUSTER_LOCK"
    if ! flock -n 8; then
        log "another single-node cluster runs on this machine ($(cat "$CLUSTER_LOCK.owner" 2>/dev/null || echo unknown)); waiting up to ${CLUSTER_LOCK_WAIT}s (VK_CLUSTER_LOCK_WAIT)"
        flock -w "$CLUSTER_LOCK_WAIT" 8 ||
            die "the machine's cluster lock $CLUSTER_LOCK is still held after ${CLUSTER_LOCK_WAIT}s by $(cat "$CLUSTER_LOCK.owner" 2>/dev/null || echo unknown)"
    fi
    echo "$STATE (pid $$, since $(date -u +%H:%M:%SZ))" >"$CLUSTER_LOCK.owner"
    sleep infinity >/dev/null 2>&1 &
    echo $! >"$STATE/cluster-lock.pid"
    exec 8>&-
}

client_cert() { # name subject
    local d=$STATE/pki
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" \
        -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 30 -extfile "$d/client.ext" -out "$d/$1.crt" 2>/dev/null
    chmod 600 "$d/$1.key"
    cat >"$STATE/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$kube_port", certificate-authority: "$d/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$d/$1.crt", client-key: "$d/$1.key"}
contexts:
- name: local
  context: {cluster: local, user: $1}
current-context: local
EOF
}

# Before anything touches the host: what exists already, and the sysctls.
cluster_record_host() {
    local p c s
    for p in "${HOST_PATHS[@]}"; do [[ -e $p ]] || echo "$p"; done >"$STATE/host-paths.created"
    for c in /sys/fs/cgroup/*/; do [[ -e ${c}kubepods ]] || echo "${c}kubepods"; done >"$STATE/cgroups.created"
    for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$STATE/sysctl.saved"
}

# containerd with its state in $STATE, and the images pods use: pause and
# busybox from the cache, the project's three from buildah's storage.
cluster_start_containerd() {
    local d=$STATE/containerd
    mkdir -p "$d" "$STATE/cni" "$STATE/images"
    # containerd reports the pod network ready only with a CNI configuration:
    # an isolated bridge (no gateway, no masquerade, no host address). The
    # project's pods use hostNetwork; nothing here routes off the machine.
    cat >"$STATE/cni/10-vk.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "vk-isolated", "plugins": [{"type": "bridge", "bridge": "vk-cni0",
  "isGateway": false, "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "dataDir": "$STATE/cni/ipam"}}]}
EOF
    cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/vk-pause:$K8S_VERSION"
  # This VM's root lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj
  # to the sandbox's -998, and every sandbox fails without this.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni"
EOF
    log "containerd at $CTR_SOCK"
    start containerd "$STATE/containerd.log" containerd --config "$d/config.toml"
    wait_for containerd 30 "$STATE/containerd.log" ctr_ version
    local version img
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
    for img in authenticator synchronizer token-renewer env; do
        local name=localhost/vault-kubernetes-$img:$version
        buildah --storage-driver vfs push --quiet "$name" "oci-archive:$STATE/images/$img.tar:$name" >/dev/null 2>&1 ||
            die "image $name not in buildah's storage: run scripts/build-images.sh first"
    done
    for img in "$CACHE/images/pause.tar" "$CACHE/images/busybox.tar" "$CACHE/images/tools.tar" "$STATE"/images/*.tar; do
        ctr_ images import "$img" >/dev/null
    done
    rm -rf "$STATE/images"
    PAUSE_IMAGE=localhost/vk-pause:$K8S_VERSION
    SHELL_IMAGE=$(readlink "$CACHE/images/busybox.tar")
    SHELL_IMAGE=${SHELL_IMAGE##*/busybox-}
    SHELL_IMAGE=localhost/vk-busybox:${SHELL_IMAGE%.tar}
    TOOLS_IMAGE=$(readlink "$CACHE/images/tools.tar")
    TOOLS_IMAGE=${TOOLS_IMAGE##*/tools-}
    TOOLS_IMAGE=localhost/vk-tools:${TOOLS_IMAGE%.tar}
}

# After the API server is up and bootstrapped: controllers, scheduler,
# kubelet, and a wait for the node to be Ready.
cluster_start_kube() {
    local t0=$1
    client_cert kube-controller-manager "/CN=system:kube-controller-manager"
    client_cert kube-scheduler "/CN=system:kube-scheduler"
    client_cert kubelet "/O=system:nodes/CN=system:node:$NODE"
    # RBAC only (no Node authorizer): the kubelet's group gets system:node.
    kube create clusterrolebinding vk-nodes --clusterrole system:node --group system:nodes >/dev/null
    local kcm_port sched_port kubelet_port kubelet_healthz
    kcm_port=$(free_port); sched_port=$(free_port); kubelet_port=$(free_port); kubelet_healthz=$(free_port)
    local tls=(--tls-cert-file "$STATE/pki/server.crt" --tls-private-key-file "$STATE/pki/server.key")
    start kube-controller-manager "$STATE/kube-controller-manager.log" "$BIN/kube-controller-manager" \
        --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$kcm_port" "${tls[@]}" --leader-elect=false \
        --use-service-account-credentials --service-account-private-key-file "$STATE/pki/sa.key" \
        --root-ca-file "$STATE/pki/ca.crt"
    start kube-scheduler "$STATE/kube-scheduler.log" "$BIN/kube-scheduler" \
        --kubeconfig "$STATE/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$sched_port" "${tls[@]}" --leader-elect=false

    mkdir -p "$STATE/kubelet" "$STATE/pod-logs"
    cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 only and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTR_SOCK
address: 127.0.0.1
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$STATE/pki/ca.crt"}
authorization: {mode: AlwaysAllow}
podLogsDir: "$STATE/pod-logs"
# No DNS in pods: none is needed, and a resolver query would leave the machine.
resolvConf: ""
# true makes the kubelet refuse to start here; down restores what it changes.
protectKernelDefaults: false
failSwapOn: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
# The imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 2s
EOF
    log "kubelet as node $NODE (pod logs in $STATE/pod-logs)"
    start kubelet "$STATE/kubelet.log" "$BIN/kubelet" --config "$STATE/kubelet.yaml" \
        --kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
        --cert-dir "$STATE/kubelet/pki" --hostname-override "$NODE"
    node_ready() {
        [[ $(kube get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]] &&
            [[ -z $(kube get node "$NODE" -o 'jsonpath={.spec.taints}') ]]
    }
    wait_for kubelet 120 "$STATE/kubelet.log" node_ready
    log "node $NODE Ready $((SECONDS - t0))s after start"
}

# Stops the pods' containers through containerd (their shims then exit),
# and any shim left, by the pid files containerd wrote for it.
cluster_stop_containers() {
    if running containerd; then
        local id
        for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
        sleep 0.5
        for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
        for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
    fi
    local f pid
    for f in "$STATE"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
        [[ -f $f ]] || continue
        pid=$(cat "$f")
        kill -9 "$pid" 2>/dev/null && log "killed shim pid $pid"
    done
    return 0
}

# What up changed on the host, undone: mounts under $STATE, cgroups and
# host paths it created, sysctls. Then the machine lock is released.
cluster_cleanup_host() {
    # Only the holder of the machine's lock changed anything on the host.
    [[ -f $STATE/cluster-lock.pid ]] || return 0
    local m
    # Deepest first; lazily if still busy.
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
    done < <(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r)
    if [[ -f $STATE/cgroups.created ]]; then
        local c
        while read -r c; do
            [[ -d $c ]] && { find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true; }
            [[ -d $c ]] && log "cgroup $c still busy"
        done <"$STATE/cgroups.created"
        rm -f "$STATE/cgroups.created"
    fi
    if [[ -f $STATE/host-paths.created ]]; then
        local p
        while read -r p; do
            if [[ $p == /run/containerd ]]; then
                # Shim sockets; umount whatever a shim left there first.
                { awk '$2 ~ "^/run/containerd/" {print $2}' /proc/self/mounts | sort -r | xargs -r umount -l; } || true
            fi
            rm -rf "$p"
        done <"$STATE/host-paths.created"
        rm -f "$STATE/host-paths.created"
    fi
    if [[ -f $STATE/sysctl.saved ]]; then
        local line
        while read -r line; do
            [[ $(sysctl -n "${line%%=*}") == "${line#*=}" ]] || sysctl -q -w "$line" >/dev/null || log "cannot restore $line"
        done <"$STATE/sysctl.saved"
        rm -f "$STATE/sysctl.saved"
    fi
    if command -v ip >/dev/null && ip link show vk-cni0 >/dev/null 2>&1; then ip link delete vk-cni0; fi
    return 0
}
