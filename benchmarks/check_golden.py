#!/usr/bin/env python3
"""Checks the NumPy references in `ref_numpy.py` against `fixtures/golden` (google's own numbers).

The benchmark is only like-for-like if the NumPy side computes what google computes, so every
golden CCA, SVCCA and DFT case is run through the reference and compared with the stored result
(coefficients, truncated mean, mean of all, kept/dropped neurons). Recipe-only inputs are rebuilt
with the fixtures' own `materialize.py`. PWCCA is not benchmarked and not checked.

Usage: python check_golden.py [--skip-large]   (exit 1 on any mismatch)
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "fixtures" / "golden"
sys.path.insert(0, str(HERE))
import ref_numpy as ref  # noqa: E402

TOL_DENSE = 1e-9
TOL_DFT = 1e-5


def load_materialize():
    spec = importlib.util.spec_from_file_location("materialize", GOLDEN / "materialize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def inputs(case_dir, case, mat):
    if case.get("inputs_stored_as_npy", True):
        return np.load(case_dir / "acts1.npy"), np.load(case_dir / "acts2.npy")
    arrays = mat.build(case["recipe"])
    return arrays["acts1"], arrays["acts2"]


def max_abs(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def check_case(name, case, a1, a2):
    res = case["result"]
    fn = res["function"]
    if "error" in res:
        return None, "google raised; nothing to compare"
    if fn.startswith("cca_core"):
        got = ref.get_cca_similarity(a1, a2, epsilon=res["epsilon"], threshold=res["threshold"])
        errs = {
            "coefs": max_abs(got["cca_coef1"], res["cca_coef1"]),
            "mean": abs(got["mean"] - res["mean"][0]),
            "mean_all": abs(got["mean_all_coefs"] - res["mean_all_coefs"]),
        }
        same_idx = got["x_removed_idx"] == res["x_removed_idx"] and got["y_removed_idx"] == res["y_removed_idx"]
        ok = max(errs.values()) <= TOL_DENSE and same_idx
        return ok, f"{errs} removed-idx {'match' if same_idx else 'DIFFER'}"
    if fn.startswith("svcca"):
        k = None
        if res["k_rule"] == "fixed":
            k = res["k1"]
        keep = float(res["k_rule"].split(":")[1]) if res["k_rule"].startswith("var") else 0.99
        got = ref.svcca_recipe(a1, a2, k=k, keep=keep, epsilon=res["epsilon"])
        errs = {
            "coefs": max_abs(got["cca_coef1"], res["cca_coef1"]),
            "mean_all": abs(got["mean_all_coefs"] - res["mean_all_coefs"]),
        }
        same_k = (got["k1"], got["k2"]) == (res["k1"], res["k2"])
        # The covariance route must pick the same k and give the same coefficients up to the ridge.
        z1 = ref.whiten(a1.T, keep=keep) if k is None else None
        cov_note = ""
        if z1 is not None:
            z2 = ref.whiten(a2.T, keep=keep)
            s = ref.cca_whitened(z1, z2)
            cov_err = max_abs(s, res["cca_coef1"])
            cov_note = f" covariance-route k=({z1.shape[1]},{z2.shape[1]}) coefs err {cov_err:.1e}"
            same_k = same_k and (z1.shape[1], z2.shape[1]) == (res["k1"], res["k2"]) and cov_err < 1e-8
        ok = max(errs.values()) <= TOL_DENSE and same_k
        return ok, f"{errs} k=({got['k1']},{got['k2']}){cov_note}"
    if fn.startswith("dft_ccas"):
        got = ref.fourier_ccas(a1, a2, epsilon=res["effective_epsilon"], threshold=res["threshold"])
        want_locs = res["locations"]
        coef_err = max(max_abs(g["cca_coef1"], w["cca_coef1"]) for g, w in zip(got["locations"], want_locs))
        errs = {
            "coefs": coef_err,
            "mean_all": abs(got["mean_all_coefs"] - res["mean_all_coefs"]),
            "mean_of_means": abs(got["mean_of_location_means"] - res["mean_of_location_means"]),
        }
        ok = max(errs.values()) <= TOL_DFT and got["n_locations"] == res["n_locations"]
        return ok, f"{errs} locations={got['n_locations']}"
    return None, f"not benchmarked ({fn})"


def main():
    skip_large = "--skip-large" in sys.argv
    mat = load_materialize()
    failures = 0
    for exp in sorted(GOLDEN.glob("*/expected.json")):
        name = exp.parent.name
        if skip_large and name == "cca_large_b":
            print(f"{name:24s} SKIP (--skip-large)")
            continue
        case = json.loads(exp.read_text())
        a1, a2 = inputs(exp.parent, case, mat)
        ok, msg = check_case(name, case, a1, a2)
        tag = "SKIP" if ok is None else ("ok" if ok else "FAIL")
        failures += ok is False
        print(f"{name:24s} {tag:4s} {msg}")
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
