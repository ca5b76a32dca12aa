#!/usr/bin/env bash
# Builds the container image (deploy/build-image.sh) and smoke-tests it without a registry:
# - its configuration: non-root numeric user, the entrypoint the manifests assume, the version and
#   revision labels;
# - its filesystem, exported (`docker create` + `docker export`): a static binary, the CA bundle,
#   a world-writable /tmp; the binary run from there prints the version and revision, and sweeps
#   a small selection of examples/digits-dataset (with class labels, so analyses.json and the HTML
#   report are drawn too);
# - `docker run` of the image itself, as UID 65532 with a read-only root filesystem as the
#   manifests run it, on the same sweep; both runs must give the numbers of the same sweep run by
#   a host build of svcca (target/debug/svcca or $SVCCA_REFERENCE_BIN, when there is one).
# Environment: SVCCA_IMAGE_NAME (default svcca), SVCCA_DOCKER (default docker),
#   SVCCA_SKIP_DOCKER_RUN=1 to leave out `docker run` where containers cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."

docker=${SVCCA_DOCKER:-docker}
if ! "$docker" info >/dev/null 2>&1; then
    echo "image-smoke: no Docker daemon answers ($docker info failed); the image is built with Docker" >&2
    exit 1
fi
work=$(mktemp -d)
cleanup() {
    if [ -n "${container:-}" ]; then "$docker" rm -f "$container" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

start=$(date +%s)
ref=$(bash deploy/build-image.sh --name "${SVCCA_IMAGE_NAME:-svcca}" | tail -n 1)
echo "image-smoke: built $ref in $(( $(date +%s) - start )) s"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
revision=${ref##*:$version-}
fail() { echo "image-smoke: FAILED: $*" >&2; exit 1; }

# The image's configuration.
config=$("$docker" image inspect -f '{{.Config.User}}|{{json .Config.Entrypoint}}|{{index .Config.Labels "org.opencontainers.image.version"}}|{{index .Config.Labels "org.opencontainers.image.revision"}}' "$ref")
expected="65532:65532|[\"/usr/local/bin/svcca\"]|$version|$revision"
[ "$config" = "$expected" ] || fail "image config is '$config', expected '$expected'"
"$docker" image inspect "${ref%:*}:$version" >/dev/null || fail "no tag ${ref%:*}:$version (the manifests' tag)"

# Its filesystem.
container=$("$docker" create "$ref")
mkdir "$work/rootfs"
"$docker" export "$container" | tar -x -C "$work/rootfs"
"$docker" rm "$container" >/dev/null
container=
bin="$work/rootfs/usr/local/bin/svcca"
[ -x "$bin" ] || fail "no executable /usr/local/bin/svcca in the image"
[ -s "$work/rootfs/etc/ssl/certs/ca-certificates.crt" ] || fail "no CA bundle in the image"
[ "$(stat -c %a "$work/rootfs/tmp")" = 1777 ] || fail "/tmp in the image is not mode 1777"
python3 - "$bin" <<'PY' || fail "the binary is not statically linked"
import sys
# A static executable has no PT_INTERP program header (no dynamic loader to run it).
data = open(sys.argv[1], "rb").read(1 << 20)
assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF"
phoff = int.from_bytes(data[32:40], "little")
phentsize = int.from_bytes(data[54:56], "little")
phnum = int.from_bytes(data[56:58], "little")
types = [int.from_bytes(data[phoff + i * phentsize: phoff + i * phentsize + 4], "little") for i in range(phnum)]
sys.exit(1 if 3 in types else 0)
PY
# What the image holds, leaving out the files Docker adds to every container it creates.
files=$(cd "$work/rootfs" && find . -type f ! -path ./.dockerenv ! -path './dev/*' \
    ! -path ./etc/hostname ! -path ./etc/hosts ! -path ./etc/resolv.conf | sort | tr '\n' ' ')
[ "$files" = "./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/svcca " ] || fail "unexpected files in the image: $files"
shown=$("$bin" --version)
[ "$shown" = "svcca $version ($revision)" ] || fail "--version printed '$shown', expected 'svcca $version ($revision)'"
echo "image-smoke: $shown; static; $(du -h "$bin" | cut -f1) binary"

# A small sweep: two seeds, three layers, every checkpoint against the final one, with labels.
mkdir -p "$work/data" "$work/out"
cp -r examples/digits-dataset "$work/data/digits"
cp examples/digits-labels.npy "$work/data/labels.npy"
job() { # DATA_ROOT OUTPUT
    cat <<EOF
dataset = "$1/digits"
output = "$2"
comparison = "vs-final"
metrics = ["svcca", "cka"]
[select]
where = { run = "mlp", seed = ["0", "1"], layer = ["h1", "h2", "logits"] }
[analyses]
labels = "$1/labels.npy"
logits = "logits"
EOF
}
job "$work/data" "$work/out/exported" >"$work/exported.toml"
"$bin" sweep "$work/exported.toml" --workers 2 >"$work/exported.log" 2>&1 || { cat "$work/exported.log" >&2; fail "the exported binary's sweep"; }
outputs=("$work/out/exported")

if [ "${SVCCA_SKIP_DOCKER_RUN:-0}" != 1 ]; then
    chmod 0777 "$work/out"
    job /data /out/run >"$work/data/job.toml"
    if ! "$docker" run --rm --read-only --network none --cap-drop ALL --security-opt no-new-privileges \
        -v "$work/data:/data:ro" -v "$work/out:/out" --tmpfs /tmp:mode=1777 "$ref" \
        sweep /data/job.toml --workers 2 >"$work/run.log" 2>&1; then
        cat "$work/run.log" >&2
        fail "docker run of the image's sweep (SVCCA_SKIP_DOCKER_RUN=1 leaves it out where containers cannot start)"
    fi
    outputs+=("$work/out/run")
fi

reference=${SVCCA_REFERENCE_BIN:-target/debug/svcca}
if [ -x "$reference" ]; then
    job "$work/data" "$work/out/reference" >"$work/reference.toml"
    "$reference" sweep "$work/reference.toml" --workers 2 >"$work/reference.log" 2>&1 || { cat "$work/reference.log" >&2; fail "the reference sweep with $reference"; }
    outputs+=("$work/out/reference")
else
    echo "image-smoke: no host build at $reference: the image's numbers are checked for completeness only"
fi

python3 - "${outputs[@]}" <<'PY' || fail "the sweeps' outputs"
import json, math, os, sys

def pairs(folder):
    for name in ("results.json", "analyses.json", "report/index.html"):
        assert os.path.isfile(os.path.join(folder, name)), f"{folder}: no {name}"
    results = json.load(open(os.path.join(folder, "results.json")))
    values = {}
    for p in results["pairs"]:
        key = (json.dumps(p["a"], sort_keys=True), json.dumps(p["b"], sort_keys=True), p["metric"])
        values[key] = p["mean"]
    return values

first = pairs(sys.argv[1])
# 2 seeds x 3 layers, each of the 4 earlier checkpoints against the final one, 2 metrics.
assert len(first) == 2 * 3 * 4 * 2, f"{len(first)} pairs"
assert all(math.isfinite(v) and -1e-9 <= v <= 1 + 1e-9 for v in first.values()), first
for other in sys.argv[2:]:
    values = pairs(other)
    assert values.keys() == first.keys(), f"{other}: other pairs"
    worst = max(abs(values[k] - first[k]) for k in first)
    assert worst <= 1e-9, f"{other}: differs by up to {worst}"
print(f"image-smoke: {len(first)} pairs, analyses.json and report/index.html in {len(sys.argv) - 1} run(s), numbers agree")
PY
echo "image-smoke: $ref passed in $(( $(date +%s) - start )) s"
