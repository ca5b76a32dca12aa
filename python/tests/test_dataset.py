"""Dataset.write stores what `svcca ingest` stores from the same arrays, and streams batches."""

import json
import shutil

import numpy as np
import pytest

import svcca

from conftest import FIXTURES

DIGITS = FIXTURES / "digits"
FILES = [
    (seed, step, layer)
    for seed in (0, 1)
    for step in (400, 2250)
    for layer in ("h1", "h2")
]
# What a manifest entry says about the stored values, whoever wrote them (`source` names the
# input file for ingest, and is absent for arrays).
STORED = ("key", "shape", "layout", "dtype", "shards", "values_sha256")


def stored(manifest):
    return {
        json.dumps(r["key"], sort_keys=True): {k: r.get(k) for k in STORED}
        for r in manifest["representations"]
    }


def mlp(seed, step, layer):
    return DIGITS / "mlp" / f"seed{seed}" / f"step{step}" / f"{layer}.npy"


def test_write_matches_ingest_and_sweeps_identically(cli, tmp_path):
    src = tmp_path / "src"
    for seed, step, layer in FILES:
        dest = src / "mlp" / f"seed{seed}" / f"step{step}" / f"{layer}.npy"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mlp(seed, step, layer), dest)
    ingested, written = tmp_path / "ingested", tmp_path / "written"
    cli("ingest", src, ingested, "--pattern", "{run}/seed{seed}/step{step}/{layer}.npy", "--shard-rows", "200")

    dataset = svcca.Dataset(written)
    for seed, step, layer in FILES:
        array = np.load(mlp(seed, step, layer))
        # float64 and Fortran order are stored as ingest stores the float32 file.
        if seed == 1:
            array = np.asfortranarray(array.astype(np.float64))
        report = dataset.write(
            array, run="mlp", seed=seed, step=step, layer=layer, shard_rows=200,
            depth=int(layer[1:]) - 1,
        )
        assert report["added"] == [f"run=mlp,seed={seed},step={step},layer={layer}"]

    a = json.loads((ingested / "manifest.json").read_text())
    b = dataset.manifest()
    assert a["probe_set"]["datapoints"] == b["probe_set"]["datapoints"] == 597
    assert stored(a) == stored(b)
    for rep in b["representations"]:
        assert rep["depth"] == int(rep["key"]["layer"][1:]) - 1
        for shard in rep["shards"]:
            assert (written / shard["path"]).read_bytes() == (ingested / shard["path"]).read_bytes()

    assert cli("ls", ingested).stdout.replace(str(ingested), "D") == cli("ls", written).stdout.replace(str(written), "D")
    results = {}
    for name, ds in (("i", ingested), ("w", written)):
        cli("sweep", ds, "--out", tmp_path / f"out-{name}", "--compare", "vs-final", "--no-report")
        pairs = json.loads((tmp_path / f"out-{name}" / "results.json").read_text())["pairs"]
        results[name] = sorted((json.dumps(p["a"], sort_keys=True), json.dumps(p["b"], sort_keys=True), p["mean"]) for p in pairs)
    assert results["i"] == results["w"] and len(results["w"]) == 4

    # Writing the same values again changes nothing.
    again = dataset.write(np.load(mlp(0, 400, "h1")), run="mlp", seed=0, step=400, layer="h1", shard_rows=200, depth=0)
    assert again["unchanged"] == ["run=mlp,seed=0,step=400,layer=h1"]


def test_batches_stream_into_the_same_shards(tmp_path):
    array = np.load(mlp(0, 2250, "h2"))
    whole, streamed = svcca.Dataset(tmp_path / "whole"), svcca.Dataset(tmp_path / "streamed")
    whole.write(array, run="mlp", layer="h2", shard_rows=64)
    batches = (array[i : i + 50] for i in range(0, len(array), 50))
    streamed.write(batches, run="mlp", layer="h2", shard_rows=64, datapoints=len(array))
    assert stored(whole.manifest()) == stored(streamed.manifest())
    assert len(whole.representations()[0]["shards"]) == 10

    with pytest.raises(ValueError, match="datapoints="):
        svcca.Dataset(tmp_path / "new").write(iter([array[:10]]), run="mlp", layer="h2")
    # Too few datapoints: refused when finishing, and the manifest is not written.
    with pytest.raises(svcca.SvccaError, match="datapoints"):
        svcca.Dataset(tmp_path / "short").write(iter([array[:10]]), run="mlp", layer="h2", datapoints=597)
    assert not (tmp_path / "short" / "manifest.json").exists()


def test_conv_layouts(tmp_path):
    conv = np.load(DIGITS / "conv/seed0/step1500/conv1.npy")  # [597, 8, 8, 16]
    nhwc, nchw = svcca.Dataset(tmp_path / "nhwc"), svcca.Dataset(tmp_path / "nchw")
    nhwc.write(conv, run="conv", layer="conv1", layout="nhwc")
    nchw.write(conv.transpose(0, 3, 1, 2), run="conv", layer="conv1", layout="nchw")
    a, b = nhwc.representations()[0], nchw.representations()[0]
    assert a["values_sha256"] == b["values_sha256"]
    assert b["shape"] == [597, 8, 8, 16]
    with pytest.raises(svcca.SvccaError, match="layout="):
        svcca.Dataset(tmp_path / "none").write(conv, run="conv", layer="conv1")
    with pytest.raises(svcca.SvccaError, match="non-finite|NaN"):
        bad = np.load(mlp(0, 400, "h1")).copy()
        bad[3, 4] = np.nan
        svcca.Dataset(tmp_path / "nan").write(bad, run="mlp", layer="h1")


def test_float64_and_float16_are_narrowed_as_ingest_narrows_them(cli, tmp_path):
    rng = np.random.default_rng(7)
    arrays = {"wide": rng.standard_normal((200, 12)), "half": rng.standard_normal((200, 12)).astype(np.float16)}
    # One .safetensors file holding both (each tensor becomes a layer named after it).
    header, blobs, offset = {}, [], 0
    for name, array in arrays.items():
        blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
        dtype = {"float64": "F64", "float16": "F16"}[str(array.dtype)]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    (tmp_path / "src" / "m").mkdir(parents=True)
    (tmp_path / "src" / "m" / "acts.safetensors").write_bytes(
        len(text).to_bytes(8, "little") + text + b"".join(blobs)
    )
    cli("ingest", tmp_path / "src", tmp_path / "ingested", "--pattern", "{run}/{*}.safetensors")
    written = svcca.Dataset(tmp_path / "written")
    with written.writer(datapoints=200) as w:
        for name, array in arrays.items():
            w.append(array[:120], run="m", layer=name)
            w.append(array[120:], run="m", layer=name)
    a = json.loads((tmp_path / "ingested" / "manifest.json").read_text())
    assert stored(a) == stored(written.manifest())
    assert {r["source_dtype"] for r in written.representations()} == {"float64", "float16"}
