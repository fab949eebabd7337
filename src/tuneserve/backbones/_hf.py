"""What text and vision backbones share: loading Hugging Face models, finding their blocks."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from tuneserve.exceptions import NotFoundError, PackageFormatError


def quiet_optional_kernels() -> None:
    """Transformers imports torchao when it is installed (for QAT); on a CPU machine
    torchao logs that its CUDA kernels failed to load, and torch's pytree a deprecation of
    torchao's own: notices for developers, not users. Errors still come through."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_pretrained(path: str, what: str, name: str | None = None) -> nn.Module:
    """``AutoModel.from_pretrained(path)``; a failure is a one-line :class:`NotFoundError`.

    ``what`` names the kind of model in the message (``text encoder``, ``vision model``)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    quiet_optional_kernels()
    try:
        return AutoModel.from_pretrained(path)
    except (OSError, ValueError) as exc:
        hint = "" if Path(path).exists() else " Offline, pass a local model folder"
        raise NotFoundError(f"cannot load {what} {name or path!r}: {exc}.{hint}") from exc


def config_json(model: object) -> str | None:
    """The Hugging Face config of ``model`` as JSON, or None for other modules."""
    config = getattr(model, "config", None)
    to_json = getattr(config, "to_json_string", None)
    return str(to_json()) if callable(to_json) else None


def model_from_config(text: str) -> nn.Module:
    """An untrained Hugging Face model built from the JSON of :func:`config_json` (its
    weights are loaded afterwards, from a package)."""
    import tempfile

    from transformers import AutoConfig, AutoModel

    quiet_optional_kernels()
    if not json.loads(text).get("model_type"):
        raise PackageFormatError("the stored encoder config names no model_type")
    try:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "config.json").write_text(text)
            config = AutoConfig.from_pretrained(folder)
        return AutoModel.from_config(config)
    except (ValueError, KeyError, OSError) as exc:
        raise PackageFormatError(
            f"cannot rebuild the stored encoder: {exc}. Hint: upgrade transformers, or keep "
            "the original model at hand"
        ) from exc


#: Where common Hugging Face architectures keep their blocks, first to last.
_BLOCK_PATHS = (
    "encoder.layer",  # BERT, MiniLM, ViT, DeiT, DINOv2
    "encoder.layers",  # Swin (stages)
    "encoder.stages",  # ResNet, ConvNeXt
    "layers",
    "transformer.layer",  # DistilBERT
    "stages",
)


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The blocks of an encoder, first to last (for partial unfreezing and LR decay)."""
    for path in _BLOCK_PATHS:
        node: object = encoder
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList) and len(node):
            return list(node)
    raise NotFoundError(f"cannot find the blocks of {type(encoder).__name__}")
