#!/usr/bin/env bash
# Builds the static binaries for amd64 and arm64 and, per program, one
# FROM scratch image for each architecture and a manifest list naming both
# (buildah, no daemon, no registry). In buildah's vfs storage:
#   localhost/vault-kubernetes-<program>:<version>            amd64 (as before)
#   localhost/vault-kubernetes-<program>:<version>-amd64      the same image
#   localhost/vault-kubernetes-<program>:<version>-arm64      arm64
#   localhost/vault-kubernetes-<program>:<version>-multiarch  manifest list of both
# Publish one name for both architectures:
#   buildah --storage-driver vfs manifest push --all \
#     localhost/vault-kubernetes-authenticator:0.1.0-multiarch \
#     docker://registry.example/vault-kubernetes-authenticator:0.1.0
#
# Equivalent for users with a daemon (after both cargo builds below):
#   docker buildx build --platform linux/amd64,linux/arm64 --target authenticator \
#     -t registry.example/vault-kubernetes-authenticator:0.1.0 --push .
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/setup.sh
# Run from a test (tests/images.rs), cargo's CARGO_PKG_*/CARGO_MANIFEST_*
# of this package are set; ring's build script reruns when they change, so
# keeping them would rebuild everything here and again from a shell.
unset "${!CARGO_PKG_@}" "${!CARGO_MANIFEST_@}" "${!CARGO_CRATE_@}" CARGO_PRIMARY_PACKAGE
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# Image architecture (OCI/Go names) -> Rust target.
declare -A RUST_TARGET=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
for arch in amd64 arm64; do
    cargo build --release --locked --target "${RUST_TARGET[$arch]}"
done
b=(buildah --storage-driver vfs)
for target in authenticator synchronizer token-renewer env; do
    name=localhost/vault-kubernetes-$target:$VERSION
    for arch in amd64 arm64; do
        # --arch sets the config's architecture; TARGETARCH is passed as
        # well because buildah 1.28 only derives it from --arch sometimes.
        "${b[@]}" bud --quiet --squash --isolation chroot --build-arg "VERSION=$VERSION" \
            --os linux --arch "$arch" --build-arg "TARGETARCH=$arch" \
            --target "$target" -t "$name-$arch" -f Containerfile . >/dev/null
    done
    "${b[@]}" tag "$name-amd64" "$name"
    # A fresh list each time: `manifest add` to an old one would keep the
    # previous build's entries beside the new ones.
    if "${b[@]}" manifest exists "$name-multiarch"; then
        "${b[@]}" manifest rm "$name-multiarch" >/dev/null
    fi
    "${b[@]}" manifest create "$name-multiarch" >/dev/null
    for arch in amd64 arm64; do
        "${b[@]}" manifest add "$name-multiarch" "containers-storage:$name-$arch" >/dev/null
    done
    echo "built $name (amd64), $name-arm64, $name-multiarch (list of both)"
done
