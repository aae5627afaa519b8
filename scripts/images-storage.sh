# Sourced by test.sh and demo.sh: buildah storage of this clone only, so the
# images the cluster imports are the ones built from this tree (other clones
# on the same machine build the same names into the default storage).
# shellcheck shell=bash
export CONTAINERS_STORAGE_CONF=$ROOT/target/containers/storage.conf
mkdir -p "$ROOT/target/containers"
printf '[storage]\ndriver = "vfs"\ngraphroot = "%s"\nrunroot = "%s"\n' \
    "$ROOT/target/containers/storage" "$ROOT/target/containers/run" >"$CONTAINERS_STORAGE_CONF"
