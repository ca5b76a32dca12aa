"""record() on real PyTorch models on the CPU, and the README's PyTorch example as written."""

import json
import re

import numpy as np
import pytest

import svcca

from conftest import REPO

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


class SmallCnn(torch.nn.Module):
    """Named so that alphabetical order is not depth order (`head` before `stem`)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.flat = torch.nn.Flatten()
        self.head = torch.nn.Linear(32, 10)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x):
        x = self.pool(self.block(self.act(self.stem(x))))
        return self.dropout(self.head(self.flat(x)))


def probe(n=300):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g)


def hooks_left(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_record_writes_every_leaf_with_layout_and_depth(tmp_path):
    torch.manual_seed(0)
    model = SmallCnn().train()
    x = probe()
    report = svcca.record(model, x, tmp_path / "ds", run="cnn", seed=0, step=10, batch_size=64)
    assert model.training, "training mode is restored"
    assert hooks_left(model) == 0
    assert report["datapoints"] == 300

    reps = {r["key"]["layer"]: r for r in svcca.Dataset(tmp_path / "ds").representations()}
    order = ["stem", "act", "block.0", "block.1", "pool", "flat", "head", "dropout"]
    assert sorted(reps) == sorted(order)
    assert [name for name, _ in sorted(reps.items(), key=lambda kv: kv[1]["depth"])] == order
    assert reps["stem"]["shape"] == [300, 8, 8, 8]  # stored NHWC
    assert reps["stem"]["layout"] == "nhwc"
    assert reps["head"]["layout"] == "dense" and reps["head"]["shape"] == [300, 10]
    assert all(r["key"]["seed"] == 0 and r["key"]["step"] == 10 for r in reps.values())

    # The stored values are the model's eval() outputs (dropout off), read back by compare:
    model.eval()
    with torch.no_grad():
        head = model.head(model.flat(model.pool(model.block(model.act(model.stem(x))))))
    stored = svcca.compare(head, head)
    assert stored.mean == pytest.approx(1.0)
    same_as_cli = svcca.compare(head.numpy(), head)
    assert same_as_cli.coefficients == stored.coefficients


def test_record_named_layers_from_a_loader_and_cleans_up_on_error(tmp_path):
    model = SmallCnn().eval()
    x = probe()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(300)), batch_size=100)
    svcca.record(model, loader, tmp_path / "ds", run="cnn", step=1, layers=["head", "stem"], lr="0.1")
    reps = svcca.Dataset(tmp_path / "ds").representations()
    assert sorted(r["key"]["layer"] for r in reps) == ["head", "stem"]
    assert all(r["key"]["tags"] == {"lr": "0.1"} for r in reps)
    assert not model.training

    with pytest.raises(ValueError, match="no module nope"):
        svcca.record(model, x, tmp_path / "ds2", run="cnn", layers=["nope"])

    class Failing(SmallCnn):
        def forward(self, x):
            super().forward(x)
            raise RuntimeError("boom")

    failing = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        svcca.record(failing, x, tmp_path / "ds3", run="cnn")
    assert hooks_left(failing) == 0 and failing.training
    assert not (tmp_path / "ds3" / "manifest.json").exists()


def test_three_axis_outputs_by_module_kind(tmp_path):
    class Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 6, 3, padding=1)  # [N, C, L]: stored flattened
            self.attn = torch.nn.Linear(5, 5)  # [N, tokens, features]

        def forward(self, x):
            return self.attn(self.conv(x)[:, :, :5])

    model = Seq()
    x = torch.randn(120, 4, 5, generator=torch.Generator().manual_seed(2))
    svcca.record(model, x, tmp_path / "ds", run="seq")
    reps = {r["key"]["layer"]: r for r in svcca.Dataset(tmp_path / "ds").representations()}
    assert reps["conv"]["layout"] == "dense" and reps["conv"]["shape"] == [120, 30]
    assert reps["attn"]["layout"] == "tokens" and reps["attn"]["shape"] == [120, 6, 5]
    svcca.record(model, x, tmp_path / "ds2", run="seq", layers=["attn"], layouts={"attn": "dense"})
    assert svcca.Dataset(tmp_path / "ds2").representations()[0]["layout"] == "dense"
    with pytest.raises(ValueError, match="layouts= names conv"):
        svcca.record(model, x, tmp_path / "ds3", run="seq", layers=["attn"], layouts={"conv": "dense"})


def test_record_then_sweep_orders_layers_by_depth(tmp_path):
    torch.manual_seed(1)
    model = SmallCnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = probe()
    for step in range(3):
        svcca.record(model, x, tmp_path / "ds", run="cnn", seed=0, step=step, layers=["stem", "head"])
        loss = model(x).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    done = svcca.sweep(tmp_path / "ds", out=tmp_path / "out", compare="vs-final")
    frame = svcca.load_results(done)
    assert len(frame) == 2 * 2  # 2 layers x 2 earlier checkpoints
    assert frame["mean"].between(0, 1).all()


def readme_example():
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has the PyTorch example"
    return match.group(1)


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "sweep" / "report" / "index.html").exists()
    results = svcca.load_results(tmp_path / "sweep", frame=False)
    assert results and all(0 <= r["mean"] <= 1 + 1e-9 for r in results)
    layers = {r["key"]["layer"]: r["depth"] for r in svcca.Dataset(tmp_path / "acts").representations()}
    assert layers["conv1"] < layers["layer1"] < layers["fc"]
