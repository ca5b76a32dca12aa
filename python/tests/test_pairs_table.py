"""pairs.parquet: the sweep's pairs as one long-form table that pandas and pyarrow open with one
column per key field; its coefficients are the ones load_results returns."""

import json

import numpy as np
import pytest

import svcca

from conftest import FIXTURES

pd = pytest.importorskip("pandas")
pq = pytest.importorskip("pyarrow.parquet")

DIGITS = FIXTURES / "digits" / "mlp"
KEY_FIELDS = ["run", "seed", "step", "layer", "depth", "layout", "key", "tag_lr"]


def tagged_sweep(tmp_path, coefficients=None):
    """Two learning rates (tags that differ only in value) x two seeds of one layer."""
    ds = svcca.Dataset(tmp_path / "ds")
    for lr, step in (("0.1", 2250), ("0.01", 400)):
        for seed in (0, 1):
            acts = np.load(DIGITS / f"seed{seed}" / f"step{step}" / "h1.npy")
            ds.write(acts, run="mlp", seed=seed, step=2250, layer="h1", lr=lr)
    out = tmp_path / "out"
    svcca.sweep(ds, out=out, compare="all-pairs", metrics=["svcca", "pwcca"], report=False)
    return out


def test_pandas_and_pyarrow_open_it_with_one_column_per_key_field(tmp_path):
    out = tagged_sweep(tmp_path)
    results = json.loads((out / "results.json").read_text())
    frame = pd.read_parquet(out / "pairs.parquet")
    table = pq.read_table(out / "pairs.parquet")
    assert list(frame.columns) == table.column_names
    for side in ("a", "b"):
        for field in KEY_FIELDS:
            assert f"{side}_{field}" in frame.columns, frame.columns
    for column in ("metric", "mean", "google_mean", "dims_a", "dims_b", "dropped_a", "dropped_b",
                   "datapoints", "warnings", "coefficients", "weights"):
        assert column in frame.columns, column
    # One row per (pair, metric), in results.json order, with the same numbers.
    assert len(frame) == len(results["pairs"]) == 6 * 2
    for row, pair in zip(frame.itertuples(), results["pairs"]):
        for side in ("a", "b"):
            key = pair[side]
            assert getattr(row, f"{side}_run") == key["run"]
            assert getattr(row, f"{side}_seed") == key["seed"]
            assert getattr(row, f"{side}_step") == key["step"]
            assert getattr(row, f"{side}_layer") == key["layer"]
            assert getattr(row, f"{side}_tag_lr") == key["tags"]["lr"]
            assert getattr(row, f"{side}_key") == (
                f"run={key['run']},seed={key['seed']},step={key['step']},layer={key['layer']},"
                f"lr={key['tags']['lr']}"
            )
        assert (row.metric, row.mean, row.dims_a, row.dims_b) == (
            pair["metric"], pair["mean"], pair["dims_a"], pair["dims_b"]
        )
        assert len(row.coefficients) == min(row.dims_a, row.dims_b)
        assert (row.weights is None) == (row.metric != "pwcca")
    # Tag values that differ only in value are different representations.
    assert set(frame.a_key) | set(frame.b_key) == {
        f"run=mlp,seed={s},step=2250,layer=h1,lr={lr}" for s in (0, 1) for lr in ("0.1", "0.01")
    }
    # results.json leaves the coefficients to the table, and load_results finds them there.
    assert results["coefficients"] == "parquet"
    assert all("coefficients" not in p for p in results["pairs"])
    loaded = svcca.load_results(out)
    assert list(loaded.a_key) == list(frame.a_key)
    for got, want in zip(loaded.coefficients, frame.coefficients):
        assert list(got) == list(want)
    # The matrix is labelled by the same keys and symmetric.
    matrix = pd.read_csv(out / "matrix_svcca.csv", index_col="label")
    assert set(matrix.index) == set(matrix.columns) == set(frame.a_key) | set(frame.b_key)
    values = matrix.loc[matrix.index, matrix.index].to_numpy()
    assert np.allclose(values, values.T, equal_nan=True)


def test_results_json_keeps_coefficients_only_when_asked(tmp_path):
    job = tmp_path / "job.toml"
    out = tmp_path / "out"
    job.write_text(
        f'dataset = "{FIXTURES.parent / "examples" / "digits-dataset"}"\noutput = "{out}"\n'
        'comparison = "vs-final"\ncoefficients = "json"\n'
        '[select]\nwhere = { seed = "0", layer = "h1" }\n'
    )
    svcca.sweep(str(job), report=False)
    results = json.loads((out / "results.json").read_text())
    assert results["coefficients"] == "json"
    inline = [p["coefficients"] for p in results["pairs"]]
    assert all(inline)
    table = pq.read_table(out / "pairs.parquet").to_pylist()
    assert [row["coefficients"] for row in table] == inline
    assert [row["coefficients"] for row in svcca.load_results(out, frame=False)] == inline
