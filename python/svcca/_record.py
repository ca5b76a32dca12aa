"""Recording a PyTorch model's activations over a probe set into an svcca dataset."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from ._dataset import Dataset

# PyTorch's own axis orders, by rank of a layer's output (datapoints first).
_LAYOUT_BY_RANK = {2: "dense", 3: "tokens", 4: "nchw"}


def _layout(module: Any, rank: int) -> str:
    # A 3-D output is [sequences, tokens, features] from attention, recurrent and embedding
    # layers, but [N, channels, length] from 1-D convolutions, norms and pools, which have no
    # layout of their own: those are stored flattened.
    if rank == 3 and type(module).__name__.endswith("1d"):
        return "dense"
    return _LAYOUT_BY_RANK[rank]


def _inputs(data: Any, batch_size: int) -> Iterable[Any]:
    """Model inputs from a tensor (split into batches) or a data loader (whose batches may be
    ``(inputs, labels)`` pairs)."""
    if hasattr(data, "shape"):
        for start in range(0, data.shape[0], batch_size):
            yield data[start : start + batch_size]
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        elif isinstance(batch, dict):
            raise TypeError(
                "record: the data loader yields dicts; give it a loader (or a generator) that "
                "yields the model's input tensor, or (inputs, labels) pairs"
            )
        yield batch


def record(
    model: Any,
    data: Any,
    dataset: Any,
    *,
    run: str,
    seed: Optional[int] = None,
    step: Optional[int] = None,
    layers: Optional[Sequence[str]] = None,
    layouts: Optional[Mapping[str, str]] = None,
    batch_size: int = 256,
    force: bool = False,
    **tags: Any,
) -> dict:
    """Records every named layer of ``model`` over the probe set ``data`` into ``dataset``.

    ``data`` is an input tensor (split into batches of ``batch_size``) or a data loader yielding
    input tensors or ``(inputs, labels)``; it must yield the same datapoints in the same order
    every time it is recorded. ``layers`` are module names as ``model.named_modules()`` gives them
    (default: every leaf module). Each layer is stored under ``run``/``seed``/``step`` and its
    name, with its layout and its depth (the order the hooks fired in), batch by batch, so the
    probe set need not fit in memory. Layouts follow PyTorch's conventions: 2-D outputs are
    dense, 4-D ``nchw``, 3-D ``tokens`` (``[sequences, tokens, features]``) except from ``*1d``
    modules (``Conv1d``, ``BatchNorm1d``, ...), whose ``[N, C, L]`` is stored flattened (dense);
    ``layouts={'name': 'dense'}`` overrides any of them.

    The model runs in ``eval()`` mode under ``torch.no_grad()``; its hooks are removed and its
    training mode restored even when recording fails, so this can run inside a training loop.
    Returns the ingest report.
    """
    import torch

    modules = dict(model.named_modules())
    if layers is None:
        names = [name for name, m in modules.items() if name and not any(True for _ in m.children())]
    else:
        names = list(layers)
        unknown = [n for n in names if n not in modules]
        if unknown:
            known = ", ".join(n for n in modules if n)
            raise ValueError(f"record: the model has no module {', '.join(unknown)}; its modules: {known}")
    if not names:
        raise ValueError("record: no layers to record (the model has no named modules)")
    stray = sorted(set(layouts or {}) - set(names))
    if stray:
        raise ValueError(f"record: layouts= names {', '.join(stray)}, which are not recorded layers")

    target = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    order: list = []  # hook firing order on the first batch = depth
    outputs: dict = {}
    skipped: dict = {}
    kinds: dict = {}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor):
                skipped[name] = f"its output is a {type(output).__name__}, not a tensor"
                return
            if output.dim() not in _LAYOUT_BY_RANK:
                skipped[name] = f"its output has {output.dim()} axes (2, 3 or 4 are recorded)"
                return
            if name in outputs:
                raise RuntimeError(
                    f"record: module {name} ran twice in one forward pass; name modules that run once "
                    f"per input in layers="
                )
            outputs[name] = output.detach()
            kinds[name] = (layouts or {}).get(name) or _layout(_module, output.dim())
            if name not in order:
                order.append(name)

        return hook

    handles = []
    was_training = model.training
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        model.eval()
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        if hasattr(data, "shape"):
            datapoints = int(data.shape[0])
        elif hasattr(data, "dataset") and hasattr(data.dataset, "__len__"):
            datapoints = len(data.dataset)  # a torch DataLoader
        else:
            datapoints = None  # the dataset's own, or a clear error from the writer
        with target.writer(datapoints=datapoints, force=force) as writer, torch.no_grad():
            for batch in _inputs(data, batch_size):
                outputs.clear()
                model(batch.to(device))
                for name in order:
                    if name not in outputs:
                        raise RuntimeError(
                            f"record: module {name} ran on the first batch but not on a later one; "
                            f"every recorded layer must run for every input"
                        )
                    output = outputs[name]
                    writer.append(
                        output.cpu(),
                        run=run,
                        seed=seed,
                        step=step,
                        layer=name,
                        layout=kinds[name],
                        depth=order.index(name),
                        **tags,
                    )
            if not order:
                reasons = "; ".join(f"{n}: {why}" for n, why in skipped.items())
                raise ValueError(f"record: none of the layers gave a tensor to record ({reasons})")
        report = dict(writer.report or {})
        report["skipped_layers"] = dict(skipped)
        return report
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
