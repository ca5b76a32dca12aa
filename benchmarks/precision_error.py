"""How far one sweep's numbers are from another's: max |Δ mean| and max |Δ coefficient| over the
pairs both hold (matched by keys and metric), from each output's pairs.parquet. Used to state the
error of `--precision mixed` against the f64 sweep of the same job.

Usage: python benchmarks/precision_error.py F64_OUTPUT MIXED_OUTPUT
"""

import sys
from pathlib import Path

import pyarrow.parquet as pq


def pairs(out):
    table = pq.read_table(
        Path(out) / "pairs.parquet",
        columns=["a_key", "b_key", "metric", "mean", "coefficients", "dims_a", "dims_b"],
    ).to_pylist()
    return {(r["a_key"], r["b_key"], r["metric"]): r for r in table}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    exact, other = pairs(sys.argv[1]), pairs(sys.argv[2])
    common = sorted(set(exact) & set(other))
    if not common:
        sys.exit("the two outputs hold no pair in common")
    d_mean = d_coef = 0.0
    dims_differ = 0
    for key in common:
        a, b = exact[key], other[key]
        d_mean = max(d_mean, abs(a["mean"] - b["mean"]))
        ca, cb = a["coefficients"] or [], b["coefficients"] or []
        if (a["dims_a"], a["dims_b"]) != (b["dims_a"], b["dims_b"]) or len(ca) != len(cb):
            dims_differ += 1
            continue
        d_coef = max([d_coef] + [abs(x - y) for x, y in zip(ca, cb)])
    print(
        f"{len(common)} pairs: max |Δ mean| {d_mean:.2e}, max |Δ coefficient| {d_coef:.2e}, "
        f"{dims_differ} with other kept dims"
    )


if __name__ == "__main__":
    main()
