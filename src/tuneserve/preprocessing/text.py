"""Text preprocessing with Hugging Face ``tokenizers`` (Rust, no torch, no transformers)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from tokenizers import Encoding, Tokenizer

from tuneserve.exceptions import InputItemError, InvalidInputError, NotFoundError

from ._base import Preprocessor, as_batch, register_preprocessor

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_INPUTS = ("input_ids", "attention_mask")
#: Characters of a text first given to the tokenizer, per token of ``max_length``. Tokens of
#: real text average 3-6 characters with their spaces, so a text cut here still holds far
#: more than ``max_length`` tokens; one that does not (long runs of spaces, one endless word)
#: is tokenized again with 4 times as many characters, up to ``MAX_CHARS_PER_TOKEN``.
CHARS_PER_TOKEN = 32
#: The most characters of one text ever tokenized, per token of ``max_length`` (65,536 for
#: 128 tokens): tokenizing is linear in the characters, and whatever lies beyond this is
#: truncated away anyway.
MAX_CHARS_PER_TOKEN = 16 * CHARS_PER_TOKEN


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
        encodings = self._encode(list(texts))
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

    def _encode(self, texts: list[str]) -> list[Encoding]:
        """Tokenize ``texts``, each truncated to ``max_length`` tokens, without tokenizing
        all of a long text: only a head of ``CHARS_PER_TOKEN * max_length`` characters at
        first. The result equals tokenizing the whole text when the head's kept tokens end
        in its first half: the tokens before the cut do not depend on what follows it, and
        the half left over covers the word the cut split. A head that does not settle so is
        tokenized again, 4 times as long, up to ``MAX_CHARS_PER_TOKEN * max_length``."""
        budget = CHARS_PER_TOKEN * self.max_length
        most = MAX_CHARS_PER_TOKEN * self.max_length
        heads = [t[:budget] for t in texts]
        encodings = self.tokenizer.encode_batch(heads)
        pending = [i for i, t in enumerate(texts) if len(t) > budget]
        grown = False
        while pending:
            pending = [i for i in pending if not _settled(encodings[i], budget)]
            if not pending or budget >= most:
                break
            budget, grown = min(budget * 4, most), True
            for i in pending:
                heads[i] = texts[i][:budget]
            again = self.tokenizer.encode_batch([heads[i] for i in pending])
            for i, encoding in zip(pending, again, strict=True):
                encodings[i] = encoding
            pending = [i for i in pending if len(texts[i]) > budget]
        # padding is to the longest of one call: texts that grew need one call for all
        return self.tokenizer.encode_batch(heads) if grown else encodings

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


def _settled(encoding: Encoding, head: int) -> bool:
    """Whether the encoding of a text's first ``head`` characters is that of the whole
    text: it was truncated, and its kept tokens end in the first half of the head."""
    if not encoding.overflowing:
        return False  # the head fits: what was cut off might have held more tokens
    return max((end for _, end in encoding.offsets), default=0) <= head // 2
