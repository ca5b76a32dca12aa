#!/usr/bin/env python3
"""The NumPy side of the benchmarks: one measured process per invocation.

`run.py` starts this under `/usr/bin/time -v` (wall time and peak RSS of the whole process, Python
start-up and file reading included, as for the `svcca` binary). It prints one JSON object on its
last stdout line: the numbers computed (to check both sides agree) and per-phase timings.

Modes (inputs are float32 `.npy` files, `[datapoints, neurons]` or `[images, h, w, c]`):
  cca X Y                 google's get_cca_similarity (epsilon 1e-10, threshold 0.98)
  svcca X Y [--keep F]    google's SVCCA tutorial recipe (centre, SVD of the data, keep F, CCA)
  dft X Y                 google's fourier_ccas (per-frequency complex CCA, complex64 FFT)
  pairs-recipe DIR        loop over pairs of the SVCCA recipe   (--pairs P: only the first P pairs)
  pairs-cov DIR           loop over pairs, covariance route, every pair recomputed independently
  whiten-once DIR         whiten each representation once, one Gram of all whitened data, SVD/pair
  gemm N D K              float64 GEMM/SYRK rates at the sweep's shapes (for the GEMM-rate column)

Inputs are widened to float64 once loaded, as google's code and its users work in float64.
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_numpy as ref  # noqa: E402

T0 = time.perf_counter()


def blas_info():
    try:
        import threadpoolctl

        return [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        return "threadpoolctl not installed"


def load_google(path):
    """`[datapoints, neurons]` float32 file -> google's `[neurons, datapoints]` float64 array."""
    return np.ascontiguousarray(np.load(path).T, dtype=np.float64)


def rep_files(root):
    files = sorted(Path(root).rglob("*.npy"))
    if not files:
        raise SystemExit(f"no .npy files under {root}")
    return files


def all_pairs(n, include_self):
    if include_self:
        return list(itertools.combinations_with_replacement(range(n), 2))
    return list(itertools.combinations(range(n), 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--keep", type=float, default=0.99)
    ap.add_argument("--pairs", type=int, default=None, help="only the first P pairs (then extrapolate)")
    ap.add_argument("--include-self", action="store_true", help="pairs (i, i) too")
    opts = ap.parse_args()
    phases = {}
    out = {"mode": opts.mode, "blas": blas_info(), "numpy": np.__version__}

    def mark(name, t):
        phases[name] = round(time.perf_counter() - t, 4)
        return time.perf_counter()

    t = time.perf_counter()
    if opts.mode in ("cca", "svcca"):
        x, y = load_google(opts.args[0]), load_google(opts.args[1])
        t = mark("load", t)
        if opts.mode == "cca":
            r = ref.get_cca_similarity(x, y, epsilon=1e-10, threshold=0.98)
        else:
            r = ref.svcca_recipe(x, y, keep=opts.keep, epsilon=1e-10)
            out.update(k1=r["k1"], k2=r["k2"])
        t = mark("compute", t)
        out.update(mean=r["mean_all_coefs"], google_mean=r["mean"], n_coefs=len(r["cca_coef1"]))
    elif opts.mode == "dft":
        x, y = np.load(opts.args[0]), np.load(opts.args[1])
        t = mark("load", t)
        r = ref.fourier_ccas(x, y)
        t = mark("compute", t)
        out.update(mean=r["mean_all_coefs"], mean_of_location_means=r["mean_of_location_means"],
                   n_locations=r["n_locations"])
    elif opts.mode in ("pairs-recipe", "pairs-cov"):
        files = rep_files(opts.args[0])
        pairs = all_pairs(len(files), opts.include_self)
        total = len(pairs)
        if opts.pairs is not None:
            pairs = pairs[: opts.pairs]
        times, results = [], []
        for i, j in pairs:
            tp = time.perf_counter()
            if opts.mode == "pairs-recipe":
                r = ref.svcca_recipe(load_google(files[i]), load_google(files[j]), keep=opts.keep)
                results.append({"a": i, "b": j, "mean": r["mean_all_coefs"], "k": [r["k1"], r["k2"]]})
            else:
                zi = ref.whiten(np.load(files[i]), keep=opts.keep)
                zj = ref.whiten(np.load(files[j]), keep=opts.keep)
                s = ref.cca_whitened(zi, zj)
                results.append({"a": i, "b": j, "mean": float(np.mean(s)), "k": [zi.shape[1], zj.shape[1]]})
            times.append(time.perf_counter() - tp)
        t = mark("pairs", t)
        out.update(files=[str(f) for f in files], pairs_total=total, pairs_done=len(pairs),
                   pair_seconds=times, results=results)
    elif opts.mode == "whiten-once":
        files = rep_files(opts.args[0])
        zs = [ref.whiten(np.load(f), keep=opts.keep) for f in files]
        t = mark("whiten", t)
        ks = [z.shape[1] for z in zs]
        n = zs[0].shape[0]
        zall = np.concatenate(zs, axis=1)
        del zs
        gram = zall.T @ zall  # one SYRK over all whitened data
        gram /= n - 1
        t = mark("gram", t)
        offs = np.concatenate([[0], np.cumsum(ks)])
        results = []
        for i, j in all_pairs(len(files), opts.include_self):
            block = gram[offs[i] : offs[i + 1], offs[j] : offs[j + 1]]
            s = np.linalg.svd(block, compute_uv=False)
            results.append({"a": i, "b": j, "mean": float(np.mean(s)), "k": [ks[i], ks[j]]})
        t = mark("pairs", t)
        out.update(files=[str(f) for f in files], ks=ks, pairs_total=len(results), results=results)
    elif opts.mode == "gemm":
        n, d, k = (int(a) for a in opts.args)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, d))
        w = rng.standard_normal((d, k))
        x2 = x.copy()  # a different buffer: NumPy cannot use SYRK, so a full GEMM
        rates = {}
        for name, fn, flops in (
            ("syrk_gram_nd", lambda: x.T @ x, n * d * d),  # symmetric: half of 2nd²
            ("gemm_gram_nd", lambda: x.T @ x2, 2 * n * d * d),
            ("gemm_project_ndk", lambda: x @ w, 2 * n * d * k),
        ):
            fn()
            tt = time.perf_counter()
            reps = 3
            for _ in range(reps):
                fn()
            dt = (time.perf_counter() - tt) / reps
            rates[name] = {"seconds": round(dt, 4), "gflops": round(flops / dt / 1e9, 1)}
        out["rates"] = rates
    else:
        raise SystemExit(f"unknown mode {opts.mode}")
    out["phases"] = phases
    out["seconds_in_python"] = round(time.perf_counter() - T0, 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
