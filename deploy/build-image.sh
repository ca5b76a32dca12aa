#!/usr/bin/env bash
# Builds the svcca container image without pulling anything from a registry:
#   1. a static `svcca` (target x86_64-unknown-linux-musl, the `image` profile: release
#      optimisation), compiled with musl-gcc for the C parts (aws-lc-sys, ring);
#   2. an image `FROM scratch` holding that binary, the build host's CA bundle and an empty /tmp
#      (deploy/Dockerfile), running as UID/GID 65532.
# It is tagged NAME:VERSION-REVISION (VERSION from Cargo.toml, REVISION the git commit, with
# `-dirty` when the working tree has uncommitted changes) and NAME:VERSION, the tag the manifests
# under deploy/ use. The last line printed is the full reference NAME:VERSION-REVISION.
#
# Usage: deploy/build-image.sh [--name NAME] [--ref-file FILE]
#   --name NAME      image name (default: svcca; e.g. registry.example.com/team/svcca)
#   --ref-file FILE  also write the full reference to FILE
# Needs: a Rust toolchain with rustup, Docker (or `SVCCA_DOCKER=podman` with `--storage-driver vfs`
# in its configuration), musl-gcc (Debian/Ubuntu: `apt-get install musl-tools`; installed here
# when missing and apt-get can), git.
set -euo pipefail
cd "$(dirname "$0")/.."

name=svcca
ref_file=
while [ $# -gt 0 ]; do
    case "$1" in
        --name) name=$2; shift 2 ;;
        --ref-file) ref_file=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

docker=${SVCCA_DOCKER:-docker}
target=x86_64-unknown-linux-musl
profile=image
target_dir=${CARGO_TARGET_DIR:-target}

log() { echo "build-image: $*" >&2; }

# The toolchain pieces a fresh CI machine may lack; both are offline-installable there.
if ! rustup target list --installed | grep -qx "$target"; then
    log "adding the Rust target $target"
    rustup target add "$target" >&2
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        log "installing musl-tools (musl-gcc)"
        apt-get install -y -q musl-tools >&2 || { apt-get update -q >&2 && apt-get install -y -q musl-tools >&2; }
    else
        log "musl-gcc not found: install musl-tools (Debian/Ubuntu) or musl-gcc for your distribution"
        exit 1
    fi
fi
certs=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$certs" ]; then
    log "no CA bundle at $certs (Debian/Ubuntu: apt-get install ca-certificates)"
    exit 1
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if [ -z "$version" ]; then
    log "cannot read the workspace version from Cargo.toml"
    exit 1
fi
revision=$(git rev-parse --short=12 HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    revision="$revision-dirty"
fi

# The C parts of the TLS stacks (aws-lc-sys for rustls, ring for the cloud stores' signing) are
# compiled against musl's headers with musl-gcc; the Rust target links statically by default.
export CC_x86_64_unknown_linux_musl=musl-gcc
# `svcca --version` names the commit the binary was built from.
export SVCCA_BUILD_REVISION=$revision
start=$(date +%s)
log "compiling svcca $version ($revision) for $target, profile $profile"
cargo build --locked --profile "$profile" --target "$target" -p svcca-cli --bin svcca >&2
log "compiled in $(( $(date +%s) - start )) s"
binary="$target_dir/$target/$profile/svcca"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc/ssl/certs" "$context/rootfs/tmp"
cp "$binary" "$context/rootfs/usr/local/bin/svcca"
cp "$certs" "$context/rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 0755 "$context/rootfs/usr/local/bin/svcca"
chmod 0644 "$context/rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$context/rootfs/tmp"

full="$name:$version-$revision"
# The classic builder: BuildKit is not always installed (no buildx plugin), and this Dockerfile
# needs nothing it adds.
DOCKER_BUILDKIT=0 "$docker" build -q -f deploy/Dockerfile \
    --label "org.opencontainers.image.title=svcca" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    -t "$full" -t "$name:$version" "$context" >&2
log "built $full (also tagged $name:$version)"
if [ -n "$ref_file" ]; then
    echo "$full" >"$ref_file"
fi
echo "$full"
