#!/usr/bin/env python3
"""Runs the svcca-vs-NumPy benchmarks side by side and writes result tables.

Each measured command runs as its own process under `/usr/bin/time -v` (wall clock and peak RSS
of the process tree's largest process) inside `timeout`, so a NumPy run past the limit is stopped
and reported as a lower bound. Both sides get the same thread count (`--threads`, default 2):
`OMP_NUM_THREADS`/`OPENBLAS_NUM_THREADS`/`MKL_NUM_THREADS` for NumPy (with `OPENBLAS_CORETYPE` and
`OPENBLAS_L2_SIZE` removed from that command's environment only, see README) and
`RAYON_NUM_THREADS`/`SVCCA_THREADS` for svcca. The 1-minute load average and the idle fraction of the cores over
2 s are recorded before every run; `--wait-idle F` waits (up to `--wait-max` s) for the cores to be
at least F idle first.

Items (`--only`, default all):
  dense    dense CCA and SVCCA (99%) vs google's NumPy recipe, plus compare at 10× the datapoints
  conv     conv layers, DFT method vs google's fourier_ccas in NumPy
  sweep    all-pairs SVCCA sweep vs NumPy loops, whiten-once NumPy and a loop of `svcca compare`;
           1 → 2 workers
`--quick` shrinks every size so the whole harness checks itself in a minute or two.

Data goes to `benchmarks/out/data` (git-ignored) and is reused when present; results go to
`benchmarks/out/results/<item>.{json,md}`.
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import gen  # noqa: E402

PY = sys.executable
NP_BENCH = str(HERE / "np_bench.py")

FULL = {
    "dense_sizes": [(512, 50_000), (2048, 50_000)],
    "dense_mem": (512, [50_000, 500_000]),
    "conv": (500, 16, 16, 64),
    "sweep": {"seeds": 10, "layers": 6, "n": 20_000, "d": 512, "rank": 40},
}
# Transformer-sized layers for `scale_out.py`: 24 representations (4 seeds × 6 layers) × 2,048
# neurons × 50,000 datapoints, 9.8 GB of float32. Made with
# `python -c "import run; run._sweep_data(run.TRANSFORMER)"` from this folder.
TRANSFORMER = {"seeds": 4, "layers": 6, "n": 50_000, "d": 2048, "rank": 160}
QUICK = {
    "dense_sizes": [(128, 5_000), (256, 5_000)],
    "dense_mem": (128, [5_000, 50_000]),
    "conv": (100, 8, 8, 16),
    "sweep": {"seeds": 3, "layers": 3, "n": 4_000, "d": 128, "rank": 12},
}


# ---------------------------------------------------------------------------------------------
# measurement


def loadavg():
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_idle(seconds=2.0):
    """Fraction of all cores idle over the next `seconds` (from /proc/stat): the other work on
    the machine right before a measurement, unlike the lagging load average."""

    def snap():
        vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return vals[3] + vals[4], sum(vals)  # idle + iowait, total

    i0, t0 = snap()
    time.sleep(seconds)
    i1, t1 = snap()
    return (i1 - i0) / max(1, t1 - t0)


QUIET = {"idle": 0.0, "max_wait": 0}


def wait_for_quiet():
    """Waits (up to QUIET['max_wait'] s) until the cores are at least QUIET['idle'] idle."""
    deadline = time.time() + QUIET["max_wait"]
    idle = cpu_idle()
    while idle < QUIET["idle"] and time.time() < deadline:
        idle = cpu_idle(5.0)
    return idle


def np_env(threads):
    env = dict(os.environ)
    # These make a current OpenBLAS pick slower kernels on some processors; they are unset for
    # the measured NumPy command only (threadpoolctl's reported kernel is recorded).
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def svcca_env(threads):
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(threads)
    env["SVCCA_THREADS"] = str(threads)  # `svcca compare --threads`
    env.setdefault("SVCCA_LOG", "warn")
    return env


def _parse_time_v(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Elapsed (wall clock) time"):
            val = line.rsplit(": ", 1)[1]
            parts = [float(p) for p in val.split(":")]
            secs = 0.0
            for p in parts:
                secs = secs * 60 + p
            out["wall_s"] = secs
        elif line.startswith("Maximum resident set size"):
            out["rss_mb"] = int(line.rsplit(": ", 1)[1]) / 1024
        elif line.startswith("User time (seconds)"):
            out["user_s"] = float(line.rsplit(": ", 1)[1])
        elif line.startswith("System time (seconds)"):
            out["sys_s"] = float(line.rsplit(": ", 1)[1])
        elif line.startswith("Percent of CPU this job got"):
            out["cpu_pct"] = line.rsplit(": ", 1)[1]
        elif line.startswith("Exit status"):
            out["exit_status"] = int(line.rsplit(": ", 1)[1])
    return out


def parse_json_stream(text):
    """Every top-level JSON object in `text` (one per line or pretty-printed); other text skipped."""
    dec = json.JSONDecoder()
    objs, i = [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return objs
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        if isinstance(obj, dict):
            objs.append(obj)
        i = end


def measure_once(cmd, env, timeout, cwd=None):
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-v", "-o", tf.name, "timeout", "-k", "10", str(timeout), *cmd]
        idle = wait_for_quiet()
        load = loadavg()
        t = time.perf_counter()
        p = subprocess.run(full, env=env, capture_output=True, text=True, cwd=cwd)
        wall = time.perf_counter() - t
        info = _parse_time_v(Path(tf.name).read_text())
    rc = p.returncode
    rec = {
        "cmd": " ".join(shlex.quote(c) for c in cmd),
        "rc": rc,
        "timed_out": rc in (124, 137),
        "wall_s": round(info.get("wall_s", wall), 3),
        "rss_mb": round(info.get("rss_mb", float("nan")), 1),
        "cpu_pct": info.get("cpu_pct"),
        # CPU seconds (user + system): under load from other work they vary far less than wall
        # time does.
        "cpu_s": round(info.get("user_s", 0.0) + info.get("sys_s", 0.0), 2),
        "load_1m_before": load[0],
        "idle_before": round(idle, 2),
        "stderr_tail": p.stderr[-1500:],
    }
    objs = parse_json_stream(p.stdout)
    if objs:
        rec["json"] = objs[-1]
        if len(objs) > 1:
            rec["json_all"] = objs
    elif p.stdout.strip():
        rec["stdout_tail"] = p.stdout[-1500:]
    return rec


def measure(label, cmd, env, timeout, repeat_below_s=20.0, repeats=3, cwd=None):
    """Runs once; when that took under `repeat_below_s`, runs `repeats` times in all and keeps the
    median wall time (and the largest peak RSS). Logs progress on stderr."""
    print(f"[{datetime.datetime.now():%H:%M:%S}] load {loadavg()[0]:.2f}  {label}: {' '.join(cmd)}",
          file=sys.stderr, flush=True)
    runs = [measure_once(cmd, env, timeout, cwd)]
    if runs[0]["rc"] == 0 and runs[0]["wall_s"] < repeat_below_s:
        runs += [measure_once(cmd, env, timeout, cwd) for _ in range(repeats - 1)]
    walls = [r["wall_s"] for r in runs]
    best = dict(runs[0])
    best["label"] = label
    best["runs_wall_s"] = walls
    best["wall_s"] = round(statistics.median(walls), 3)
    best["rss_mb"] = max(r["rss_mb"] for r in runs)
    best["load_1m_before"] = [r["load_1m_before"] for r in runs]
    best["idle_before"] = [r["idle_before"] for r in runs]
    status = "TIMED OUT (lower bound)" if best["timed_out"] else f"rc={best['rc']}"
    print(f"    -> {best['wall_s']:.2f} s, {best['rss_mb']:.0f} MB, {status}", file=sys.stderr, flush=True)
    if best["rc"] != 0 and not best["timed_out"]:
        print("    stderr: " + best["stderr_tail"][-600:], file=sys.stderr, flush=True)
    return best


# ---------------------------------------------------------------------------------------------
# machine


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except subprocess.SubprocessError:
        return ""


def machine_info(args):
    lscpu = sh("lscpu")
    model = re.search(r"Model name:\s*(.+)", lscpu)
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    blas = sh(
        f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS={args.threads} {shlex.quote(PY)} -c "
        "'import json, numpy, threadpoolctl; print(json.dumps([{k: i.get(k) for k in "
        '("internal_api", "version", "architecture", "num_threads")} for i in threadpoolctl.threadpool_info()]))\''
    )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "mem_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "uptime": sh("uptime"),
        "python": platform.python_version(),
        "numpy": sh(f"{shlex.quote(PY)} -c 'import numpy; print(numpy.__version__)'"),
        "numpy_blas_unset_coretype": blas,
        "env_OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "rustc": sh("rustc -V"),
        "svcca": args.svcca,
        "svcca_version": sh(f"{shlex.quote(args.svcca)} --version"),
        "svcca_profile": args.profile,
        "git_head": sh(f"git -C {shlex.quote(str(REPO))} rev-parse --short HEAD"),
        "threads": args.threads,
        "quick": args.quick,
    }


# ---------------------------------------------------------------------------------------------
# helpers


def ratio(num, den):
    return num / den if den else float("nan")


def fmt_s(rec):
    s = f"{rec['wall_s']:.2f}"
    if rec.get("timed_out"):
        return f"> {s} (stopped)"
    if rec.get("rc"):
        return f"FAILED (rc={rec['rc']})"
    return s


def failed(*recs):
    """True when a measurement neither succeeded nor was stopped at the time limit."""
    return any(r is None or (r.get("rc") and not r.get("timed_out")) for r in recs)


def mean_of(rec):
    j = rec.get("json") or {}
    return j.get("mean")


TAG = [""]  # suffix of result file names (--tag), so a partial rerun keeps the full tables


def write_results(name, payload, md):
    res = HERE / "out" / "results"
    res.mkdir(parents=True, exist_ok=True)
    name = f"{name}{TAG[0]}"
    (res / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    (res / f"{name}.md").write_text(md)
    print(md)


def loads(*recs):
    """`load 1m, idle%` before the (first) run of each record."""
    return " / ".join(f"{r['load_1m_before'][0]:.1f}, {r['idle_before'][0]:.0%}" for r in recs)


# ---------------------------------------------------------------------------------------------
# dense CCA / SVCCA


def dense(args, sizes, machine):
    data = HERE / "out" / "data" / "dense"
    rows, mem_rows, recs = [], [], []
    svcca = args.svcca

    def pair(d, n):
        folder = data / f"d{d}_n{n}"
        x, y = folder / "x.npy", folder / "y.npy"
        if not (x.exists() and y.exists()):
            folder.mkdir(parents=True, exist_ok=True)
            print(f"generating {folder}", file=sys.stderr, flush=True)
            gen.dense_pair(x, y, n=n, d=d, rank=max(8, d // 8), seed=2000 + d)
        return x, y

    for d, n in sizes["dense_sizes"]:
        x, y = pair(d, n)
        for metric in ("cca", "svcca"):
            extra = ["--keep-variance", "0.99"] if metric == "svcca" else []
            base = [svcca, "compare", str(x), str(y), "--metric", metric, *extra, "--json"]
            sv = measure(f"svcca {metric} {d}x{n}", base, svcca_env(args.threads), args.svcca_timeout)
            svg = None
            if args.google_compat:
                svg = measure(f"svcca {metric} {d}x{n} google-compat", base + ["--google-compat"],
                              svcca_env(args.threads), args.svcca_timeout)
            npr = measure(f"numpy {metric} {d}x{n}", [PY, NP_BENCH, metric, str(x), str(y)],
                          np_env(args.threads), args.np_timeout)
            target = 3.0 if metric == "cca" else 20.0
            recs.append({"d": d, "n": n, "metric": metric, "svcca": sv, "svcca_google": svg, "numpy": npr})
            for side, rec in (("default", sv), ("--google-compat", svg)):
                if rec is None:
                    continue
                if failed(rec, npr):
                    rows.append(f"| {d} × {n:,} | {metric} | {side} | | {fmt_s(rec)} | | {fmt_s(npr)} | | | | | |")
                    continue
                speed = ratio(npr["wall_s"], rec["wall_s"])
                rss = ratio(rec["rss_mb"], npr["rss_mb"])
                m_sv, m_np = mean_of(rec), mean_of(npr)
                delta = f"{abs(m_sv - m_np):.1e}" if (m_sv is not None and m_np is not None) else "n/a"
                dims = ""
                if rec.get("json"):
                    dims = f"{rec['json'].get('dims_x')}/{rec['json'].get('dims_y')}"
                lb = "≥ " if npr["timed_out"] else ""
                rows.append(
                    f"| {d} × {n:,} | {metric} | {side} | {dims} | {fmt_s(rec)} | {rec['rss_mb']:.0f} | "
                    f"{fmt_s(npr)} | {npr['rss_mb']:.0f} | {lb}{speed:.1f}× (≥{target:.0f}×: "
                    f"{'met' if speed >= target else ('not shown: lower bound' if lb else 'NOT met')}) | "
                    f"1/{1 / rss:.1f} (≤1/5: {'met' if rss <= 0.2 else 'NOT met'}) | {delta} | {loads(rec, npr)} |"
                )

    d, ns = sizes["dense_mem"]
    for n in ns:
        x, y = pair(d, n)
        size_mb = (x.stat().st_size + y.stat().st_size) / 1e6
        for metric in ("cca", "svcca"):
            extra = ["--keep-variance", "0.99"] if metric == "svcca" else []
            cmd = [svcca, "compare", str(x), str(y), "--metric", metric, *extra, "--json"]
            sv = measure(f"svcca {metric} {d}x{n} (memory)", cmd, svcca_env(args.threads), args.svcca_timeout)
            recs.append({"d": d, "n": n, "metric": metric, "memory_test": True, "svcca": sv})
            mem_rows.append(f"| svcca compare | {d} × {n:,} | {metric} | {size_mb:,.0f} | {fmt_s(sv)} | "
                            f"{sv['rss_mb']:.0f} | {loads(sv)} |")
        if args.numpy_mem:
            npr = measure(f"numpy cca {d}x{n} (memory)", [PY, NP_BENCH, "cca", str(x), str(y)],
                          np_env(args.threads), args.np_timeout)
            recs.append({"d": d, "n": n, "metric": "cca", "memory_test": True, "numpy": npr})
            mem_rows.append(f"| NumPy google CCA | {d} × {n:,} | cca | {size_mb:,.0f} | {fmt_s(npr)} | "
                            f"{npr['rss_mb']:.0f} | {loads(npr)} |")

    md = (
        f"### Dense CCA and SVCCA (threads: {args.threads} each side; profile: {args.profile})\n\n"
        "| neurons × datapoints | metric | svcca mode | dims kept x/y | svcca s | svcca RSS MB | NumPy s | "
        "NumPy RSS MB | speed-up | RSS svcca/NumPy | abs Δ mean | load 1m, idle before (svcca / NumPy) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Memory against file size (svcca streams row blocks):\n\n"
        "| program | neurons × datapoints | metric | input MB (x+y) | wall s | peak RSS MB | load 1m, idle before |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(mem_rows) + "\n"
    )
    write_results("dense", {"machine": machine, "records": recs}, md)


# ---------------------------------------------------------------------------------------------
# conv layers, DFT method


def conv(args, sizes, machine):
    images, h, w, c = sizes["conv"]
    folder = HERE / "out" / "data" / "conv" / f"{images}x{h}x{w}x{c}"
    x, y = folder / "x.npy", folder / "y.npy"
    if not (x.exists() and y.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        gen.conv_pair(x, y, images, h, w, c, seed=3000)
    base = [args.svcca, "compare", str(x), str(y), "--conv", "dft", "--metric", "cca", "--json"]
    sv = measure("svcca dft", base, svcca_env(args.threads), args.svcca_timeout)
    svg = measure("svcca dft google-compat", base + ["--google-compat"], svcca_env(args.threads),
                  args.svcca_timeout) if args.google_compat else None
    npr = measure("numpy fourier_ccas", [PY, NP_BENCH, "dft", str(x), str(y)], np_env(args.threads), args.np_timeout)
    rows = []
    for side, rec in (("default", sv), ("--google-compat", svg)):
        if rec is None:
            continue
        if failed(rec, npr):
            rows.append(f"| {images} × {h} × {w} × {c} | {side} | {fmt_s(rec)} | | {fmt_s(npr)} | | | | | |")
            continue
        speed = ratio(npr["wall_s"], rec["wall_s"])
        rss = ratio(rec["rss_mb"], npr["rss_mb"])
        m_sv, m_np = mean_of(rec), mean_of(npr)
        delta = f"{abs(m_sv - m_np):.1e}" if (m_sv is not None and m_np is not None) else "n/a"
        rows.append(
            f"| {images} × {h} × {w} × {c} | {side} | {fmt_s(rec)} | {rec['rss_mb']:.0f} | {fmt_s(npr)} | "
            f"{npr['rss_mb']:.0f} | {speed:.1f}× (≥20×: {'met' if speed >= 20 else 'NOT met'}) | "
            f"1/{1 / rss:.1f} (≤1/5: {'met' if rss <= 0.2 else 'NOT met'}) | {delta} | {loads(rec, npr)} |"
        )
    md = (
        f"### Conv layers, DFT method (threads: {args.threads} each side; profile: {args.profile})\n\n"
        "| images × h × w × c | svcca mode | svcca s | svcca RSS MB | NumPy s | NumPy RSS MB | speed-up | "
        "RSS svcca/NumPy | abs Δ mean of all coefs | load 1m, idle before (svcca / NumPy) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    write_results("conv", {"machine": machine, "records": {"svcca": sv, "svcca_google": svg, "numpy": npr}}, md)


# ---------------------------------------------------------------------------------------------
# all-pairs sweep


def _sweep_data(cfg):
    root = HERE / "out" / "data" / "sweep" / f"s{cfg['seeds']}_l{cfg['layers']}_n{cfg['n']}_d{cfg['d']}"
    src = root / "src"
    keys = [(s, f"l{li}") for s in range(cfg["seeds"]) for li in range(cfg["layers"])]
    paths = {k: src / "bench" / f"seed{k[0]}" / "step0" / f"{k[1]}.npy" for k in keys}
    if not all(p.exists() for p in paths.values()):
        for p in paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {len(paths)} representations under {src}", file=sys.stderr, flush=True)
        gen.sweep_reps(paths, n=cfg["n"], d=cfg["d"], rank=cfg["rank"], seed=5000)
    return root, src, paths


def _key_of_record(k):
    """(seed, layer) from a results.json key: a dict of keys, or a selector-like string."""
    if isinstance(k, dict):
        return (str(k.get("seed")), str(k.get("layer")))
    m_seed = re.search(r"seed[=:\s\"]*(\d+)", str(k))
    m_layer = re.search(r"layer[=:\s\"]*(\w+)", str(k))
    return (m_seed.group(1) if m_seed else None, m_layer.group(1) if m_layer else None)


def _file_key(path):
    p = Path(path)
    return (p.parent.parent.name.removeprefix("seed"), p.stem)


def _sweep_results(out_dir):
    f = Path(out_dir) / "results.json"
    if not f.exists():
        return None
    data = json.loads(f.read_text())
    recs = data if isinstance(data, list) else data.get("results") or data.get("pairs") or []
    got = {}
    for r in recs:
        if r.get("metric", "svcca") != "svcca":
            continue
        a, b = _key_of_record(r.get("a")), _key_of_record(r.get("b"))
        got[frozenset([a, b]) if a != b else frozenset([a])] = r.get("mean")
    return got


def sweep(args, sizes, machine):
    cfg = sizes["sweep"]
    root, src, paths = _sweep_data(cfg)
    files = sorted(str(p) for p in paths.values())
    n_reps = len(files)
    pairs_all = list(itertools.combinations(range(n_reps), 2))
    n_pairs = len(pairs_all)
    dataset = root / "dataset"
    recs = {}

    # Ingest once (also an ingest-throughput number).
    if not (dataset / "manifest.json").exists() or args.reingest:
        cmd = [args.svcca, "ingest", str(src), f"file://{dataset}", "--pattern",
               "{run}/seed{seed}/step{step}/{layer}.npy"]
        if args.reingest:
            cmd.append("--force")
        recs["ingest"] = measure("svcca ingest", cmd, svcca_env(args.threads), args.svcca_timeout, repeat_below_s=0)
        recs["ingest"]["bytes"] = sum(Path(f).stat().st_size for f in files)

    def run_sweep(workers, cores):
        """`svcca sweep` shares the cores it may run on between its workers (threads = cores /
        workers), so 1 worker on 1 core is pinned with taskset."""
        out = root / f"sweep_out_w{workers}_c{cores}"
        # The sweep keeps its cache beside the output (`OUT.cache`): a run that found one would
        # reuse the statistics of the last and measure nothing.
        subprocess.run(["rm", "-rf", str(out), f"{out}.cache"], check=True)
        cmd = [args.svcca, "sweep", f"file://{dataset}", "--out", f"file://{out}", "--compare", "all-pairs",
               "--metric", "svcca", "--workers", str(workers), *shlex.split(args.sweep_extra)]
        if cores < (os.cpu_count() or 1):
            cmd = ["taskset", "-c", ",".join(str(c) for c in range(cores)), *cmd]
        rec = measure(f"svcca sweep workers={workers} cores={cores}", cmd, svcca_env(max(1, cores // workers)),
                      args.svcca_timeout, repeat_below_s=0)
        rec["results"] = _sweep_results(out)
        return rec

    recs["sweep_w2"] = run_sweep(2, args.threads)
    if args.sweep_only:
        recs["sweep_w1"] = run_sweep(1, 1)
        t1, t2 = recs["sweep_w1"]["wall_s"], recs["sweep_w2"]["wall_s"]
        for r in (recs["sweep_w1"], recs["sweep_w2"]):
            if r.get("results") is not None:
                r["results_pairs"] = len(r.pop("results"))
        md = (f"#### `svcca sweep` only, {args.profile}\n\n"
              f"| workers | cores | wall s | peak RSS MB | load 1m, idle before |\n|---|---|---|---|---|\n"
              f"| 2 | 2 | {fmt_s(recs['sweep_w2'])} | {recs['sweep_w2']['rss_mb']:.0f} | {loads(recs['sweep_w2'])} |\n"
              f"| 1 | 1 (taskset) | {fmt_s(recs['sweep_w1'])} | {recs['sweep_w1']['rss_mb']:.0f} | "
              f"{loads(recs['sweep_w1'])} |\n\nParallel efficiency T1 / (2·T2) = {t1 / (2 * t2):.0%}.\n")
        write_results(f"sweep-only-{args.sweep_only}", {"machine": machine, "records": recs}, md)
        return

    np_env_t = np_env(args.threads)
    recs["whiten_once"] = measure("numpy whiten-once", [PY, NP_BENCH, "whiten-once", str(src)], np_env_t,
                                  args.np_timeout, repeat_below_s=0)
    recs["pairs_cov"] = measure(f"numpy covariance loop ({args.cov_pairs} pairs)",
                                [PY, NP_BENCH, "pairs-cov", str(src), "--pairs", str(args.cov_pairs)],
                                np_env_t, args.np_timeout, repeat_below_s=0)
    recs["pairs_recipe"] = measure(f"numpy recipe loop ({args.recipe_pairs} pairs)",
                                   [PY, NP_BENCH, "pairs-recipe", str(src), "--pairs", str(args.recipe_pairs)],
                                   np_env_t, args.np_timeout, repeat_below_s=0)

    # A loop of `svcca compare` over the first P pairs, in one shell script (one process per pair).
    loop = root / "compare_loop.sh"
    lines = ["set -e"]
    for i, j in pairs_all[: args.compare_pairs]:
        lines.append(f"{shlex.quote(args.svcca)} compare {shlex.quote(files[i])} {shlex.quote(files[j])} "
                     "--metric svcca --keep-variance 0.99 --json")
    loop.write_text("\n".join(lines) + "\n")
    recs["compare_loop"] = measure(f"svcca compare loop ({args.compare_pairs} pairs)", ["bash", str(loop)],
                                   svcca_env(args.threads), args.svcca_timeout, repeat_below_s=0)
    # Means of the compare loop (one JSON object per line or pretty-printed objects, one per pair).
    cl_out = recs["compare_loop"].pop("json_all", None) or (
        [recs["compare_loop"]["json"]] if recs["compare_loop"].get("json") else [])
    recs["compare_loop"].pop("json", None)
    recs["compare_loop"]["pairs_done"] = min(args.compare_pairs, n_pairs)

    recs["sweep_w1"] = run_sweep(1, 1)
    if args.threads > 1 and args.w1_allcores:
        recs["sweep_w1_allcores"] = run_sweep(1, args.threads)
    recs["gemm"] = measure("numpy GEMM/SYRK rates", [PY, NP_BENCH, "gemm", str(cfg["n"]), str(cfg["d"]), "40"],
                           np_env_t, args.np_timeout, repeat_below_s=0)
    recs["gemm_1t"] = measure("numpy GEMM/SYRK rates (1 thread)",
                              [PY, NP_BENCH, "gemm", str(cfg["n"]), str(cfg["d"]), "40"],
                              np_env(1), args.np_timeout, repeat_below_s=0)

    # --- derived numbers
    def per_pair_extrapolation(rec, total_pairs):
        j = rec.get("json") or {}
        times = j.get("pair_seconds") or []
        if not times:
            return None
        per_pair = statistics.mean(times)
        startup = rec["wall_s"] - sum(times)
        return startup + per_pair * total_pairs, per_pair, len(times)

    wo = recs["whiten_once"].get("json") or {}
    ks = wo.get("ks") or []
    n, d = cfg["n"], cfg["d"]
    k_total = sum(ks)
    gemm_flops = n * d * d * n_reps + 2 * n * d * (sum(ks)) + n * k_total * k_total  # symmetric products once
    eig_flops = n_reps * 9 * d**3  # dense symmetric eigendecomposition with vectors, ~9 d³ (rough)

    sweep2 = recs["sweep_w2"]
    t_sweep = sweep2["wall_s"]
    rows = []

    def row(name, rec, total_wall, pairs_measured, extrap, target):
        if failed(rec) or failed(sweep2):
            rows.append(f"| {name} | {pairs_measured} | {fmt_s(rec)} | | | | |")
            return
        speed = ratio(total_wall, t_sweep)
        if target:
            met = "met" if speed >= target else "NOT met"
            tgt = f"{speed:.1f}× (≥{target:g}×: {met})"
        else:
            tgt = "—"
        how = "extrapolated" if extrap else ("stopped: lower bound" if rec.get("timed_out") else "measured")
        rows.append(f"| {name} | {pairs_measured} | {rec['wall_s']:.2f} | {total_wall:,.1f} ({how}) | "
                    f"{rec['rss_mb']:.0f} | {tgt} | {loads(rec)} |")

    row("`svcca sweep` (2 workers)", sweep2, t_sweep, n_pairs, False, None)
    for key, name, target in (("pairs_recipe", "NumPy loop: google recipe (SVD of data, CCA)", 100),
                              ("pairs_cov", "NumPy loop: covariance route, each pair independent", 10)):
        rec = recs[key]
        ex = per_pair_extrapolation(rec, n_pairs)
        if ex:
            total, per_pair, done = ex
            row(name, rec, total, done, done < n_pairs, target)
            rec["extrapolated_total_s"] = total
            rec["per_pair_s"] = per_pair
        else:
            row(name, rec, rec["wall_s"], 0, False, target)
    row("NumPy whiten-once (best NumPy)", recs["whiten_once"], recs["whiten_once"]["wall_s"], n_pairs, False, 2)
    cl = recs["compare_loop"]
    done = cl["pairs_done"]
    cl_total = cl["wall_s"] / done * n_pairs if done else float("nan")
    cl["extrapolated_total_s"] = cl_total
    row("loop of `svcca compare`", cl, cl_total, done, done < n_pairs, 5)

    # Agreement: sweep vs whiten-once NumPy, on every pair present in both.
    agree = "n/a"
    sweep_means = sweep2.get("results")
    if sweep_means and wo.get("results"):
        fkeys = [_file_key(f) for f in wo["files"]]
        diffs = []
        for r in wo["results"]:
            key = frozenset([fkeys[r["a"]], fkeys[r["b"]]])
            if key in sweep_means and sweep_means[key] is not None:
                diffs.append(abs(sweep_means[key] - r["mean"]))
        if diffs:
            agree = f"max abs Δ mean over {len(diffs)} pairs: {max(diffs):.1e}"
        sweep2["results_pairs"] = len(sweep_means)
        sweep2.pop("results")
    if cl_out and wo.get("results"):
        diffs = [abs(o["mean"] - r["mean"]) for o, r in zip(cl_out, wo["results"]) if o.get("mean") is not None]
        if diffs:
            agree += f"; compare loop vs whiten-once NumPy over {len(diffs)} pairs: {max(diffs):.1e}"
    if recs["sweep_w1"].get("results") is not None:
        recs["sweep_w1"]["results_pairs"] = len(recs["sweep_w1"].pop("results"))

    t1, t2 = recs["sweep_w1"]["wall_s"], sweep2["wall_s"]
    w1all = "not run"
    if recs.get("sweep_w1_allcores"):
        r = recs["sweep_w1_allcores"]
        w1all = f"{fmt_s(r)} s, peak RSS {r['rss_mb']:.0f} MB"
        if r.get("results") is not None:
            r["results_pairs"] = len(r.pop("results"))
    eff = t1 / (2 * t2) if t2 else float("nan")
    g = (recs["gemm"].get("json") or {}).get("rates", {})
    g1 = (recs["gemm_1t"].get("json") or {}).get("rates", {})
    syrk2 = g.get("syrk_gram_nd", {}).get("gflops")
    syrk1 = g1.get("syrk_gram_nd", {}).get("gflops")
    sweep_rate = gemm_flops / t_sweep / 1e9 if t_sweep else float("nan")
    ingest = recs.get("ingest")
    ingest_line = ""
    if ingest:
        ingest_line = (f"\nIngest of the {n_reps} `.npy` files ({ingest['bytes'] / 1e6:,.0f} MB) into the dataset: "
                       f"{ingest['wall_s']:.1f} s ({ingest['bytes'] / 1e6 / ingest['wall_s']:.0f} MB/s), "
                       f"peak RSS {ingest['rss_mb']:.0f} MB.\n")

    md = (
        f"### All-pairs SVCCA (99%), {n_reps} representations × {d} neurons × {n:,} datapoints, "
        f"{n_pairs} pairs (threads: {args.threads} each side; profile: {args.profile})\n\n"
        f"Directions kept per representation (NumPy covariance route): min {min(ks) if ks else 'n/a'}, "
        f"max {max(ks) if ks else 'n/a'}, total {k_total}. Agreement sweep vs whiten-once NumPy: {agree}.\n\n"
        "| variant | pairs measured | measured s | all pairs s | peak RSS MB | sweep speed-up (target) | load 1m, idle before |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Flops of the whiten-once plan (symmetric products counted once): Gram per representation "
        f"{n_reps} × n·d² + projections 2·n·d·Σk + all-pairs Gram n·(Σk)² = {gemm_flops / 1e9:,.0f} GFLOP "
        f"(+ ~{eig_flops / 1e9:,.0f} GFLOP in {n_reps} eigendecompositions of {d} × {d}, rough 9d³ each). "
        f"Sweep effective rate on the GEMM part: {sweep_rate:.1f} GFLOP/s; NumPy/OpenBLAS float64 SYRK "
        f"(n·d² at {n:,} × {d}) on this machine: {syrk2} GFLOP/s with {args.threads} threads, {syrk1} with 1.\n\n"
        f"1 → 2 workers: {t1:.2f} s (1 worker pinned to 1 core with taskset) → {t2:.2f} s (2 workers on "
        f"2 cores, 1 thread each); parallel efficiency T1 / (2·T2) = {eff:.0%} (target ≥ 85%: "
        f"{'met' if eff >= 0.85 else 'NOT met'}). One worker with 2 threads on both cores: "
        f"{w1all}.\n" + ingest_line
    )
    write_results("sweep", {"machine": machine, "config": cfg, "ks": ks, "gemm_gflop": gemm_flops / 1e9,
                             "records": recs, "compare_loop_stdout_json": cl_out}, md)


# The items `--only` names, in the order they run by default; OLD_NAMES maps the names they had
# before (kept so that older command lines still run).
ITEMS = {"dense": dense, "conv": conv, "sweep": sweep}
OLD_NAMES = {"issue2": "dense", "issue3": "conv", "issue5": "sweep"}


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", type=lambda s: OLD_NAMES.get(s, s), choices=list(ITEMS),
                    help="run only this item (repeatable): " + ", ".join(ITEMS))
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the harness itself")
    ap.add_argument("--svcca", default=str(REPO / "target" / "debug" / "svcca"))
    ap.add_argument("--profile", default="dev (numeric crates at opt-level 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--np-timeout", type=int, default=600)
    ap.add_argument("--svcca-timeout", type=int, default=1200)
    ap.add_argument("--google-compat", action="store_true", help="also time svcca --google-compat")
    ap.add_argument("--numpy-mem", action="store_true", help="also run NumPy CCA at both memory-test sizes")
    ap.add_argument("--recipe-pairs", type=int, default=3)
    ap.add_argument("--cov-pairs", type=int, default=60)
    ap.add_argument("--compare-pairs", type=int, default=60)
    ap.add_argument("--sweep-extra", default="", help="extra arguments for `svcca sweep`")
    ap.add_argument("--reingest", action="store_true")
    ap.add_argument("--tag", default="", help="suffix for result file names, e.g. -release")
    ap.add_argument("--dense-d", type=int, help="dense: only this many neurons (and the smaller memory size)")
    ap.add_argument("--issue2-d", dest="dense_d", type=int, help=argparse.SUPPRESS)  # older name of --dense-d
    ap.add_argument("--w1-allcores", action="store_true", help="sweep: also 1 worker with all cores")
    ap.add_argument("--sweep-only", metavar="LABEL", help="sweep: only the sweeps (e.g. another build)")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each run wait until this fraction of the cores is idle (e.g. 0.8)")
    ap.add_argument("--wait-max", type=int, default=120, help="longest wait for --wait-idle, s")
    args = ap.parse_args()
    args.svcca = str(Path(args.svcca).resolve())
    sizes = dict(QUICK if args.quick else FULL)
    TAG[0] = args.tag
    if args.dense_d:
        sizes["dense_sizes"] = [(d, n) for d, n in sizes["dense_sizes"] if d == args.dense_d]
        d, ns = sizes["dense_mem"]
        sizes["dense_mem"] = (d, ns[:1])
    QUIET.update(idle=args.wait_idle, max_wait=args.wait_max)
    machine = machine_info(args)
    print(json.dumps(machine, indent=1), file=sys.stderr)
    for item in args.only or list(ITEMS):
        ITEMS[item](args, sizes, machine)


if __name__ == "__main__":
    main()
