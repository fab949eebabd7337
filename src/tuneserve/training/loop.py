"""The training loop: train and validation phases, best checkpoint, early stopping, resume.

Determinism: weights come from the caller's seed, batch order and augmentation from a
generator seeded per epoch, and dropout from the global RNG whose state is checkpointed. So
a run that is killed and resumed ends with exactly the weights of an uninterrupted run (on
the same machine and thread count).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneserve.exceptions import InvalidInputError, OutOfMemoryError, TrainingDivergedError
from tuneserve.progress import progress_bar

from .config import TrainConfig

Tensors = tuple[torch.Tensor, ...]
#: ``augment(images, generator) -> images`` for the first input of a batch.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
CHECKPOINT_FILE = "last.pt"
#: ``callback(record) -> stop?`` after every epoch; see :func:`on_epoch`.
EpochCallback = Callable[[dict[str, float]], bool | None]
_EPOCH_CALLBACKS: contextvars.ContextVar[tuple[EpochCallback, ...]] = contextvars.ContextVar(
    "tuneserve_epoch_callbacks", default=()
)


#: ``callback() -> stop?`` after every optimizer step; see :func:`on_step`.
StepCallback = Callable[[], bool | None]
_STEP_CALLBACKS: contextvars.ContextVar[tuple[StepCallback, ...]] = contextvars.ContextVar(
    "tuneserve_step_callbacks", default=()
)


@contextlib.contextmanager
def on_step(callback: StepCallback) -> Iterator[None]:
    """Call ``callback()`` after every optimizer step of every :func:`fit` run inside this
    block. One that returns True cuts the epoch short there: the epoch is scored on the
    validation rows as usual (its training loss over the rows it saw), and training ends
    keeping the best epoch, as early stopping does. A time budget ends training within one
    step of its deadline this way, not one epoch."""
    token = _STEP_CALLBACKS.set((*_STEP_CALLBACKS.get(), callback))
    try:
        yield
    finally:
        _STEP_CALLBACKS.reset(token)


@contextlib.contextmanager
def on_epoch(callback: EpochCallback) -> Iterator[None]:
    """Call ``callback(record)`` after every epoch of every :func:`fit` run inside this block
    (with the epoch's history record: ``epoch``, ``train_loss``, ``val_loss``,
    ``val_accuracy``, ...), after the epoch's checkpoint is written.

    A callback that returns True ends training there, as early stopping does: the model
    keeps its best epoch (a time budget that ran out). One that raises stops training with
    that exception (a hyperparameter search pruning a trial). Blocks nest: every callback
    of every enclosing block is called, outermost first.
    """
    token = _EPOCH_CALLBACKS.set((*_EPOCH_CALLBACKS.get(), callback))
    try:
        yield
    finally:
        _EPOCH_CALLBACKS.reset(token)


@dataclass
class LoopResult:
    """What :func:`fit` did. The model passed in now holds the best weights."""

    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    stopped_early: bool
    resumed_from_epoch: int

    @property
    def best_record(self) -> dict[str, float]:
        """The history entry of the kept epoch."""
        return next(r for r in self.history if int(r["epoch"]) == self.best_epoch)

    @property
    def val_metrics(self) -> dict[str, float]:
        """The validation metrics of the kept epoch."""
        return {k: v for k, v in self.best_record.items() if k.startswith("val_")}


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InvalidInputError("device 'cuda' was asked for, but no CUDA GPU is available")
        return torch.device("cuda")
    return torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast
    trains transformers about twice as fast (``benchmarks/results/cpu_precision.md``);
    elsewhere it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _precision(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    mode = config.mixed_precision
    if mode == "auto":
        if device.type != "cuda":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise InvalidInputError("mixed_precision 'fp16' needs a CUDA GPU; use 'bf16' on CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def _lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        epoch = step // steps_per_epoch
        if config.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if config.schedule == "step":
            return config.gamma ** (epoch // config.step_size)
        if config.schedule == "multistep":
            return config.gamma ** sum(epoch >= m for m in config.milestones)
        return 1.0

    return factor


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise InvalidInputError("the model has no trainable parameters")
    params: list[Any] = trainable
    head = getattr(model, "head", None)
    blocks_of = getattr(model, "blocks", None)
    blocks: list[nn.Module] | None = blocks_of() if callable(blocks_of) else None
    if config.layer_decay != 1.0 and blocks:
        return _optimizer_class(config, _layer_decay_groups(model, blocks, trainable, config))
    if config.backbone_lr_scale != 1.0 and isinstance(head, nn.Module):
        # a pretrained body learns slower than a fresh head (discriminative learning rates)
        head_ids = {id(p) for p in head.parameters()}
        params = [
            {"params": [p for p in trainable if id(p) in head_ids]},
            {
                "params": [p for p in trainable if id(p) not in head_ids],
                "lr": config.learning_rate * config.backbone_lr_scale,
            },
        ]
    return _optimizer_class(config, params)


def _layer_decay_groups(
    model: nn.Module, blocks: list[nn.Module], trainable: list[Any], config: TrainConfig
) -> list[dict[str, Any]]:
    """Learning rate ``lr * layer_decay ** depth``: the head at depth 0, the last block at
    depth 1, ... and everything below the first block (embeddings) deepest."""
    depth: dict[int, int] = {}
    for i, block in enumerate(reversed(blocks)):
        for p in block.parameters():
            depth[id(p)] = i + 1
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    groups: dict[int, list[Any]] = {}
    for p in trainable:
        d = 0 if id(p) in head_ids else depth.get(id(p), len(blocks) + 1)
        groups.setdefault(d, []).append(p)
    scale = config.backbone_lr_scale
    return [
        {"params": ps, "lr": config.learning_rate * (config.layer_decay**d) * (scale if d else 1)}
        for d, ps in sorted(groups.items())
    ]


def _optimizer_class(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.learning_rate,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def _batches(n: int, size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator else torch.arange(n)
    for start in range(0, n, size):
        yield order[start : start + size]


def _out_of_memory(config: TrainConfig, device: torch.device, ckpt: Path | None) -> Exception:
    half = max(1, config.batch_size // 2)
    resume = " --resume" if ckpt is not None else ""
    return OutOfMemoryError(
        f"out of memory on {device.type} with batch size {config.batch_size}. Hint: retry with "
        f"--batch-size {half} --grad-accumulation {config.grad_accumulation * 2} (the same "
        f"effective batch){resume}"
        + (", or --precision bf16" if config.mixed_precision == "off" else "")
    )


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-save never leaves a broken checkpoint


def fit(
    model: nn.Module,
    train: tuple[Tensors, torch.Tensor],
    validation: tuple[Tensors, torch.Tensor],
    config: TrainConfig,
    *,
    task: str = "classification",
    augment: Augment | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    data_fingerprint: str = "",
    description: str = "training",
) -> LoopResult:
    """Train ``model`` in place and leave it holding the best weights (on the CPU, eval mode).

    Args:
        model: Takes the input tensors positionally; returns logits (classification) or
            values (regression).
        train, validation: ``((input tensors...), targets)``; inputs share the batch axis.
        config: Optimizer, schedule, precision, early stopping and seed.
        task: ``classification`` (cross-entropy), ``regression`` (mean squared error), or
            ``self-supervised``: the model returns its own loss (a scalar) and the targets
            are ignored; the kept epoch is the one with the lowest validation loss.
        augment: Applied to the first training input of each batch.
        checkpoint_dir: Write ``last.pt`` there after every epoch.
        resume: Continue from ``checkpoint_dir/last.pt`` when it exists.
        data_fingerprint: Recorded in the checkpoint; a resume on other data is refused.
        description: Label of the progress bar.

    Raises:
        InvalidInputError: bad settings, or a checkpoint made with other settings or data.
    """
    device = _device(config)
    dtype = _precision(config, device)
    (x_train, y_train), (x_val, y_val) = train, validation
    n = len(y_train)
    classification = task == "classification"
    monitor = config.monitor if classification else "val_loss"
    weight = None
    if classification and config.class_weights:
        counts = torch.bincount(y_train, minlength=int(y_train.max()) + 1).float()
        weight = (n / (len(counts) * counts.clamp(min=1))).to(device)
    criterion: nn.Module | None = (
        nn.CrossEntropyLoss(weight=weight)
        if classification
        else None
        if task == "self-supervised"
        else nn.MSELoss()
    )
    model.to(device)
    optimizer = _optimizer(model, config)
    batches_per_epoch = math.ceil(n / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accumulation)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    history: list[dict[str, float]] = []
    best_key: tuple[float, ...] = (-math.inf,)
    best_epoch, stale, start_epoch = 0, 0, 0
    best_state = copy.deepcopy(model.state_dict())
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    torch.manual_seed(config.seed)
    if ckpt is not None and resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if (state["config"], state["data"]) != (config.fingerprint(), data_fingerprint):
            raise InvalidInputError(
                f"checkpoint {ckpt} was made with other training settings or data; resume "
                "with the same ones, or start over without --resume"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        history, best_state = state["history"], state["best_state"]
        best_key, best_epoch, stale = state["best_key"], state["best_epoch"], state["stale"]
        start_epoch = state["epoch"]

    autocast = (
        (lambda: torch.autocast(device.type, dtype=dtype))
        if dtype is not None
        else contextlib.nullcontext
    )
    stopped_early = config.patience is not None and stale >= config.patience
    with progress_bar(description, total=config.epochs * batches_per_epoch) as advance:
        advance(start_epoch * batches_per_epoch)
        for epoch in range(start_epoch + 1, config.epochs + 1):
            if stopped_early:
                break
            epoch_start = time.perf_counter()
            model.train()
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            total_loss, seen, cut = 0.0, 0, False
            optimizer.zero_grad(set_to_none=True)
            for i, idx in enumerate(_batches(n, config.batch_size, generator)):
                xb = tuple(t[idx].to(device) for t in x_train)
                if augment is not None:
                    xb = (augment(xb[0], generator), *xb[1:])
                yb = y_train[idx].to(device)
                try:
                    with autocast():
                        out = model(*xb)
                    if criterion is None:  # self-supervised: the model's output is its loss
                        loss = out.float()
                    else:
                        pred = out.float() if classification else out.float().reshape(yb.shape)
                        loss = criterion(pred, yb)
                except (torch.OutOfMemoryError, MemoryError) as exc:
                    raise _out_of_memory(config, device, ckpt) from exc
                # the last group of an epoch may hold fewer batches: average over what it has
                accum = config.grad_accumulation
                group = min(accum, batches_per_epoch - (i // accum) * accum)
                scaler.scale(loss / group).backward()
                total_loss += loss.item() * len(idx)
                seen += len(idx)
                if (i + 1) % config.grad_accumulation == 0 or i + 1 == batches_per_epoch:
                    if config.clip_grad_norm is not None:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    cut = any([bool(cb()) for cb in _STEP_CALLBACKS.get()])
                advance(1, loss=loss.item())
                if cut:
                    advance(batches_per_epoch - i - 1)
                    break
            record = {"epoch": float(epoch), "train_loss": total_loss / seen}
            if not math.isfinite(record["train_loss"]):
                raise TrainingDivergedError(
                    f"training diverged: the loss is {record['train_loss']} in epoch {epoch} "
                    f"with learning rate {config.learning_rate:g}; no package is written. "
                    "Hint: lower --lr, or add --clip-grad-norm 1.0"
                )
            record.update(evaluate(model, x_val, y_val, criterion, config.batch_size, autocast))
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["epoch_seconds"] = time.perf_counter() - epoch_start
            history.append(record)
            # accuracy on a small validation set ties often: the lower loss breaks ties
            key = (
                (record["val_accuracy"], -record["val_loss"])
                if monitor == "val_accuracy"
                else (-record["val_loss"],)
            )
            if key > best_key:
                best_key, best_epoch, stale = key, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            stopped_early = config.patience is not None and stale >= config.patience
            if ckpt is not None:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                _save(
                    ckpt,
                    {
                        "epoch": epoch,
                        "config": config.fingerprint(),
                        "data": data_fingerprint,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": torch.get_rng_state(),
                        "history": history,
                        "best_state": best_state,
                        "best_key": best_key,
                        "best_epoch": best_epoch,
                        "stale": stale,
                    },
                )
            # every callback sees the epoch, even when an earlier one asks to stop
            stops = [bool(callback(dict(record))) for callback in _EPOCH_CALLBACKS.get()]
            if (any(stops) or cut) and epoch < config.epochs:
                stopped_early = True
            if stopped_early:
                advance((config.epochs - epoch) * batches_per_epoch)
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return LoopResult(
        history=history,
        best_epoch=best_epoch,
        best_score=history[best_epoch - 1][monitor] if best_epoch else math.nan,
        stopped_early=stopped_early,
        resumed_from_epoch=start_epoch,
    )


def evaluate(
    model: nn.Module,
    inputs: Tensors,
    targets: torch.Tensor,
    criterion: nn.Module | None,
    batch_size: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> dict[str, float]:
    """Validation loss (and accuracy for classification) of ``model`` on tensors; with no
    ``criterion`` the model returns its own loss (self-supervised)."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    classification = isinstance(criterion, nn.CrossEntropyLoss)
    if criterion is None:
        # the objective draws random views: the same ones every epoch, without touching the
        # training random state (a resumed run must continue it exactly)
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(0)
            for idx in _batches(len(targets), batch_size, None):
                with autocast():
                    loss = model(*(t[idx].to(device) for t in inputs)).float()
                loss_sum += float(loss) * len(idx)
        return {"val_loss": loss_sum / len(targets)}
    with torch.no_grad():
        for idx in _batches(len(targets), batch_size, None):
            yb = targets[idx].to(device)
            with autocast():
                out = model(*(t[idx].to(device) for t in inputs)).float()
            if classification:
                correct += int((out.argmax(1) == yb).sum())
            else:
                out = out.reshape(yb.shape)
            loss_sum += float(criterion(out, yb)) * len(idx)
    metrics = {"val_loss": loss_sum / len(targets)}
    if classification:
        metrics["val_accuracy"] = correct / len(targets)
    return metrics
