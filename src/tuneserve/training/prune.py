"""Pruning as ``compress`` strategies: make a smaller model from the package ``plan.init``.

``sparse`` (cnn, mlp, text, vision): unstructured global magnitude pruning. The smallest
weights (L1, over all Linear and Conv layers but the output layer and the embeddings) are
set to zero, the model is fine-tuned with the masks kept, and the masks are folded into
the weights. The graph keeps its shape: the zeros shrink a *compressed* copy of
``model.onnx`` (zip, gzip), not the file on disk, nor the latency on ONNX Runtime's CPU
provider, which multiplies dense matrices zeros and all.

``prune`` (cnn, mlp, text): structured pruning. Whole channels and neurons are removed,
so the exported graph is a smaller dense one. The CNN and the MLP are pruned with
Torch-Pruning's dependency graph (DepGraph: pruning a layer's outputs prunes the inputs
of the layers that read them, through the CNN's flatten too), ranked by group magnitude;
the same share of every layer is removed, so the pruned model is again a
:class:`SmallCNN` or :class:`TableMLP` of smaller ``width`` and ``hidden``, which is what
:func:`tuneserve.training.source_model.source_model` rebuilds it from. A BERT-like text
encoder loses the same share of feed-forward units in every layer, ranked by their mean
activation on training inputs times the norm of their output weights, and its config's
``intermediate_size`` follows, so the stored encoder config rebuilds it. (Attention heads
are kept: a Hugging Face config has one ``num_attention_heads`` and derives the head size
from it, so fewer heads of the same size cannot be described by the config.)

Both fine-tune with the loop afterwards (checkpoints and ``--resume`` included) and record
in ``lineage.compression`` what they removed and what it cost on the validation part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from tuneserve.data import Dataset
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.lineage import Backbone, Lineage, next_compression

from ._build import Parts, Run
from ._plan import Plan, Strategy, register_strategy
from ._result import TrainedModel
from .config import TrainConfig
from .loop import LoopResult, fit
from .source_model import SourceModel, source_model

#: What ``sparse`` records about its zeros, for the compression report.
SPARSE_NOTE = (
    "unstructured sparsity: the zeroed weights stay in the graph, so model.onnx keeps its "
    "size and ONNX Runtime's CPU provider its latency (it multiplies dense matrices); the "
    "zeros shrink a compressed copy of the file (zip, gzip). Use prune (structured) for a "
    "smaller, faster graph"
)
EVAL_BATCH = 256


@dataclass
class SparseConfig(TrainConfig):
    """Settings of ``sparse``: the loop's (fine-tuning after pruning), plus ``sparsity``,
    the share of the prunable weights set to zero."""

    sparsity: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.sparsity < 1:
            raise InvalidInputError(
                "sparsity is the share of weights set to zero and must be between 0 and 1 "
                f"(both excluded); got {self.sparsity}. Hint: --sparsity 0.5 zeroes half of them"
            )


@dataclass
class PruneConfig(TrainConfig):
    """Settings of ``prune``: the loop's (fine-tuning after pruning), plus ``ratio``, the
    share of channels (neurons, feed-forward units) removed from every pruned layer."""

    ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.ratio < 1:
            raise InvalidInputError(
                "ratio is the share of channels removed from each layer and must be between "
                f"0 and 1 (both excluded); got {self.ratio}. Hint: --ratio 0.5 removes half"
            )


@dataclass
class _Start:
    """The package's model and the data it is fine-tuned on, in the loop's terms.

    ``inner`` is what the loop trains: the model itself, or for a regression MLP the
    :class:`TableMLP` inside its :class:`ScaledOutput` (it learns standardized targets)."""

    source: SourceModel
    inner: nn.Module
    train: tuple[tuple[torch.Tensor, ...], torch.Tensor]
    validation: tuple[tuple[torch.Tensor, ...], torch.Tensor]
    y_validation: np.ndarray  # in the package's label order, or the target's own scale
    task: str
    label_names: tuple[str, ...] | None
    fingerprint: str  # the checkpoint's data key: the training rows and the source package
    scaled: bool = False  # a regression MLP: the exported graph scales its outputs back
    mean: float = 0.0
    std: float = 1.0


def _labels(model: nn.Module, data: Dataset, package: Any) -> tuple[str, ...]:
    """The data's class names; the package must have the same classes. When it orders
    them otherwise, the output layer's rows are put in the data's order."""
    names = tuple(str(n) for n in (data.label_names or ()))
    ours = tuple(str(n) for n in (package.manifest.label_names or ()))
    if names != ours:
        if sorted(names) != sorted(ours):
            raise DataError(
                f"the data's labels {list(names)} are not the labels of package "
                f"{package.path} {list(ours)}; compress with data of the same classes (the "
                "data the package was trained on)"
            )
        layer = output_layer(model)
        assert isinstance(layer, nn.Linear)
        order = torch.tensor([ours.index(n) for n in names])
        with torch.no_grad():
            layer.weight.copy_(layer.weight[order])
            if layer.bias is not None:
                layer.bias.copy_(layer.bias[order])
    return names


def _start(parts: Parts, plan: Plan, method: str) -> _Start:
    """Rebuild ``plan.init``'s model and put the train and validation parts in its terms."""
    package = plan.init
    if package is None:
        raise InvalidInputError(
            f"{method} compresses a package; pass the package to start from (init=, or "
            "`tuneserve compress PACKAGE`)"
        )
    source = source_model(package, method)
    manifest = package.manifest
    train, validation = parts.train, parts.validation
    if train.task != manifest.task:
        raise DataError(
            f"package {package.path} does {manifest.task}, but {train.name} is {train.task} "
            "data; compress with data of the package's task"
        )
    labels = None
    inner = source.model
    mean, std = 0.0, 1.0
    if train.task == "classification":
        labels = _labels(inner, train, package)
        y_train, y_val = train.y, validation.y
        targets = (torch.from_numpy(y_train), torch.from_numpy(y_val))
    else:
        y_train, y_val = train.y, validation.y
        inner = getattr(source.model, "model", source.model)  # ScaledOutput wraps the MLP
        if inner is not source.model:
            mean, std = float(source.model.mean), float(source.model.std)  # type: ignore[arg-type]

        def standard(y: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(((y - mean) / std).astype(np.float32))

        targets = (standard(y_train), standard(y_val))
    feeds = [source.preprocessor.transform(d.X) for d in (train, validation)]
    x_train, x_val = (tuple(torch.from_numpy(v) for v in f.values()) for f in feeds)
    return _Start(
        source=source,
        inner=inner,
        train=(x_train, targets[0]),
        validation=(x_val, targets[1]),
        y_validation=np.asarray(y_val),
        task=train.task,
        label_names=labels,
        fingerprint=f"{train.fingerprint}|{package.id}",  # a checkpoint resumes this source only
        scaled=inner is not source.model,
        mean=mean,
        std=std,
    )


def _outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for at in range(0, len(inputs[0]), EVAL_BATCH):
            out.append(model(*(t[at : at + EVAL_BATCH] for t in inputs)).float().numpy())
    return np.concatenate(out)


def _val_score(start: _Start, inner: nn.Module) -> dict[str, float]:
    """``val_accuracy`` or ``val_mse`` (in the target's scale) of ``inner``."""
    out = _outputs(inner, start.validation[0])
    if start.task == "classification":
        return {"val_accuracy": round(float(np.mean(out.argmax(1) == start.y_validation)), 4)}
    values = out.reshape(-1) * start.std + start.mean
    return {"val_mse": round(float(np.mean((values - start.y_validation) ** 2)), 6)}


def _fine_tune(
    start: _Start, inner: nn.Module, config: TrainConfig, run: Run, what: str
) -> LoopResult:
    return fit(
        inner,
        start.train,
        start.validation,
        config,
        task=start.task,
        checkpoint_dir=run.checkpoint_dir,
        resume=run.resume,
        data_fingerprint=start.fingerprint,
        description=f"fine-tuning the {what} model",
    )


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _trained(
    start: _Start,
    inner: nn.Module,
    parts: Parts,
    plan: Plan,
    method: str,
    result: LoopResult,
    settings: dict[str, Any],
    details: dict[str, Any],
) -> TrainedModel:
    """The fine-tuned model as a :class:`TrainedModel` whose lineage continues the
    package's compression chain."""
    assert plan.init is not None and plan.config is not None
    model = inner
    if start.scaled:
        from tuneserve.backbones.tabular import ScaledOutput

        model = ScaledOutput(inner, start.mean, start.std)
    metrics = result.val_metrics
    if start.task != "classification":
        metrics = {"val_mse": metrics["val_loss"] * start.std**2}
    config = getattr(model, "config", {})
    parent = plan.init.manifest.lineage
    return TrainedModel(
        model=model,
        preprocessor=start.source.preprocessor,
        task=start.task,
        label_names=start.label_names,
        data_fingerprint=parts.train.fingerprint,
        lineage=Lineage(
            trainer=method,
            backbone=Backbone(model_arguments=dict(config) if isinstance(config, dict) else {}),
            config=plan.config.to_dict(),
            history=result.history,
            best_epoch=result.best_epoch,
            parent=plan.init.id,
            compression=next_compression(plan.init.id, parent, method, settings, details),
        ),
        metrics=metrics,
    )


# --- sparse: unstructured magnitude pruning -------------------------------------------


def output_layer(model: nn.Module) -> nn.Module | None:
    """The layer that computes the model's outputs: its ``head`` when that is one linear
    layer, else its last linear layer."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv layers whose weights ``sparse`` prunes: all but the output layer,
    the embeddings (a vision model's patch projection) and an unused pooler."""
    out = output_layer(model)
    skip = {"embeddings", "pooler"}
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
        and m is not out
        and not skip & set(name.split("."))
    ]


def _zeros(tensors: list[torch.Tensor]) -> tuple[int, int]:
    return sum(int((t == 0).sum()) for t in tensors), sum(t.numel() for t in tensors)


def fit_sparse(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
    """``sparse``: zero the ``sparsity`` share of the smallest weights (one global L1
    threshold), fine-tune with the masks kept, fold the masks into the weights."""
    config = plan.config
    if not isinstance(config, SparseConfig):
        raise InvalidInputError("the sparse strategy needs a SparseConfig")
    start = _start(parts, plan, "sparse")
    inner = start.inner
    before = _val_score(start, inner)
    layers = prunable_layers(inner)
    if not layers:
        raise InvalidInputError(
            f"the {start.source.family} model of package {plan.init and plan.init.path} has no "
            "linear or conv layer besides its output layer to prune"
        )
    torch_prune.global_unstructured(
        [(m, "weight") for _, m in layers],
        pruning_method=torch_prune.L1Unstructured,
        amount=config.sparsity,
    )
    pruned = _val_score(start, inner)
    result = _fine_tune(start, inner, config, run, "sparse")
    for _, m in layers:
        torch_prune.remove(m, "weight")  # weight = weight_orig * mask, a plain tensor
    zeros, total = _zeros([m.weight for _, m in layers])  # type: ignore[misc]
    all_zeros, all_total = _zeros(list(inner.parameters()))
    details = {
        "sparsity": round(zeros / total, 4),
        "sparsity_all_parameters": round(all_zeros / all_total, 4),
        "zero_weights": zeros,
        "pruned_weights": total,
        "parameters": all_total,
        "layers_pruned": [name for name, _ in layers],
        "validation": {"before": before, "pruned": pruned, "fine_tuned": _val_score(start, inner)},
        "note": SPARSE_NOTE,
    }
    settings = {"sparsity": config.sparsity, "importance": "l1-global", "epochs": config.epochs}
    return _trained(start, inner, parts, plan, "sparse", result, settings, details)


# --- prune: structured -------------------------------------------------------------------


def kept(size: int, ratio: float) -> int:
    """Channels left of ``size`` when removing ``ratio`` of them (at least one)."""
    return max(1, round(size * (1 - ratio)))


def _depgraph_prune(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    targets: list[tuple[nn.Module, int]],
) -> None:
    """Remove the least important output channels of each ``(layer, keep)`` and every
    channel that depends on them (Torch-Pruning's dependency graph, group magnitude)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=list(example))
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for layer, keep in targets:
        if isinstance(layer, nn.Conv2d):
            size, how = layer.out_channels, tp.prune_conv_out_channels
        else:
            assert isinstance(layer, nn.Linear)
            size, how = layer.out_features, tp.prune_linear_out_channels
        if keep >= size:
            continue
        scores = importance(graph.get_pruning_group(layer, how, idxs=list(range(size))))
        drop = sorted(torch.argsort(scores)[: size - keep].tolist())
        group = graph.get_pruning_group(layer, how, idxs=drop)
        if not graph.check_pruning_group(group):
            raise InvalidInputError(f"cannot remove {size - keep} channels of {layer}")
        group.prune()


def _rebuilt(pruned: nn.Module, fresh: nn.Module) -> nn.Module:
    """``fresh`` (built from the pruned sizes) holding ``pruned``'s weights: proof that the
    stored ``model_arguments`` rebuild the pruned model."""
    try:
        fresh.load_state_dict(pruned.state_dict())
    except RuntimeError as exc:  # a layer pruned out of step with the others
        raise InvalidInputError(
            f"the pruned {type(fresh).__name__} does not match one built from its new sizes "
            f"{getattr(fresh, 'config', {})}: {exc}"
        ) from exc
    return fresh


def _prune_cnn(
    model: nn.Module, example: tuple[torch.Tensor, ...], ratio: float
) -> tuple[nn.Module, dict[str, Any]]:
    from tuneserve.backbones.cnn import SmallCNN

    assert isinstance(model, SmallCNN)
    cfg: dict[str, Any] = dict(model.config)
    width, hidden = kept(int(cfg["width"]), ratio), kept(int(cfg["hidden"]), ratio)
    conv1, conv2, dense = model.features[0], model.features[3], model.head[1]
    _depgraph_prune(model, example, [(conv1, width), (conv2, 2 * width), (dense, hidden)])
    fresh = SmallCNN(
        **{**cfg, "image_size": tuple(cfg["image_size"]), "width": width, "hidden": hidden}
    )
    channels = {
        "width": {"before": cfg["width"], "after": width},
        "hidden": {"before": cfg["hidden"], "after": hidden},
    }
    return _rebuilt(model, fresh), {"channels": channels}


def _prune_mlp(
    model: nn.Module, example: tuple[torch.Tensor, ...], ratio: float
) -> tuple[nn.Module, dict[str, Any]]:
    from tuneserve.backbones.tabular import TableMLP

    assert isinstance(model, TableMLP)
    cfg: dict[str, Any] = dict(model.config)
    hidden = tuple(kept(int(h), ratio) for h in cfg["hidden"])
    linears = [m for m in model.net if isinstance(m, nn.Linear)][:-1]  # not the output
    _depgraph_prune(model, example, list(zip(linears, hidden, strict=True)))
    fresh = TableMLP(
        int(cfg["in_features"]), int(cfg["outputs"]), hidden=hidden, dropout=cfg["dropout"]
    )
    channels = {"hidden": {"before": list(cfg["hidden"]), "after": list(hidden)}}
    return _rebuilt(model, fresh), {"channels": channels}


def _ffn_layers(encoder: nn.Module) -> list[Any]:
    """The transformer layers of a BERT-like encoder (``intermediate.dense`` and
    ``output.dense`` around each feed-forward block, ``config.intermediate_size``)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    config = getattr(encoder, "config", None)
    ok = (
        isinstance(layers, nn.ModuleList)
        and len(layers) > 0
        and hasattr(config, "intermediate_size")
        and all(
            isinstance(getattr(getattr(b, "intermediate", None), "dense", None), nn.Linear)
            and isinstance(getattr(getattr(b, "output", None), "dense", None), nn.Linear)
            for b in layers
        )
    )
    if not ok:
        raise InvalidInputError(
            f"structured pruning of text encoders handles BERT-like layers (BERT, MiniLM, "
            f"RoBERTa: intermediate.dense and output.dense); {type(encoder).__name__} has "
            "none. Hint: use --strategy sparse, or distill it into a smaller encoder"
        )
    assert isinstance(layers, nn.ModuleList)
    return list(layers)


def _ffn_importance(model: Any, start: _Start, blocks: list[Any]) -> list[torch.Tensor]:
    """Per layer, per feed-forward unit: its mean absolute activation on (up to 64)
    training inputs times the norm of its output weights (what removing it takes away)."""
    sums = [torch.zeros(b.intermediate.dense.out_features) for b in blocks]
    count = [0]

    def hook(i: int) -> Any:
        def record(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            sums[i] += out.detach().abs().float().flatten(0, -2).mean(0)

        return record

    handles = [b.intermediate.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        inputs = tuple(t[:64] for t in start.train[0])
        model.eval()
        with torch.no_grad():
            for at in range(0, len(inputs[0]), 16):
                model(*(t[at : at + 16] for t in inputs))
                count[0] += 1
    finally:
        for h in handles:
            h.remove()
    return [
        s / max(1, count[0]) * b.output.dense.weight.detach().norm(dim=0)
        for s, b in zip(sums, blocks, strict=True)
    ]


def _linear_slice(layer: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """``layer`` keeping outputs (``dim`` 0) or inputs (``dim`` 1) ``idx``."""
    weight = layer.weight.detach().index_select(dim, idx).clone()
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None)
    new.weight.data.copy_(weight)
    if layer.bias is not None:
        bias = layer.bias.detach()
        new.bias.data.copy_(bias.index_select(0, idx) if dim == 0 else bias)
    return new


def _prune_text(model: Any, start: _Start, ratio: float) -> tuple[nn.Module, dict[str, Any]]:
    from tuneserve.backbones import config_json, model_from_config

    encoder: Any = model.encoder
    blocks = _ffn_layers(encoder)
    size = int(encoder.config.intermediate_size)
    keep = kept(size, ratio)
    scores = _ffn_importance(model, start, blocks)
    for block, score in zip(blocks, scores, strict=True):
        idx = torch.sort(torch.topk(score, keep).indices).values
        block.intermediate.dense = _linear_slice(block.intermediate.dense, idx, 0)
        block.output.dense = _linear_slice(block.output.dense, idx, 1)
    encoder.config.intermediate_size = keep
    text = config_json(encoder)
    assert text is not None
    fresh = type(model)(
        model_from_config(text), int(model.config["outputs"]), model.config["dropout"]
    )
    details = {
        "intermediate_size": {"before": size, "after": keep},
        "layers": len(blocks),
        "attention_heads": "kept",
    }
    return _rebuilt(model, fresh), details


def fit_prune(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
    """``prune``: remove ``ratio`` of the channels (neurons, feed-forward units) of every
    layer but the output layer, fine-tune, and keep a model its sizes rebuild."""
    config = plan.config
    if not isinstance(config, PruneConfig):
        raise InvalidInputError("the prune strategy needs a PruneConfig")
    start = _start(parts, plan, "prune")
    inner = start.inner
    family = start.source.family
    before_params = _parameters(inner)
    before = _val_score(start, inner)
    example = tuple(t[:2] for t in start.train[0])
    details: dict[str, Any]
    if family in ("cnn", "mlp"):
        prune_small = _prune_cnn if family == "cnn" else _prune_mlp
        inner, details = prune_small(inner, example, config.ratio)
        importance = "group-magnitude-l2 (torch-pruning DepGraph)"
    elif family == "text":
        inner, details = _prune_text(inner, start, config.ratio)
        importance = "mean |activation| x output-weight norm, per feed-forward unit"
    else:
        raise InvalidInputError(
            f"structured pruning handles cnn, mlp and text models, not {family}. Hint: use "
            "--strategy sparse"
        )
    pruned = _val_score(start, inner)
    result = _fine_tune(start, inner, config, run, "pruned")
    after_params = _parameters(inner)
    details.update(
        {
            "parameters": {"before": before_params, "after": after_params},
            "parameters_kept": round(after_params / before_params, 4),
            "validation": {
                "before": before,
                "pruned": pruned,
                "fine_tuned": _val_score(start, inner),
            },
        }
    )
    settings = {"ratio": config.ratio, "importance": importance, "epochs": config.epochs}
    return _trained(start, inner, parts, plan, "prune", result, settings, details)


_SMALL = {"learning_rate": 1e-3, "epochs": 8, "patience": 3}
_ENCODER = {"learning_rate": 5e-5, "epochs": 3, "batch_size": 16, "patience": 2}
_DEFAULTS = {"cnn": _SMALL, "mlp": _SMALL, "text": _ENCODER, "vision": _ENCODER}

for _family in ("cnn", "mlp", "text"):
    register_strategy(
        Strategy(
            _family,
            "prune",
            fit_prune,
            stage="compress",
            config_class=PruneConfig,
            defaults=_DEFAULTS[_family],
            description="remove whole channels (structured), fine-tune: a smaller dense graph",
        )
    )
for _family in ("cnn", "mlp", "text", "vision"):
    register_strategy(
        Strategy(
            _family,
            "sparse",
            fit_sparse,
            stage="compress",
            config_class=SparseConfig,
            defaults=_DEFAULTS[_family],
            description="zero the smallest weights (unstructured), fine-tune; the graph "
            "keeps its size: smaller only when zipped",
        )
    )
