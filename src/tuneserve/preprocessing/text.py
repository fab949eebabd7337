"""Text preprocessing with Hugging Face ``tokenizers`` (Rust, no torch, no transformers)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from tokenizers import Tokenizer

from tuneserve.exceptions import InputItemError, InvalidInputError, NotFoundError

from ._base import Preprocessor, as_batch, register_preprocessor

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_INPUTS = ("input_ids", "attention_mask")


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """Load a fast tokenizer from a local folder, a ``tokenizer.json`` file, or a Hub id.

    A Hub id needs network access (or a warm Hugging Face cache); local paths never do.
    """
    path = Path(name_or_path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if path.suffix == ".json" or str(name_or_path).startswith((".", "/")):
        raise NotFoundError(
            f"tokenizer {str(name_or_path)!r} not found: no {TOKENIZER_FILE} there. Hint: pass "
            "a Hugging Face model folder that holds tokenizer.json, or a Hub id when online"
        )
    try:
        return Tokenizer.from_pretrained(str(name_or_path))
    except Exception as exc:  # tokenizers raises plain Exception for hub failures
        raise NotFoundError(
            f"cannot load tokenizer {str(name_or_path)!r} from the Hugging Face Hub: {exc}. "
            "Hint: offline, pass a local model folder that holds tokenizer.json"
        ) from exc


@register_preprocessor
class TextPreprocessor(Preprocessor):
    """Tokenize strings into padded id and mask arrays for a transformer-style graph.

    Output: ``{name: int64 (batch, sequence)}`` for each name in ``model_inputs``
    (``input_ids``, ``attention_mask``, optionally ``token_type_ids``), padded to the longest
    text of the batch and truncated to ``max_length`` tokens (with a log warning).

    Args:
        tokenizer: a ``tokenizers.Tokenizer``, or a folder / file / Hub id to load one from.
        max_length: longest sequence in tokens, special tokens included.
        model_inputs: graph input names to produce.
    """

    kind: ClassVar[str] = "text"
    modality: ClassVar[str] = "text"

    def __init__(
        self,
        tokenizer: Tokenizer | str | Path,
        max_length: int = 128,
        model_inputs: tuple[str, ...] | list[str] = DEFAULT_INPUTS,
    ) -> None:
        self.tokenizer = (
            tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        )
        self.max_length = max_length
        self.model_inputs = tuple(model_inputs)
        self._warned_truncation = False
        unknown = set(self.model_inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise InvalidInputError(
                f"unknown text model inputs {sorted(unknown)}; "
                "choose from input_ids, attention_mask, token_type_ids"
            )
        self._configure()

    def _configure(self) -> None:
        tok = self.tokenizer
        tok.enable_truncation(max_length=self.max_length)
        pad = tok.padding or {}
        pad_id = pad.get("pad_id", 0)
        pad_token = pad.get("pad_token", "[PAD]")
        if pad.get("pad_token") is None and tok.token_to_id("[PAD]") is None:
            for candidate in ("<pad>", "<|endoftext|>", "</s>"):
                if tok.token_to_id(candidate) is not None:
                    pad_token, pad_id = candidate, tok.token_to_id(candidate) or 0
                    break
        tok.enable_padding(pad_id=pad_id, pad_token=pad_token)

    def fit(self, inputs: Any) -> Self:
        return self  # the tokenizer comes pretrained

    def transform(self, inputs: Any) -> dict[str, np.ndarray]:
        texts = as_batch(inputs, "strings")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputItemError(
                    "text", i, f"is a {type(text).__name__}, not a string; send strings"
                )
        encodings = self.tokenizer.encode_batch(list(texts))
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            # warn once per preprocessor; later batches log at debug level only
            emit = log.debug if self._warned_truncation else log.warning
            self._warned_truncation = True
            emit(
                "%d of %d texts were longer than %d tokens and were truncated",
                truncated,
                len(encodings),
                self.max_length,
            )
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: arrays[name] for name in self.model_inputs}

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokenizer": TOKENIZER_FILE,
            "max_length": self.max_length,
            "model_inputs": list(self.model_inputs),
        }

    def assets(self) -> dict[str, bytes | Path]:
        return {TOKENIZER_FILE: self.tokenizer.to_str().encode()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], assets: Path | None = None) -> Self:
        if assets is None:
            raise NotFoundError("a text package needs its assets folder for tokenizer.json")
        return cls(
            Tokenizer.from_file(str(assets / spec["tokenizer"])),
            max_length=int(spec["max_length"]),
            model_inputs=tuple(spec["model_inputs"]),
        )

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "text",
            "max_tokens": self.max_length,
            "accepts": "strings; longer texts are truncated",
        }

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch", 1: "sequence"} for name in self.model_inputs}
