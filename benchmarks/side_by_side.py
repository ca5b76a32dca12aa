#!/usr/bin/env python3
"""The all-pairs sweep against whiten-once NumPy, side by side, alternating.

Each round runs every `--svcca` binary's `svcca sweep` (2 workers, 1 thread each) and NumPy's
whiten-once plan (2 threads) once, in turn, so that load from other work falls on all of them
alike; the table keeps the median wall time of the rounds, the CPU share `/usr/bin/time` reports,
the peak RSS, the load average before each run and the largest |Δ mean| of any pair against
NumPy's. The data and the dataset are those of `run.py --only sweep` (run that first, or pass
`--dataset` for a dataset ingested by another binary).

    benchmarks/.venv/bin/python benchmarks/side_by_side.py --svcca NAME=PATH[@DATASET] ... \
        [--extra 'NAME=--precision mixed'] [--rounds 3] [--no-report]
"""
import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402


def cpu_seconds(rec):
    """User + system seconds; from wall time and CPU share for records made without them."""
    if rec.get("cpu_s"):
        return rec["cpu_s"]
    return rec["wall_s"] * float(str(rec.get("cpu_pct") or "0").rstrip("%")) / 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--svcca", action="append", required=True,
                    help="NAME=PATH to an svcca binary, optionally @DATASET to sweep another dataset")
    ap.add_argument("--extra", action="append", default=[],
                    help="NAME=ARGS: more `svcca sweep` flags for that side, e.g. "
                         "'mixed=--precision mixed'")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-report", action="store_true",
                    help="sweep with --no-report (no analyses, no report): only what NumPy computes")
    ap.add_argument("--out", default=str(HERE / "out" / "results" / "side_by_side.json"))
    args = ap.parse_args()

    cfg = run.FULL["sweep"]
    root, src, _paths = run._sweep_data(cfg)
    dataset = root / "dataset"
    sides = []
    for spec in args.svcca:
        name, _, rest = spec.partition("=")
        binary, _, ds = rest.partition("@")
        sides.append((name, binary, Path(ds) if ds else dataset))

    extra = {}
    for spec in args.extra:
        name, _, flags = spec.partition("=")
        extra.setdefault(name, []).extend(shlex.split(flags))
    records = {name: [] for name, _, _ in sides}
    records["numpy whiten-once"] = []
    means = {}
    # Every run writes a new output folder (its cache beside it, `OUT.cache`), so every run
    # starts without a cache; they are all deleted at the end. Deleting a run's thousands of
    # files just before the next one made ext4 slow to create new files for about a minute
    # (it skips recently freed inodes), a cost NumPy, which writes nothing, never paid.
    runs_dir = root / f"side_by_side_runs_{int(time.time())}"
    for r in range(args.rounds):
        for name, binary, ds in sides:
            out = runs_dir / f"{name}_round{r}"
            cmd = [binary, "sweep", f"file://{ds}", "--out", f"file://{out}", "--compare", "all-pairs",
                   "--metric", "svcca", "--workers", str(args.threads)]
            if args.no_report:
                cmd.append("--no-report")
            cmd.extend(extra.get(name, []))
            rec = run.measure_once(cmd, run.svcca_env(1), 900)
            rec["round"] = r
            means[name] = run._sweep_results(out)
            records[name].append(rec)
            print(f"round {r} {name}: {rec['wall_s']} s, CPU {rec['cpu_pct']}, rc {rec['rc']}, "
                  f"load {rec['load_1m_before']}", file=sys.stderr, flush=True)
        rec = run.measure_once([run.PY, run.NP_BENCH, "whiten-once", str(src)], run.np_env(args.threads), 900)
        rec["round"] = r
        records["numpy whiten-once"].append(rec)
        np_json = rec.pop("json", None) or {}
        rec.pop("json_all", None)
        if np_json.get("results"):
            fkeys = [run._file_key(f) for f in np_json["files"]]
            means["numpy"] = {frozenset([fkeys[p["a"]], fkeys[p["b"]]]): p["mean"] for p in np_json["results"]}
        print(f"round {r} numpy: {rec['wall_s']} s, CPU {rec['cpu_pct']}, load {rec['load_1m_before']}",
              file=sys.stderr, flush=True)

    rows = ["| variant | median wall s (runs) | median CPU s | CPU % (runs) | peak RSS MB | load 1m before (runs) | max abs Δ mean vs NumPy |",
            "|---|---|---|---|---|---|---|"]
    np_wall = statistics.median(r["wall_s"] for r in records["numpy whiten-once"])
    summary = {}
    for name, recs in records.items():
        walls = [r["wall_s"] for r in recs]
        med = statistics.median(walls)
        delta = "—"
        if name in means and means[name] and means.get("numpy"):
            diffs = [abs(v - means["numpy"][k]) for k, v in means[name].items()
                     if k in means["numpy"] and v is not None]
            delta = f"{max(diffs):.1e} over {len(diffs)} pairs" if diffs else "no pairs matched"
        speed = "" if name == "numpy whiten-once" else f" ({np_wall / med:.2f}× NumPy)"
        runs = ", ".join("%.2f" % w for w in walls)
        cpu = ", ".join(str(r["cpu_pct"]) for r in recs)
        cpu_s = statistics.median(cpu_seconds(r) for r in recs)
        load = ", ".join("%.1f" % r["load_1m_before"] for r in recs)
        rss = max(r["rss_mb"] for r in recs)
        rows.append(f"| {name} | {med:.2f}{speed} ({runs}) | {cpu_s:.1f} | {cpu} | {rss:.0f} | {load} | {delta} |")
        summary[name] = {"median_wall_s": med, "runs": recs}
    run.subprocess.run(["rm", "-rf", str(runs_dir)], check=True)
    table = "\n".join(rows)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
