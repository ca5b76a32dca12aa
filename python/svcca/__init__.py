"""Compare neural network representations with SVCCA, CCA, PWCCA and linear CKA.

The numbers come from the same Rust code as the ``svcca`` command:

- :func:`compare` compares two activation arrays (NumPy arrays or CPU torch tensors), as
  ``svcca compare --json`` does;
- :class:`Dataset` writes activations into an svcca dataset (local folder, ``s3://``, ``gs://``,
  ``az://``) as ``svcca ingest`` does, and :func:`record` fills one from a PyTorch model;
- :func:`sweep` compares many representations on the embedded engine, as ``svcca sweep`` does,
  and :func:`load_results` reads what it stored.

Errors the command would report are raised as :class:`SvccaError` with the same message.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from . import _native
from ._native import SvccaError

__all__ = [
    "Comparison",
    "Dataset",
    "SvccaError",
    "SweepResult",
    "compare",
    "load_results",
    "record",
    "sweep",
]


def _as_array(value: Any, name: str) -> np.ndarray:
    """A NumPy view of ``value`` (no copy for NumPy arrays and CPU tensors in a supported dtype)."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if str(tensor.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            tensor = tensor.float()
        value = tensor.numpy()
    elif not isinstance(value, np.ndarray) and hasattr(value, "__dlpack__"):
        value = np.from_dlpack(value)
    array = np.asarray(value)
    if array.dtype.kind != "f" or array.dtype.itemsize not in (2, 4, 8):
        raise TypeError(
            f"{name} has dtype {array.dtype}; activations must be float16, float32 or float64 "
            f"(convert with {name}.astype(np.float32))"
        )
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not _little_endian()):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def _little_endian() -> bool:
    import sys

    return sys.byteorder == "little"


class Comparison:
    """The result of :func:`compare`: the fields of ``svcca compare --json`` as attributes.

    Dense comparisons have ``mean``, ``google_mean``, ``equal_k_mean``, ``sum``, ``coefficients``,
    ``weights``, ``dims_x``, ``dims_y``, ``dropped_x``, ``dropped_y``, ``datapoints``, ``definition``,
    ``warnings``, ``metric``, ``mode``, ``x`` and ``y``; conv comparisons (``layout='nhwc'`` or
    ``'nchw'``) have the conv record's fields (``mean``, ``method``, ``grid``, ``mean_grid``, ...).
    ``to_dict()`` gives the whole record.
    """

    def __init__(self, record: Mapping[str, Any]):
        self._record = dict(record)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(
                f"Comparison has no field {name!r}; fields: {', '.join(sorted(self._record))}"
            ) from None

    def __dir__(self) -> Iterable[str]:
        return list(super().__dir__()) + list(self._record)

    def to_dict(self) -> dict:
        return dict(self._record)

    def __float__(self) -> float:
        return float(self._record["mean"])

    def __repr__(self) -> str:
        dims = ""
        if "dims_x" in self._record:
            dims = f", dims_x={self._record['dims_x']}, dims_y={self._record['dims_y']}"
        return (
            f"Comparison(metric={self._record.get('metric')!r}, mean={self._record['mean']:.6f}"
            f"{dims}, warnings={len(self._record.get('warnings', []))})"
        )


def compare(
    x: Any,
    y: Any,
    metric: str = "svcca",
    keep_variance: Optional[float] = None,
    layout: Optional[str] = None,
    google_compat: bool = False,
    *,
    keep_dims: Optional[int] = None,
    conv: str = "dft",
    epsilon: Optional[float] = None,
    threshold: float = 0.98,
    precision: Optional[str] = None,
    allow_trivial: bool = False,
    block_rows: int = 8192,
    memory_mb: Optional[int] = None,
    threads: Optional[int] = None,
    names: Sequence[str] = ("x", "y"),
) -> Comparison:
    """Compare two representations over the same datapoints, as ``svcca compare --json`` does.

    ``x`` and ``y`` are ``[datapoints, neurons]`` arrays (NumPy, or torch tensors, which are read
    on the CPU), float16/32/64 in any memory order: C-ordered float32/float64 arrays are read in
    place, others a block of ``block_rows`` datapoints at a time. For 4-D conv activations give
    ``layout='nhwc'`` (``[images, h, w, channels]``) or ``layout='nchw'`` (PyTorch's
    ``[images, channels, h, w]``) and optionally ``conv='dft'`` (default: one CCA per spatial
    frequency), ``'fold'`` or ``'pool'``.

    ``metric`` is ``'svcca'`` (default), ``'cca'``, ``'pwcca'`` or ``'cka'``; SVCCA keeps the top
    directions explaining ``keep_variance`` (default 0.99) of the variance, or ``keep_dims`` of
    them. ``google_compat=True`` reproduces google/svcca's arithmetic. ``precision='mixed'`` runs
    the moments' products in f32 (accumulated in f64; dense layers), refusing a comparison whose
    estimated error exceeds 1e-3. Do not write to the arrays from another thread while the
    comparison runs.
    """
    if keep_variance is not None and keep_dims is not None:
        raise ValueError("give keep_variance or keep_dims, not both")
    x_name, y_name = names
    ax, ay = _as_array(x, x_name), _as_array(y, y_name)
    text = _native.compare(
        ax,
        ay,
        x_name=x_name,
        y_name=y_name,
        metric=metric,
        keep_variance=keep_variance,
        keep_dims=keep_dims,
        epsilon=epsilon,
        threshold=threshold,
        google_compat=google_compat,
        precision=precision,
        layout=layout,
        conv=conv,
        allow_trivial=allow_trivial,
        block_rows=block_rows,
        memory_mb=memory_mb,
        threads=threads,
    )
    return Comparison(json.loads(text))


class SweepResult:
    """What :func:`sweep` did: where the results are (``out``), the summary lines ``svcca sweep``
    prints (``lines``) and the report's ``index.html`` for a local output (``report``, else None).
    ``load()`` reads the results with :func:`load_results`."""

    def __init__(self, out: str, lines: Sequence[str], report: Optional[str]):
        self.out = out
        self.lines = list(lines)
        self.report = report

    def load(self, **kwargs: Any):
        return load_results(self.out, **kwargs)

    def __repr__(self) -> str:
        return f"SweepResult(out={self.out!r}, report={self.report!r})"

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _where_list(where: Union[None, Mapping[str, Any], Sequence[str]]) -> list:
    if where is None:
        return []
    if isinstance(where, Mapping):
        out = []
        for key, value in where.items():
            values = value if isinstance(value, (list, tuple, set)) else [value]
            out.extend(f"{key}={v}" for v in values)
        return out
    if isinstance(where, str):
        return [where]
    return list(where)


def sweep(
    dataset_or_job: Union[str, "Dataset"],
    out: Optional[str] = None,
    compare: Optional[str] = None,
    metrics: Optional[Sequence[str]] = None,
    *,
    where: Union[None, Mapping[str, Any], Sequence[str]] = None,
    workers: Optional[int] = None,
    keep_variance: Optional[float] = None,
    keep_dims: Optional[int] = None,
    google_compat: bool = False,
    precision: Optional[str] = None,
    memory_mb: Optional[int] = None,
    overwrite: bool = False,
    report: bool = True,
) -> SweepResult:
    """Compare many representations of a dataset on the embedded engine, as ``svcca sweep`` does.

    ``dataset_or_job`` is a dataset (a :class:`Dataset`, a folder or an ``s3://``/``gs://``/
    ``az://`` URL) with ``out`` the output folder or URL, or a job file (``*.toml``).
    ``compare`` is ``'all-pairs'`` (default), ``'vs-final'`` or ``'cross-seed'``; ``metrics`` any
    of ``'svcca'``, ``'cca'``, ``'pwcca'``, ``'cka'``; ``where`` keeps representations whose fields
    match (``{'run': 'resnet', 'layer': 'layer*'}``). ``precision='mixed'`` runs the moments'
    products in f32 (accumulated in f64; svcca and cca), refusing a representation whose estimated
    error exceeds 1e-3. Rerunning resumes. A local output also gets
    the HTML report (``report/index.html``) unless ``report=False``; class sensitivity
    (``svcca sweep --labels``) is computed by the command only.
    """
    target = dataset_or_job.url if isinstance(dataset_or_job, Dataset) else str(dataset_or_job)
    if isinstance(metrics, str):
        metrics = [metrics]
    output, lines, index = _native.sweep(
        target,
        out=None if out is None else str(out),
        compare=compare,
        filters=_where_list(where),
        metrics=list(metrics or []),
        workers=workers,
        keep_variance=keep_variance,
        keep_dims=keep_dims,
        google_compat=google_compat,
        precision=precision,
        memory_mb=memory_mb,
        overwrite=overwrite,
        report=report,
    )
    return SweepResult(output, lines, index)


def _canonical_key(key: Mapping[str, Any]) -> str:
    """The canonical key svcca names a representation by everywhere (matrix labels, reports,
    ``svcca ls``, selectors): ``run=mlp,seed=0,step=2250,layer=h1``, then the tags by name."""
    parts = [f"run={key['run']}"]
    for field in ("seed", "step"):
        if key.get(field) is not None:
            parts.append(f"{field}={key[field]}")
    parts.append(f"layer={key['layer']}")
    tags = key.get("tags") or {}
    parts.extend(f"{name}={tags[name]}" for name in sorted(tags))
    return ",".join(parts)


def _key_columns(prefix: str, key: Mapping[str, Any], tag_names: Sequence[str]) -> dict:
    row = {
        f"{prefix}_key": _canonical_key(key),
        f"{prefix}_run": key.get("run"),
        f"{prefix}_seed": key.get("seed"),
        f"{prefix}_step": key.get("step"),
        f"{prefix}_layer": key.get("layer"),
    }
    tags = key.get("tags") or {}
    for name in tag_names:
        row[f"{prefix}_{name}"] = tags.get(name)
    return row


def _stored_coefficients(folder: str, results: Mapping[str, Any]) -> list:
    """Each pair's coefficients, from ``pairs.parquet`` where ``results.json`` does not keep them
    (``coefficients = "parquet"``, the default); ``None`` per pair where the job kept none."""
    pairs = results["pairs"]
    store = results.get("coefficients", "json")
    if store == "json":
        return [list(pair.get("coefficients", [])) for pair in pairs]
    if store == "none":
        return [None] * len(pairs)
    data = _native.read_object(folder, "pairs.parquet")
    if data is None:
        raise SvccaError(
            f"{folder}/results.json keeps its coefficients in pairs.parquet, which is missing; "
            "call load_results(url, coefficients=False) for the rest"
        )
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "this sweep keeps its coefficients in pairs.parquet: install pyarrow (pip install "
            "pyarrow), or call load_results(url, coefficients=False)"
        ) from None
    import io

    table = pq.read_table(io.BytesIO(bytes(data)), columns=["a_key", "b_key", "metric", "coefficients"])
    rows = table.to_pylist()
    if len(rows) != len(pairs):
        raise SvccaError(f"{folder}/pairs.parquet holds {len(rows)} rows for {len(pairs)} pairs")
    for row, pair in zip(rows, pairs):
        stored = (row["a_key"], row["b_key"], row["metric"])
        if stored != (_canonical_key(pair["a"]), _canonical_key(pair["b"]), pair["metric"]):
            raise SvccaError(f"{folder}/pairs.parquet does not match results.json at {stored}")
    return [row["coefficients"] for row in rows]


def load_results(url: Union[str, SweepResult], *, frame: bool = True, coefficients: bool = True):
    """Read a sweep's results (its output folder or URL, or ``results.json`` itself).

    Returns one row per (pair, metric): ``a_key`` (the canonical key, as in matrix labels and
    reports), ``a_run``, ``a_seed``, ``a_step``, ``a_layer`` and one ``a_<tag>`` column per tag,
    the same for ``b``, then ``metric``, ``mean``, ``google_mean``, ``equal_k_mean``, ``dims_a``,
    ``dims_b``, ``warnings`` and (unless ``coefficients=False``) ``coefficients``, read from
    ``pairs.parquet`` when the sweep kept them there (which needs pyarrow). As a pandas
    DataFrame by default; ``frame=False`` returns the rows as a list of dicts and needs no
    pandas. ``pandas.read_parquet(OUT + "/pairs.parquet")`` reads the same table with every key
    field as its own column.
    """
    if isinstance(url, SweepResult):
        url = url.out
    url = str(url)
    folder, name = url, "results.json"
    if url.endswith(".json"):
        folder, _, name = url.rpartition("/")
        folder = folder or "."
    data = _native.read_object(folder, name)
    if data is None:
        raise SvccaError(f"no {name} under {folder}: point load_results at the output of a sweep")
    results = json.loads(data)
    tag_names = sorted(
        {t for pair in results["pairs"] for side in ("a", "b") for t in (pair[side].get("tags") or {})}
    )
    stored = _stored_coefficients(folder, results) if coefficients else None
    rows = []
    for n, pair in enumerate(results["pairs"]):
        row = _key_columns("a", pair["a"], tag_names)
        row.update(_key_columns("b", pair["b"], tag_names))
        row.update(
            metric=pair["metric"],
            mean=pair["mean"],
            google_mean=pair.get("google_mean"),
            equal_k_mean=pair.get("equal_k_mean"),
            dims_a=pair["dims_a"],
            dims_b=pair["dims_b"],
            warnings=list(pair.get("warnings", [])),
        )
        if stored is not None:
            row["coefficients"] = stored[n]
        rows.append(row)
    if not frame:
        return rows
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "load_results returns a pandas DataFrame: install pandas (pip install pandas), or call "
            "load_results(url, frame=False) for a list of dicts"
        ) from None
    return pd.DataFrame(rows)


from ._dataset import Dataset  # noqa: E402  (uses compare's helpers above)
from ._record import record  # noqa: E402
