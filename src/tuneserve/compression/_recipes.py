"""What the search tries: methods, and recipes that compose them (distill, then prune, then
INT8), per kind of package; and why a method does not apply to a package."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneserve.exceptions import InvalidInputError, TuneserveError
from tuneserve.lineage import Backbone
from tuneserve.package import Package

#: Methods that transform the ONNX graph (or the preprocessing) of a package; no training.
GRAPH_METHODS = ("int8-dynamic", "int8-static", "fp16", "shorten")
#: Methods that train a new torch model from the package's weights (through the seam).
TRAINING_METHODS = ("distill", "prune", "sparse", "qat")
METHODS = (*GRAPH_METHODS, *TRAINING_METHODS)

METHOD_HELP = {
    "int8-dynamic": "INT8 weights, activations quantized on the fly (onnxruntime)",
    "int8-static": "INT8 in QDQ format, calibrated on training rows (MinMax, Entropy, Percentile)",
    "fp16": "half-precision weights, for GPU execution providers",
    "shorten": "a shorter maximum sequence length, from the data's token lengths (text)",
    "distill": "a smaller student learns the package's soft labels",
    "prune": "structured pruning: whole channels, neurons or FFN units removed, fine-tuned",
    "sparse": "unstructured magnitude pruning, fine-tuned (smaller when compressed only)",
    "qat": "quantization-aware training (torchao PT2E), INT8 QDQ graph",
}


@dataclass(frozen=True)
class Step:
    """One method with its settings."""

    method: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The step's name in a variant's name: the method, and the calibration for
        int8-static (``int8-static-entropy``)."""
        calibrate = self.settings.get("calibrate")
        return f"{self.method}-{calibrate}" if calibrate else self.method


@dataclass(frozen=True)
class Recipe:
    """A chain of steps; its variant is named after them (``distill+int8-static-minmax``)."""

    steps: tuple[Step, ...]

    @property
    def name(self) -> str:
        return "+".join(step.key for step in self.steps)

    @property
    def methods(self) -> set[str]:
        return {step.method for step in self.steps}


def family_of(package: Package) -> str:
    """``cnn``, ``mlp``, ``text``, ``vision`` (torch models tuneserve can rebuild and
    retrain), ``sklearn``, ``ensemble``, or ``other`` (a graph exported from a model
    tuneserve cannot rebuild: only its graph can be compressed)."""
    from tuneserve.backbones import get_backbone
    from tuneserve.ensemble_package import is_ensemble
    from tuneserve.training.source_model import FAMILIES

    if is_ensemble(package.manifest):
        return "ensemble"
    backbone = package.manifest.lineage.backbone or Backbone()
    if str(backbone.model_class) in FAMILIES:
        return FAMILIES[str(backbone.model_class)]
    try:
        registered = get_backbone(backbone.name) if backbone.name else None
    except (KeyError, ValueError, TuneserveError):
        registered = None
    return "sklearn" if registered is not None and registered.family == "sklearn" else "other"


def _calibrated(method: str) -> list[Step]:
    return [Step(method, {"calibrate": c}) for c in ("minmax", "entropy", "percentile")]


def catalogue(family: str) -> list[Recipe]:
    """Every recipe tried for a family, cheapest first (the search may stop early)."""
    int8 = Step("int8-dynamic")
    if family in ("cnn", "mlp"):
        static = Step("int8-static", {"calibrate": "minmax"})
        chains: list[tuple[Step, ...]] = [
            (int8,),
            *((s,) for s in _calibrated("int8-static")),
            (Step("fp16"),),
            (Step("sparse"),),
            (Step("prune"),),
            (Step("prune"), static),
            (Step("distill"),),
            (Step("distill"), static),
            (Step("distill"), Step("prune"), static),
            (Step("qat"),),
        ]
    elif family == "text":
        chains = [
            (int8,),
            (Step("fp16"),),
            (Step("shorten"),),
            (Step("shorten"), int8),
            (Step("prune"),),
            (Step("prune"), int8),
            (Step("distill"),),
            (Step("distill"), int8),
            (Step("distill"), Step("shorten"), int8),
            (Step("sparse"),),
        ]
    else:  # vision, sklearn, other: what applies is decided by reason_not_applicable
        chains = [
            (int8,),
            (Step("fp16"),),
            (Step("shorten"),),
            (Step("shorten"), int8),
            (Step("sparse"),),
            (Step("distill"),),
            (Step("distill"), int8),
        ]
    return [Recipe(chain) for chain in chains]


def reason_not_applicable(package: Package, family: str, method: str) -> str | None:
    """Why ``method`` cannot compress ``package`` (one sentence), or None when it can."""
    from tuneserve.training import list_strategies
    from tuneserve.training.source_model import has_weights

    if family == "ensemble":
        return "the package is an ensemble; compress each member package instead"
    if method in TRAINING_METHODS:
        if family == "sklearn":
            return "it retrains a torch model and this is a scikit-learn package"
        if family == "other":
            backbone = package.manifest.lineage.backbone or Backbone()
            return (
                "it retrains a model tuneserve can rebuild (the cnn, mlp, text and vision "
                f"backbones), and this package holds a {backbone.model_class or 'model'} it "
                "cannot rebuild"
            )
        if method not in {s.name for s in list_strategies(family, "compress")}:
            return f"it is not implemented for {family} models"
        if not has_weights(package):
            return (
                "it retrains the model and needs extras/weights.pt, which this package does "
                "not carry (tuneserve train stores it in every torch package)"
            )
        return None
    if method == "shorten":
        if package.manifest.modality != "text":
            return "it shortens token sequences, and this package does not take text"
        return None
    from ._quantize import ptq_reason

    return ptq_reason(package, method)


def check_methods(methods: Sequence[str] | None) -> tuple[str, ...] | None:
    """``methods`` validated (None: every method)."""
    if methods is None:
        return None
    given = tuple(m.strip() for m in methods if m.strip())
    unknown = [m for m in given if m not in METHODS]
    if unknown or not given:
        raise InvalidInputError(
            f"unknown compression method(s) {', '.join(unknown) or '(none given)'}; known: "
            f"{', '.join(METHODS)}"
        )
    return given


#: The settings a graph method takes from ``--set METHOD.KEY=VALUE``.
GRAPH_SETTINGS = {
    "int8-dynamic": ("per_channel",),
    "int8-static": ("per_channel",),
    "fp16": (),
    "shorten": ("percentile",),
}


def check_settings(settings: dict[str, dict[str, Any]], family: str) -> None:
    """Refuse, before anything is built, a setting no method of this package takes or a
    value its method cannot use (``--set distill.epochs=abc``)."""
    from tuneserve.training import list_strategies

    strategies = {s.name: s for s in list_strategies(family, "compress")}
    for method, given in settings.items():
        if method not in METHODS:
            raise InvalidInputError(
                f"--set names method {method!r}, which is not a compression method; known: "
                f"{', '.join(METHODS)}"
            )
        if method in GRAPH_SETTINGS:
            unknown = sorted(set(given) - set(GRAPH_SETTINGS[method]))
            if unknown:
                takes = ", ".join(GRAPH_SETTINGS[method]) or "no settings"
                raise InvalidInputError(f"--set {method}.{unknown[0]}: {method} takes {takes}")
            continue
        strategy = strategies.get(method)
        if strategy is None:
            continue  # the method does not apply here; reason_not_applicable says why
        try:
            strategy.default_config(**given)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"--set {method}: {given} is not a valid setting ({exc}). Hint: numbers as "
                f"numbers, e.g. --set {method}.epochs=5"
            ) from exc


def _check_graph_values(method: str, given: dict[str, Any]) -> None:
    if "per_channel" in given and not isinstance(given["per_channel"], bool):
        raise InvalidInputError(
            f"--set {method}.per_channel takes true or false, got {given['per_channel']!r}"
        )
    if "percentile" in given:
        value = given["percentile"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 50 <= value <= 100:
            raise InvalidInputError(
                f"--set shorten.percentile takes a number within 50..100, got {value!r}. "
                "Hint: 95 keeps 19 of 20 texts whole"
            )
