"""svcca.sweep runs the embedded engine as `svcca sweep` does; load_results reads what it stored."""

import json

import numpy as np
import pytest

import svcca

from conftest import REPO

DATASET = REPO / "examples" / "digits-dataset"
WHERE = ["seed=0", "layer=h1", "layer=h2"]


def test_sweep_matches_the_cli_and_loads(cli, tmp_path):
    cli_out, py_out = tmp_path / "cli", tmp_path / "py"
    args = ["--compare", "vs-final", "--metric", "svcca", "--metric", "cka", "--no-report"]
    for w in WHERE:
        args += ["--where", w]
    cli("sweep", DATASET, "--out", cli_out, *args)
    done = svcca.sweep(
        svcca.Dataset(DATASET),
        out=py_out,
        compare="vs-final",
        metrics=["svcca", "cka"],
        where={"seed": 0, "layer": ["h1", "h2"]},
    )
    assert done.out == str(py_out)
    assert done.report is not None and (py_out / "report" / "index.html").exists()
    assert any("pairs" in line or "pair" in line for line in done.lines), done.lines

    expected = json.loads((cli_out / "results.json").read_text())
    got = json.loads((py_out / "results.json").read_text())
    assert expected["job_spec"].replace(str(cli_out), str(py_out)) == got["job_spec"]
    key = lambda p: (json.dumps(p["a"], sort_keys=True), json.dumps(p["b"], sort_keys=True), p["metric"])
    cli_pairs = {key(p): p for p in expected["pairs"]}
    py_pairs = {key(p): p for p in got["pairs"]}
    assert set(cli_pairs) == set(py_pairs)
    assert len(py_pairs) == 2 * 4 * 2  # 2 layers x 4 earlier checkpoints x 2 metrics
    for k, p in py_pairs.items():
        assert p["mean"] == cli_pairs[k]["mean"]

    rows = svcca.load_results(done, frame=False)
    assert len(rows) == len(got["pairs"])
    pd = pytest.importorskip("pandas")
    frame = svcca.load_results(str(py_out))
    assert isinstance(frame, pd.DataFrame)
    assert {"a_run", "a_seed", "a_step", "a_layer", "b_step", "metric", "mean", "dims_a"} <= set(frame.columns)
    assert set(frame.b_step) == {2250} and set(frame.a_step) == {0, 25, 100, 400}
    svcca_rows = frame[frame.metric == "svcca"].sort_values(["a_layer", "a_step"])
    assert len(svcca_rows) == 8 and svcca_rows["mean"].between(0, 1).all()
    for row in svcca_rows.itertuples():
        stored = [
            p["mean"] for p in got["pairs"]
            if p["metric"] == "svcca" and p["a"]["step"] == row.a_step and p["a"]["layer"] == row.a_layer
        ]
        assert stored == [row.mean]
    # The results file itself is accepted too.
    assert len(svcca.load_results(str(py_out / "results.json"), frame=False)) == len(rows)


def test_mixed_precision_sweep_matches_the_cli(cli, tmp_path):
    cli_out, py_out = tmp_path / "cli", tmp_path / "py"
    args = ["--compare", "vs-final", "--metric", "svcca", "--precision", "mixed", "--no-report"]
    for w in WHERE:
        args += ["--where", w]
    cli("sweep", DATASET, "--out", cli_out, *args)
    svcca.sweep(
        str(DATASET), out=py_out, compare="vs-final", metrics="svcca",
        where={"seed": 0, "layer": ["h1", "h2"]}, precision="mixed", report=False,
    )
    expected = json.loads((cli_out / "results.json").read_text())
    got = json.loads((py_out / "results.json").read_text())
    assert 'precision = "mixed"' in got["job_spec"]
    assert expected["job_spec"].replace(str(cli_out), str(py_out)) == got["job_spec"]
    means = lambda r: sorted((json.dumps(p["a"], sort_keys=True), p["mean"]) for p in r["pairs"])
    assert means(got) == means(expected) and len(got["pairs"]) == 8
    with pytest.raises(svcca.SvccaError, match="unknown precision"):
        svcca.sweep(str(DATASET), out=tmp_path / "bad", precision="f16")


def test_sweep_errors_are_the_cli_messages(cli, tmp_path):
    done = cli("sweep", DATASET, check=False)
    assert done.returncode == 10
    with pytest.raises(svcca.SvccaError, match="is not a job file; to sweep a dataset give out="):
        svcca.sweep(str(DATASET))
    with pytest.raises(svcca.SvccaError) as raised:
        svcca.sweep(str(tmp_path / "missing"), out=tmp_path / "o")
    assert "manifest" in str(raised.value) or "missing" in str(raised.value)
    with pytest.raises(svcca.SvccaError, match="no results.json"):
        svcca.load_results(tmp_path)


def test_load_results_without_pandas(tmp_path, monkeypatch):
    out = tmp_path / "out"
    svcca.sweep(DATASET, out=out, compare="vs-final", where={"seed": 0, "layer": "h1"}, report=False)
    assert not (out / "report").exists()
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install pandas.*frame=False"):
        svcca.load_results(out)
    rows = svcca.load_results(out, frame=False, coefficients=False)
    assert len(rows) == 4 and "coefficients" not in rows[0]
