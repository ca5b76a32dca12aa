"""Writing activations into an svcca dataset, as ``svcca ingest`` does."""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional

import numpy as np

from . import _native

LAYOUTS = ("dense", "nhwc", "nchw", "tokens")


def _batches(data: Any) -> Iterable[Any]:
    """One array or tensor is one batch; anything else iterable yields batches."""
    if hasattr(data, "shape") or hasattr(data, "__array_interface__"):
        return [data]
    if isinstance(data, (list, tuple)) and data and np.isscalar(data[0]):
        return [np.asarray(data)]
    return data


class DatasetWriter:
    """Streams several representations into a dataset at once; the manifest is written once, when
    the ``with`` block ends without an error (``commit()``), so readers never see a half-written
    dataset. Get one from :meth:`Dataset.writer`."""

    def __init__(self, url: str, force: bool, shard_rows: Optional[int], datapoints: Optional[int]):
        self._native = _native.DatasetWriter(url, force=force, shard_rows=shard_rows)
        self.url = url
        self.datapoints = datapoints
        self.report: Optional[dict] = None

    def _total(self) -> int:
        """Datapoints of the probe set: declared, or those of the dataset being added to."""
        if self.datapoints is None:
            manifest = _native.read_object(self.url, "manifest.json")
            if manifest is None:
                raise ValueError(
                    "give datapoints= (the size of the probe set) to write batches into a new "
                    "dataset: it is needed before the first batch is stored"
                )
            self.datapoints = int(json.loads(manifest)["probe_set"]["datapoints"])
        return self.datapoints

    def append(
        self,
        batch: Any,
        *,
        run: str,
        layer: str,
        seed: Optional[int] = None,
        step: Optional[int] = None,
        layout: Optional[str] = None,
        depth: Optional[int] = None,
        **tags: Any,
    ) -> None:
        """Appends the next datapoints of one representation (its first axis is datapoints)."""
        from . import _as_array

        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: choose one of {', '.join(map(repr, LAYOUTS))}")
        array = _as_array(batch, f"{run}/{layer}")
        self._native.append(
            array,
            run=str(run),
            layer=str(layer),
            seed=None if seed is None else int(seed),
            step=None if step is None else int(step),
            tags={str(k): str(v) for k, v in tags.items()},
            layout=layout,
            depth=None if depth is None else int(depth),
            datapoints=self._total(),
        )

    def commit(self) -> dict:
        """Finishes every representation and writes the manifest; returns the ingest report."""
        self.report = json.loads(self._native.finish())
        return self.report

    def abort(self) -> None:
        """Forgets what was appended; the manifest is left as it was."""
        self._native.abort()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


class Dataset:
    """An svcca dataset: a local folder or an ``s3://``, ``gs://`` or ``az://`` URL (credentials
    from the standard ``AWS_*``, ``GOOGLE_*``, ``AZURE_*`` variables, as for the command)."""

    def __init__(self, url: Any):
        self.url = str(url)

    def __repr__(self) -> str:
        return f"Dataset({self.url!r})"

    def __fspath__(self) -> str:
        return self.url

    def writer(
        self, *, datapoints: Optional[int] = None, force: bool = False, shard_rows: Optional[int] = None
    ) -> DatasetWriter:
        """A writer for several representations at once (see :class:`DatasetWriter`).

        ``datapoints`` is the probe set's size (default: the dataset's, when it exists);
        ``force=True`` replaces representations whose stored values differ, as ``--force``;
        ``shard_rows`` sets datapoints per shard (default: about 32 MiB per shard)."""
        return DatasetWriter(self.url, force, shard_rows, datapoints)

    def write(
        self,
        data: Any,
        *,
        run: str,
        layer: str,
        seed: Optional[int] = None,
        step: Optional[int] = None,
        layout: Optional[str] = None,
        depth: Optional[int] = None,
        datapoints: Optional[int] = None,
        force: bool = False,
        shard_rows: Optional[int] = None,
        **tags: Any,
    ) -> dict:
        """Writes one representation, as ``svcca ingest`` would from the same array.

        ``data`` is an array or tensor ``[datapoints, ...]`` or an iterable of such batches (a
        generator keeps a probe set larger than memory out of memory: each batch is written as
        it comes). ``layout`` says what the axes are: ``'dense'`` (``[n, neurons]``), ``'nhwc'``,
        ``'nchw'`` (PyTorch conv outputs) or ``'tokens'`` (``[sequences, tokens, features]``);
        ``depth`` is the layer's position in the network (default: the depth the dataset gives
        this layer already, else one deeper than the run's deepest). Batches from an iterable
        need ``datapoints``, the probe set's size, unless the dataset exists. Other keywords
        become tags (``lr=0.1``). Returns the ingest report (``added``, ``unchanged``,
        ``replaced``, ...).
        """
        batches = _batches(data)
        if datapoints is None and isinstance(batches, list) and len(batches) == 1:
            datapoints = len(batches[0])
        with self.writer(datapoints=datapoints, force=force, shard_rows=shard_rows) as writer:
            for batch in batches:
                writer.append(
                    batch, run=run, layer=layer, seed=seed, step=step, layout=layout, depth=depth, **tags
                )
        return writer.report or {}

    def manifest(self) -> dict:
        """The dataset's manifest (``manifest.json``) as a dict."""
        data = _native.read_object(self.url, "manifest.json")
        if data is None:
            raise _native.SvccaError(f"no manifest.json under {self.url}: nothing has been written there")
        return json.loads(data)

    def representations(self) -> list:
        """Every stored representation: its key, shape and (where stored) layout and depth."""
        return self.manifest()["representations"]
