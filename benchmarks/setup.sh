#!/usr/bin/env bash
# Creates benchmarks/.venv (git-ignored) with the NumPy side's packages and checks that GNU time
# is there (`/usr/bin/time -v` gives the peak RSS). Usage: bash benchmarks/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (apt-get install time)" >&2
  apt-get update -qq && apt-get install -y -qq time
fi
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install -q -r "$here/requirements.txt"
"$here/.venv/bin/python" "$here/check_golden.py"
