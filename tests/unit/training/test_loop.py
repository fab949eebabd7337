"""The training loop: schedules, accumulation, early stopping, precision, and kill/resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tuneserve.data import load, split
from tuneserve.exceptions import InvalidInputError
from tuneserve.preprocessing import TablePreprocessor
from tuneserve.training import ImageAugment, TrainConfig, fit
from tuneserve.training.loop import CHECKPOINT_FILE, _lr_factor


@pytest.fixture(scope="module")
def iris_tensors():
    parts = split(load("iris"), seed=0)
    pre = TablePreprocessor().fit(parts.train.X)

    def tensors(d):
        return (torch.from_numpy(pre.transform(d.X)["input"]),), torch.from_numpy(d.y)

    return tensors(parts.train), tensors(parts.validation)


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def test_learns_iris(iris_tensors):
    model = _linear()
    result = fit(model, *iris_tensors, TrainConfig(epochs=40, learning_rate=0.05, patience=None))
    assert result.best_score >= 0.9
    assert len(result.history) == 40
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_schedules():
    warm = _lr_factor(TrainConfig(epochs=10, warmup_epochs=2, schedule="constant"), 5)
    assert [warm(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert warm(10) == 1.0
    cos = _lr_factor(TrainConfig(epochs=10, schedule="cosine"), 5)
    assert cos(0) == 1.0 and cos(25) == pytest.approx(0.5) and cos(50) == pytest.approx(0.0)
    step = _lr_factor(TrainConfig(epochs=30, schedule="step", step_size=10, gamma=0.5), 4)
    assert [step(0), step(40), step(80)] == pytest.approx([1.0, 0.5, 0.25])
    multi = _lr_factor(TrainConfig(epochs=30, schedule="multistep", milestones=(5, 20)), 4)
    assert [multi(19), multi(20), multi(80)] == pytest.approx([1.0, 0.1, 0.01])


def test_gradient_accumulation_equals_a_larger_batch(iris_tensors):
    settings = {
        "epochs": 1,
        "optimizer": "sgd",
        "momentum": 0.0,
        "weight_decay": 0.0,
        "schedule": "constant",
        "learning_rate": 0.1,
        "patience": None,
    }
    (x,), y = iris_tensors[0]
    train = ((x[:96],), y[:96])  # whole batches only: a ragged last batch weighs differently
    big, small = _linear(), _linear()
    fit(big, train, iris_tensors[1], TrainConfig(batch_size=64, **settings))
    fit(small, train, iris_tensors[1], TrainConfig(batch_size=32, grad_accumulation=2, **settings))
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_limits_each_step(iris_tensors):
    free, clipped = _linear(), _linear()
    start = [p.detach().clone() for p in clipped.parameters()]
    settings = {
        "epochs": 1,
        "optimizer": "sgd",
        "momentum": 0.0,
        "schedule": "constant",
        "learning_rate": 1.0,
        "weight_decay": 0.0,
        "patience": None,
        "batch_size": 200,
    }
    fit(free, *iris_tensors, TrainConfig(**settings))
    fit(clipped, *iris_tensors, TrainConfig(clip_grad_norm=1e-3, **settings))
    moved = math.sqrt(
        sum(
            float((p.detach() - s).pow(2).sum())
            for p, s in zip(clipped.parameters(), start, strict=True)
        )
    )
    assert moved == pytest.approx(1e-3, rel=1e-3)  # one step of lr 1 on a gradient of norm 1e-3
    free_moved = math.sqrt(
        sum(
            float((p.detach() - s).pow(2).sum())
            for p, s in zip(free.parameters(), start, strict=True)
        )
    )
    assert free_moved > 0.01


def test_early_stopping(iris_tensors):
    result = fit(_linear(), *iris_tensors, TrainConfig(epochs=50, learning_rate=1e-9, patience=3))
    assert result.stopped_early
    assert len(result.history) == 4  # the first epoch sets the best; three more without gain


def test_bf16_autocast_on_cpu(iris_tensors):
    result = fit(
        _linear(), *iris_tensors, TrainConfig(epochs=5, mixed_precision="bf16", learning_rate=0.05)
    )
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_fp16_without_cuda_is_refused(iris_tensors):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidInputError, match="fp16' needs a CUDA GPU"):
        fit(_linear(), *iris_tensors, TrainConfig(epochs=1, mixed_precision="fp16", device="cpu"))


def test_resume_with_other_settings_is_refused(iris_tensors, tmp_path):
    fit(_linear(), *iris_tensors, TrainConfig(epochs=2), checkpoint_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="other training settings or data"):
        fit(_linear(), *iris_tensors, TrainConfig(epochs=3), checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs must be >= 1"),
        ("optimizer", "adam", "optimizer must be one of adamw, sgd"),
        ("warmup_epochs", 5, r"warmup_epochs must be in \[0, epochs=3\)"),
        ("schedule", "multistep", "needs milestones"),
    ],
)
def test_bad_settings(field, value, message):
    settings = {"epochs": 3, field: value}
    with pytest.raises(InvalidInputError, match=message):
        TrainConfig(**settings)


def test_augment_is_identity_when_off_and_seeded_when_on():
    images = torch.rand(4, 1, 8, 8)
    same = ImageAugment(rotation=0, translation=0, scale=(1.0, 1.0))
    torch.testing.assert_close(
        same(images, torch.Generator().manual_seed(0)), images, atol=1e-5, rtol=0
    )
    aug = ImageAugment(rotation=20, translation=0.2, scale=(0.8, 1.2))
    a = aug(images, torch.Generator().manual_seed(1))
    b = aug(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert float((a - images).abs().mean()) > 0.05


RUN = """
import json, sys, torch
from tuneserve.data import load, split
from tuneserve.training import CNNConfig, train_cnn
parts = split(load("digits"), seed=0)
config = CNNConfig(epochs=6, batch_size=16, patience=None, seed=3)
model = train_cnn(parts.train, parts.validation, config, checkpoint_dir=sys.argv[1], resume=True)
torch.save(model.model.state_dict(), sys.argv[2])
print(json.dumps({"history": len(model.history), "best": model.best_epoch}))
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=600, env=env
    )


def _checkpoint_epoch(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=False)["epoch"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def test_killed_mid_epoch_then_resumed_equals_an_uninterrupted_run(tmp_path):
    whole = _run(str(tmp_path / "a"), str(tmp_path / "a.pt"))
    assert whole.returncode == 0, whole.stderr

    ckpt_dir = tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "b.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN, str(ckpt_dir), str(tmp_path / "b.pt")],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        deadline = time.monotonic() + 300
        while _checkpoint_epoch(ckpt_dir / CHECKPOINT_FILE) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-epoch 3: no chance to clean up
        proc.wait()
    killed_at = _checkpoint_epoch(ckpt_dir / CHECKPOINT_FILE)
    assert 2 <= killed_at < 6, "the run was not interrupted before its end"
    assert not (tmp_path / "b.pt").exists()

    resumed = _run(str(ckpt_dir), str(tmp_path / "b.pt"))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == json.loads(whole.stdout)
    a = torch.load(tmp_path / "a.pt")
    b = torch.load(tmp_path / "b.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _Blocks(nn.Module):
    """Embedding, two blocks and a head, like an encoder classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(4, 4)
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.head = nn.Linear(4, 3)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


def test_layer_wise_learning_rate_decay():
    from tuneserve.training.loop import _optimizer

    model = _Blocks()
    opt = _optimizer(model, TrainConfig(learning_rate=1.0, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(model.head.weight)] == 1.0
    assert lr_of[id(model.layers[1].weight)] == 0.5
    assert lr_of[id(model.layers[0].weight)] == 0.25
    assert lr_of[id(model.embed.weight)] == 0.125
    assert sum(len(g["params"]) for g in opt.param_groups) == 8


def test_out_of_memory_names_a_batch_size_to_try(iris_tensors, tmp_path):
    from tuneserve.exceptions import OutOfMemoryError

    class Hungry(nn.Module):
        """Raises what torch raises when an allocation fails."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(
        OutOfMemoryError,
        match=r"batch size 64\. Hint: retry with --batch-size 32 "
        r"--grad-accumulation 2 \(the same effective batch\) --resume",
    ):
        fit(Hungry(), *iris_tensors, TrainConfig(epochs=1), checkpoint_dir=tmp_path)


def test_diverging_training_stops_without_a_result(iris_tensors):
    from tuneserve.exceptions import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match=r"training diverged: the loss is (nan|inf)"):
        fit(_linear(), *iris_tensors, TrainConfig(epochs=5, learning_rate=1e30, optimizer="sgd"))


def test_auto_precision_uses_bf16_on_cpus_that_compute_it(monkeypatch):
    from tuneserve.training import default_config, loop

    cpu = torch.device("cpu")
    auto = TrainConfig(mixed_precision="auto", device="cpu")
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    assert loop._precision(auto, cpu) == torch.bfloat16
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    assert loop._precision(auto, cpu) is None
    assert loop._precision(TrainConfig(), cpu) is None  # off unless asked
    assert default_config("minilm", "full").mixed_precision == "auto"
    assert default_config("cnn", "full").mixed_precision == "off"
