#!/usr/bin/env python3
"""Scale-out on real processes: one `svcca coordinator`, N `svcca worker` processes and
`svcca submit --wait`, for each N given, on one machine.

Each worker runs one task at a time on one thread (`--concurrency 1 --threads 1`) and, when the
machine has at least N cores, is pinned to core i with `taskset`, so N workers use N cores and
nothing else. Every run starts from an empty output and an empty cache (the job's default cache
is `<output>.cache`), so each one computes everything. The table gives, per N, the wall time of
the submit (job submitted to results written), the speed-up over N = 1 and the parallel
efficiency T1 / (N · TN), the CPU seconds of the workers and of the coordinator, and the largest
|Δ mean| of any pair against the N = 1 run (merges follow chunk and group order, so it should be 0).

    python3 benchmarks/scale_out.py --svcca target/release/svcca --dataset file:///data/acts \\
        --workers 1,2,4,8,16 [--metric svcca] [--comparison all-pairs] [--rounds 1] \\
        [--precision f64|mixed] [--memory-mb MB]

Each worker's peak RSS is reported next to the job's per-task memory bound (one task at a time
per worker).

On a 2-core machine use `--workers 1,2`; on a 16-core one `--workers 1,2,4,8,16` (the same
script). The data of `run.py --only sweep` (60 × 512 × 20,000, ingested by `svcca ingest`) is the
reference workload; any dataset works.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the coordinator exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the coordinator did not listen on port {port} within {timeout} s")


def cpu_of(proc):
    """Waits for `proc` and returns its user + system CPU seconds and its peak RSS in MiB (the
    kernel's high-water mark, which counts pages of memory-mapped shards it touched)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


class RssSampler(threading.Thread):
    """Polls /proc/PID/status of the workers every 0.2 s for the peak of their anonymous memory
    (heap: what the memory bound is about) and of their file-backed pages (memory-mapped shards
    and cache entries, which the kernel can drop and reread), which ru_maxrss adds together."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.stop, self.anon, self.file = pids, threading.Event(), 0, 0

    def run(self):
        while not self.stop.is_set():
            for pid in self.pids:
                try:
                    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
                except OSError:
                    continue
                kib = lambda name: int(fields.get(name, "0 kB").split()[0])  # noqa: E731
                self.anon = max(self.anon, kib("RssAnon"))
                self.file = max(self.file, kib("RssFile") + kib("RssShmem"))
            self.stop.wait(0.2)


def means(results_json):
    data = json.loads(Path(results_json).read_text())

    def key(k):
        return json.dumps(k, sort_keys=True)

    return {(key(p["a"]), key(p["b"]), p["metric"]): p["mean"] for p in data["pairs"]}


def run_once(args, n, work):
    out = work / f"out-{n}"
    for p in (out, Path(str(out) + ".cache")):
        shutil.rmtree(p, ignore_errors=True)
    spec = work / f"job-{n}.toml"
    metrics = ", ".join(f'"{m}"' for m in args.metric)
    text = (
        f'dataset = "{args.dataset}"\n'
        f'output = "{out.as_uri()}"\n'
        f'comparison = "{args.comparison}"\n'
        f"metrics = [{metrics}]\n"
        f'precision = "{args.precision}"\n'
    )
    if args.memory_mb:
        text += f"[resources]\nmemory_mb = {args.memory_mb}\n"
    spec.write_text(text)
    port = free_port()
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    logs = work / f"logs-{n}"
    logs.mkdir(exist_ok=True)
    coord = subprocess.Popen(
        [args.svcca, "coordinator", "--listen", f"127.0.0.1:{port}", "--no-report"],
        stdout=open(logs / "coordinator.out", "w"), stderr=subprocess.STDOUT, env=env)
    wait_listening(port, coord)
    pin = (os.cpu_count() or 1) >= n and shutil.which("taskset") is not None
    workers = []
    for i in range(n):
        cmd = [args.svcca, "worker", "--coordinator", f"http://127.0.0.1:{port}",
               "--concurrency", "1", "--threads", "1", "--name", f"w{i}",
               "--health-listen", f"127.0.0.1:{free_port()}"]
        if pin:
            cmd = ["taskset", "-c", str(i), *cmd]
        workers.append(subprocess.Popen(
            cmd, stdout=open(logs / f"worker-{i}.out", "w"), stderr=subprocess.STDOUT, env=env))
    sampler = RssSampler([w.pid for w in workers])
    sampler.start()
    t0 = time.monotonic()
    submit = subprocess.run(
        [args.svcca, "submit", "--coordinator", f"http://127.0.0.1:{port}", "--wait",
         str(spec)],
        capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()
    for i, w in enumerate(workers):
        if w.poll() is not None:
            raise SystemExit(f"worker {i} exited early ({w.returncode}); logs in {logs}")
        w.terminate()
    usage = [cpu_of(w) for w in workers]
    worker_cpu = sum(cpu for cpu, _ in usage)
    worker_rss = max(rss for _, rss in usage)
    coord.terminate()
    coord_cpu, coord_rss = cpu_of(coord)
    if submit.returncode != 0:
        raise SystemExit(f"submit with {n} worker(s) failed ({submit.returncode}):\n"
                         f"{submit.stdout}\n{submit.stderr}\nlogs in {logs}")
    return {"workers": n, "wall_s": wall, "worker_cpu_s": worker_cpu, "coordinator_cpu_s": coord_cpu,
            "worker_peak_rss_mb": worker_rss, "coordinator_peak_rss_mb": coord_rss,
            "worker_peak_anon_mb": sampler.anon / 1024, "worker_peak_file_mb": sampler.file / 1024,
            "pinned": pin, "means": means(out / "results.json"),
            "load_before": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--svcca", required=True, help="path to the svcca binary")
    ap.add_argument("--dataset", required=True, help="dataset URL, e.g. file:///data/acts")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--metric", action="append", default=None)
    ap.add_argument("--comparison", default="all-pairs")
    ap.add_argument("--precision", default="f64", choices=["f64", "mixed"])
    ap.add_argument("--memory-mb", type=int, default=None,
                    help="the job's memory bound per task (`[resources] memory_mb`)")
    ap.add_argument("--rounds", type=int, default=1, help="runs per N; the median wall is kept")
    ap.add_argument("--work", default=None, help="folder for outputs and logs (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the table's numbers here")
    args = ap.parse_args()
    args.metric = args.metric or ["svcca"]
    counts = [int(x) for x in args.workers.split(",")]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="svcca-scale-"))
    work.mkdir(parents=True, exist_ok=True)

    rows = []
    for n in counts:
        runs = [run_once(args, n, work) for _ in range(args.rounds)]
        best = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
        best["walls"] = [r["wall_s"] for r in runs]
        rows.append(best)
        print(f"{n} worker(s): {best['wall_s']:.2f} s", file=sys.stderr)

    base = rows[0]
    lines = [
        "| workers | pinned | wall s (runs) | speed-up | efficiency T1/(N·TN) | worker CPU s | "
        "coordinator CPU s | peak RSS MiB: worker (max), coordinator | worker peak MiB: anonymous, "
        "file-backed | max abs Δ mean vs first | load 1m before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speed = base["wall_s"] / r["wall_s"] * base["workers"]
        eff = speed / r["workers"]
        keys = base["means"].keys() & r["means"].keys()
        if len(keys) != len(base["means"]) or len(keys) != len(r["means"]):
            raise SystemExit(f"{r['workers']} worker(s) produced other pairs than {base['workers']}")
        delta = max((abs(base["means"][k] - r["means"][k]) for k in keys), default=0.0)
        walls = ", ".join(f"{w:.2f}" for w in r["walls"])
        lines.append(
            f"| {r['workers']} | {'yes' if r['pinned'] else 'no'} | {r['wall_s']:.2f} ({walls}) | "
            f"{speed:.2f}× | {eff:.0%} | {r['worker_cpu_s']:.1f} | {r['coordinator_cpu_s']:.2f} | "
            f"{r['worker_peak_rss_mb']:.0f}, {r['coordinator_peak_rss_mb']:.0f} | "
            f"{r['worker_peak_anon_mb']:.0f}, {r['worker_peak_file_mb']:.0f} | "
            f"{delta:.1e} | {r['load_before']:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{k: v for k, v in r.items() if k != "means"} for r in rows], indent=2))
    print(f"outputs and logs: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
