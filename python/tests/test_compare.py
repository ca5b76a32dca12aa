"""svcca.compare against `svcca compare --json`: the same code path, so the same numbers."""

import numpy as np
import pytest

import svcca

from conftest import FIXTURES

GOLDEN = FIXTURES / "golden"
DIGITS = FIXTURES / "digits"

NUMERIC = ("mean", "google_mean", "sum", "coefficients", "weights", "dims_x", "dims_y")


def assert_same(py, cli, fields=NUMERIC, tol=1e-12):
    record = py.to_dict()
    for field in fields:
        if field not in cli:
            continue
        a, b = record[field], cli[field]
        if b is None or isinstance(b, (int, str)):
            assert a == b, field
        else:
            assert np.allclose(a, b, rtol=0, atol=tol), (field, a, b)
    assert record["definition"] == cli["definition"]
    assert record["warnings"] == cli["warnings"]
    assert set(record) == set(cli), "the same fields as --json"


@pytest.mark.parametrize(
    "case, metric, extra",
    [
        ("svcca_var99", "svcca", {}),
        ("cca_default_args", "cca", {}),
        ("pwcca_x_smaller", "pwcca", {}),
        ("svcca_fixed_k", "svcca", {"keep_dims": 20}),
    ],
)
def test_golden_neurons_first_matches_cli(cli_json, case, metric, extra):
    a, b = GOLDEN / case / "acts1.npy", GOLDEN / case / "acts2.npy"
    flags = ["--metric", metric, "--google-compat", "--neurons-first"]
    if "keep_dims" in extra:
        flags += ["--keep-dims", str(extra["keep_dims"])]
    expected = cli_json("compare", a, b, *flags)
    # google's [neurons, datapoints]: the transpose is a Fortran-ordered view, read strided.
    x, y = np.load(a).T, np.load(b).T
    assert not x.flags.c_contiguous
    got = svcca.compare(x, y, metric=metric, google_compat=True, **extra)
    assert_same(got, expected)


def test_golden_dft_matches_cli(cli_json):
    a, b = GOLDEN / "dft_same_size" / "acts1.npy", GOLDEN / "dft_same_size" / "acts2.npy"
    expected = cli_json("compare", a, b, "--conv", "dft", "--google-compat")
    got = svcca.compare(np.load(a), np.load(b), layout="nhwc", google_compat=True)
    assert_same(got, expected, fields=("mean", "mean_of_frequency_means", "mean_grid", "grid"))


@pytest.mark.parametrize("metric", ["svcca", "cka", "pwcca"])
def test_digits_mlp_matches_cli(cli_json, metric):
    a = DIGITS / "mlp/seed0/step2250/h1.npy"
    b = DIGITS / "mlp/seed1/step2250/h1.npy"
    expected = cli_json("compare", a, b, "--metric", metric)
    got = svcca.compare(np.load(a), np.load(b), metric=metric)
    assert_same(got, expected)
    assert got.x == {"input": "x", "shape": list(np.load(a).shape)}


def test_digits_conv_nchw_matches_cli_nhwc(cli_json, tmp_path):
    a = DIGITS / "conv/seed0/step1500/conv1.npy"
    b = DIGITS / "conv/seed1/step1500/conv1.npy"
    expected = cli_json("compare", a, b, "--conv", "dft")
    # PyTorch's order as a strided view of the same memory, and as a copy in that order.
    x = np.load(a).transpose(0, 3, 1, 2)
    y = np.ascontiguousarray(np.load(b).transpose(0, 3, 1, 2))
    got = svcca.compare(x, y, layout="nchw")
    assert_same(got, expected, fields=("mean", "mean_of_frequency_means", "mean_grid", "grid"))


def test_memory_orders_and_float16_give_identical_numbers():
    x = np.load(DIGITS / "mlp/seed0/step2250/h2.npy")
    y = np.load(DIGITS / "mlp/seed2/step2250/h2.npy")
    base = svcca.compare(x, y)
    fortran = svcca.compare(np.asfortranarray(x), np.asfortranarray(y))
    assert fortran.coefficients == base.coefficients
    # float16 is widened exactly to float32, so it equals comparing the widened copy.
    half = svcca.compare(x.astype(np.float16), y.astype(np.float16))
    widened = svcca.compare(x.astype(np.float16).astype(np.float32), y.astype(np.float16).astype(np.float32))
    assert half.coefficients == widened.coefficients
    assert abs(half.mean - base.mean) < 1e-2
    # Big-endian input is read by value, not by its bytes.
    swapped = svcca.compare(x.astype(">f4"), y)
    assert swapped.coefficients == base.coefficients
    # Small blocks change only rounding.
    blocked = svcca.compare(x, y, block_rows=7)
    assert np.allclose(blocked.coefficients, base.coefficients, atol=1e-10)


def test_errors_carry_the_cli_message(cli, tmp_path):
    a = np.load(DIGITS / "mlp/seed0/step2250/h1.npy")
    np.save(tmp_path / "x", a)
    np.save(tmp_path / "y", a[:500])
    done = cli("compare", tmp_path / "x.npy", tmp_path / "y.npy", check=False)
    assert done.returncode == 10
    with pytest.raises(svcca.SvccaError) as raised:
        svcca.compare(a, a[:500], names=(str(tmp_path / "x.npy"), str(tmp_path / "y.npy")))
    cli_message = done.stderr.strip().removeprefix("error: ")
    core = cli_message.split(" (if your")[0]
    assert str(raised.value).startswith(core)
    assert raised.value.retryable is False
    assert isinstance(raised.value, svcca.SvccaError)


def test_conv_arrays_need_a_declared_layout():
    x = np.load(DIGITS / "conv/seed0/step1500/conv1.npy")
    with pytest.raises(svcca.SvccaError, match=r"layout='nhwc' or layout='nchw'"):
        svcca.compare(x, x)
    with pytest.raises(TypeError, match="int64"):
        svcca.compare(np.zeros((10, 3), dtype=np.int64), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="layout="):
        svcca.compare(x, x, layout="hwc")


def test_mixed_precision_matches_the_cli_and_stays_near_f64(cli_json):
    a = DIGITS / "mlp/seed0/step2250/h2.npy"
    b = DIGITS / "mlp/seed1/step2250/h2.npy"
    expected = cli_json("compare", a, b, "--precision", "mixed")
    got = svcca.compare(np.load(a), np.load(b), precision="mixed")
    assert_same(got, expected)
    exact = svcca.compare(np.load(a), np.load(b))
    assert got.coefficients != exact.coefficients
    assert np.allclose(got.coefficients, exact.coefficients, atol=1e-3, rtol=0)
    # CCA keeps directions far too small for f32 products: refused, naming the way out.
    with pytest.raises(svcca.SvccaError, match=r"--precision f64"):
        svcca.compare(np.load(a), np.load(b), metric="cca", precision="mixed")
    with pytest.raises(svcca.SvccaError, match=r"precision='mixed' is for dense layers"):
        x = np.load(DIGITS / "conv/seed0/step1500/conv1.npy")
        svcca.compare(x, x, layout="nhwc", precision="mixed")
    with pytest.raises(ValueError, match="precision="):
        svcca.compare(np.load(a), np.load(b), precision="f16")
