"""The torch model inside a package, rebuilt from its stored weights: what compression
(distillation's teacher, pruning, quantization-aware training) starts from."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tuneserve.exceptions import InvalidInputError
from tuneserve.lineage import Backbone
from tuneserve.package import Package
from tuneserve.preprocessing import Preprocessor

#: The family of each model class a torch package can hold.
FAMILIES = {
    "SmallCNN": "cnn",
    "TableMLP": "mlp",
    "ScaledOutput": "mlp",
    "TextClassifier": "text",
    "VisionClassifier": "vision",
}


@dataclass
class SourceModel:
    """A package's model as it was trained, in eval mode.

    Attributes:
        model: Returns what the package's model returned before the serving head: logits
            (classification) or values in the target's own scale (regression).
        preprocessor: The package's fitted preprocessor (the model's input).
        family: ``cnn``, ``mlp``, ``text`` or ``vision``.
        backbone: The lineage's backbone record (name, strategy, model class, arguments).
    """

    model: nn.Module
    preprocessor: Preprocessor
    family: str
    backbone: Backbone


def has_weights(package: Package) -> bool:
    """Whether the package stored its torch ``state_dict`` (``extras/weights.pt``)."""
    from tuneserve.exporters.torch_model import WEIGHTS_FILE

    return f"extras/{WEIGHTS_FILE}" in package.manifest.files


def require_weights(package: Package, method: str) -> None:
    """Refuse a package without ``extras/weights.pt`` for a training-based ``method``."""
    backbone = package.manifest.lineage.backbone or Backbone()
    if backbone.model_class not in FAMILIES:
        raise InvalidInputError(
            f"{method} retrains a torch model, and package {package.path} holds a "
            f"{backbone.model_class or 'non-torch'} model (backbone {backbone.name!r}). Hint: "
            "post-training quantization (int8-dynamic) is what applies to it"
        )
    if not has_weights(package):
        raise InvalidInputError(
            f"{method} retrains the model and needs its torch weights, extras/weights.pt, which "
            f"package {package.path} does not carry. Hint: `tuneserve train` stores them in "
            "every torch package; retrain it with tuneserve train (or compress it with "
            "post-training methods only: --methods int8-dynamic,int8-static,fp16)"
        )


def source_model(package: Package, method: str = "compression") -> SourceModel:
    """Rebuild the torch model of ``package`` with its trained weights.

    Raises:
        InvalidInputError: not a torch package, or no ``extras/weights.pt`` (the message
            says how to get one).
    """
    require_weights(package, method)
    backbone = package.manifest.lineage.backbone or Backbone()
    family = FAMILIES[str(backbone.model_class)]
    model: nn.Module
    if family == "cnn":
        from tuneserve.backbones.cnn import SmallCNN
        from tuneserve.exporters import load_weights
        from tuneserve.preprocessing import ImagePreprocessor

        from ._result import package_preprocessor

        cfg = backbone.model_arguments
        model = SmallCNN(**{**cfg, "image_size": tuple(cfg["image_size"])})
        model.load_state_dict(load_weights(package))
        preprocessor: Preprocessor = package_preprocessor(package, ImagePreprocessor)
    elif family == "mlp":
        from tuneserve.backbones.tabular import ScaledOutput

        from .classic import _mlp_from_package

        start = _mlp_from_package(package)
        model = start.model
        if backbone.model_class == "ScaledOutput":
            model = ScaledOutput(model, start.mean, start.std)
        preprocessor = start.preprocessor
    elif family == "text":
        from tuneserve.backbones.text import TextClassifier, load_encoder
        from tuneserve.preprocessing import TextPreprocessor

        from ._result import package_preprocessor
        from .encoder import encoder_from_package

        model, _ = encoder_from_package(package, TextClassifier, load_encoder, "text-encoder")
        preprocessor = package_preprocessor(package, TextPreprocessor)
    else:
        from tuneserve.backbones.vision import VisionClassifier, load_vision_model
        from tuneserve.preprocessing import ImagePreprocessor

        from ._result import package_preprocessor
        from .encoder import encoder_from_package

        model, _ = encoder_from_package(package, VisionClassifier, load_vision_model, "vision")
        preprocessor = package_preprocessor(package, ImagePreprocessor)
    model.eval()
    return SourceModel(model=model, preprocessor=preprocessor, family=family, backbone=backbone)
