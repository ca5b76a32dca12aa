#!/usr/bin/env bash
# Offline check of the Kubernetes manifests under deploy/: renders every kustomization (the base
# and each overlay) with `kubectl kustomize`, validates every rendered object against the
# Kubernetes OpenAPI schemas bundled in `kubernetes-validate` (strict: unknown fields are errors),
# for the oldest and the newest Kubernetes version we support, then checks a few rules that a
# schema cannot express but an API server or the kubelet would enforce, that the pool stays
# secure by default (NetworkPolicies rendered, no API token mounted), and that every container
# runs the image deploy/build-image.sh builds (svcca:VERSION). No cluster is needed.
#
# Exits non-zero on the first render error and after reporting every validation error.
# Environment: SVCCA_KUBE_VERSIONS (default "1.31.0 1.37.0"): the versions to validate against;
# 1.31 is the first with podFailurePolicy GA, which the Jobs use.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSIONS=${SVCCA_KUBE_VERSIONS:-"1.31.0 1.37.0"}
VALIDATOR_VERSION=1.37.0

# The renderer: kubectl's built-in kustomize, or a standalone kustomize binary.
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    render() { kubectl kustomize "$1"; }
    renderer="kubectl kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize || echo 'version unknown'))"
elif command -v kustomize >/dev/null 2>&1; then
    render() { kustomize build "$1"; }
    renderer="kustomize build ($(kustomize version 2>/dev/null || echo 'version unknown'))"
else
    # Debian's `kubernetes-client` package is kubectl 1.20 with kustomize 2.0.3, too old for these
    # kustomizations (labels, inline patches); there is no pip-installable kustomize either.
    echo "deploy-check: neither kubectl (1.27+) nor kustomize (5+) is on PATH; install one of them" >&2
    echo "  (https://kubernetes.io/docs/tasks/tools/ or the google-cloud-cli 'kubectl' package)" >&2
    exit 1
fi

if ! python3 -c "import kubernetes_validate" >/dev/null 2>&1; then
    echo "deploy-check: installing kubernetes-validate==$VALIDATOR_VERSION from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATOR_VERSION"
fi

# The image tag every kustomization must use (see deploy/build-image.sh).
svcca_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Every directory holding a kustomization: the base renders on its own too.
mapfile -t dirs < <(find deploy -name kustomization.yaml -printf '%h\n' | sort)
if [ "${#dirs[@]}" -eq 0 ]; then
    echo "deploy-check: no kustomization under deploy/" >&2
    exit 1
fi

failed=0
objects=0
checks=0
for dir in "${dirs[@]}"; do
    rendered="$out/$(echo "$dir" | tr '/' '_').yaml"
    if ! render "$dir" >"$rendered" 2>"$out/render.err"; then
        echo "deploy-check: FAILED to render $dir:" >&2
        cat "$out/render.err" >&2
        exit 1
    fi
    n=$(grep -c '^kind:' "$rendered" || true)
    objects=$((objects + n))
    for version in $KUBE_VERSIONS; do
        checks=$((checks + n))
        if ! python3 -m kubernetes_validate --strict --quiet -k "$version" "$rendered" \
            >"$out/validate.log" 2>&1; then
            echo "deploy-check: $dir does not validate against Kubernetes $version:" >&2
            sed "s|$rendered|$dir|" "$out/validate.log" >&2
            failed=1
        fi
    done

    # Rules beyond the schemas.
    if ! python3 - "$dir" "$rendered" "$svcca_version" <<'PY'
import sys
import yaml

dir_, path, version = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []
docs = [d for d in yaml.safe_load_all(open(path)) if d]
# Secure by default: the pool is fenced, whatever overlay renders it.
if any(d["kind"] == "Deployment" for d in docs) and not any(d["kind"] == "NetworkPolicy" for d in docs):
    errors.append(f"{dir_}: renders pods but no NetworkPolicy")
for doc in docs:
    kind, name = doc["kind"], doc["metadata"]["name"]
    where = f"{dir_}: {kind}/{name}"
    # Namespace-agnostic: the namespace comes from `kubectl apply -n`.
    if "namespace" in doc["metadata"]:
        errors.append(f"{where}: sets metadata.namespace; leave it to `kubectl apply -n`")
    job = None
    if kind == "Job":
        job = doc["spec"]
    elif kind == "CronJob":
        job = doc["spec"]["jobTemplate"]["spec"]
    pod = None
    if job is not None:
        pod = job["template"]["spec"]
    elif kind in ("Deployment", "StatefulSet", "DaemonSet"):
        pod = doc["spec"]["template"]["spec"]
    if pod is None:
        continue
    names = {c["name"] for c in pod.get("containers", []) + pod.get("initContainers", [])}
    # svcca never calls the Kubernetes API; cloud bindings bring their own credentials.
    if pod.get("automountServiceAccountToken") is not False:
        errors.append(f"{where}: mounts a Kubernetes API token; set automountServiceAccountToken: false")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        # Every kustomization runs the image deploy/build-image.sh builds: `svcca:VERSION` (or a
        # registry's `.../svcca:VERSION[-REVISION]`), VERSION being the workspace's.
        image = c.get("image", "")
        name, _, tag = image.rpartition(":")
        if not (name == "svcca" or name.endswith("/svcca")) or not (
            tag == version or tag.startswith(version + "-")
        ):
            errors.append(
                f"{where}: container {c['name']} runs image `{image}`, not the svcca:{version} "
                "that deploy/build-image.sh builds (set `images:` in the kustomization)"
            )
    if job is not None:
        for key in ("backoffLimit", "ttlSecondsAfterFinished", "podFailurePolicy"):
            if key not in job:
                errors.append(f"{where}: sets no {key}")
        policy = job.get("podFailurePolicy")
        if policy:
            # The API server rejects a pod failure policy unless pods are never restarted in place.
            if pod.get("restartPolicy") != "Never":
                errors.append(f"{where}: podFailurePolicy needs restartPolicy: Never")
            fail_codes = set()
            for rule in policy["rules"]:
                codes = rule.get("onExitCodes")
                if codes:
                    cname = codes.get("containerName")
                    if cname is not None and cname not in names:
                        errors.append(f"{where}: podFailurePolicy names unknown container {cname}")
                    if rule["action"] == "FailJob" and codes["operator"] == "In":
                        fail_codes.update(codes["values"])
            # svcca's exit codes (crates/svcca-cli/src/exit.rs): 2 usage, 10 non-retryable.
            if not {2, 10} <= fail_codes:
                errors.append(f"{where}: podFailurePolicy does not fail the Job on exit codes 2 and 10")
for e in errors:
    print("deploy-check:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
    then
        failed=1
    fi
    echo "deploy-check: $dir: $n objects rendered"
done

if [ "$failed" -ne 0 ]; then
    echo "deploy-check: FAILED" >&2
    exit 1
fi
echo "deploy-check: ${#dirs[@]} kustomizations, $objects objects, $checks object validations against Kubernetes $KUBE_VERSIONS (strict) with $renderer: all passed"
