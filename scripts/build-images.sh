#!/usr/bin/env bash
# Builds the static binaries and the three FROM scratch images with buildah
# (no daemon, no registry). Images land in buildah's vfs storage as
# localhost/vault-kubernetes-<program>:<version>.
#
# Equivalent for users with a daemon:
#   cargo build --release --target x86_64-unknown-linux-musl
#   docker build --target authenticator -t vault-kubernetes-authenticator .
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if ! command -v buildah >/dev/null; then
    echo "build-images: apt-get install buildah" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
fi
scripts/setup.sh
cargo build --release --locked --target x86_64-unknown-linux-musl
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
for target in authenticator synchronizer token-renewer; do
    buildah --storage-driver vfs bud --quiet --squash --isolation chroot --build-arg "VERSION=$VERSION" \
        --target "$target" -t "vault-kubernetes-$target:$VERSION" -f Containerfile . >/dev/null
    echo "built localhost/vault-kubernetes-$target:$VERSION"
done
