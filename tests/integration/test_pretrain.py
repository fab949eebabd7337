"""Unsupervised transfer: ``pretrain`` on unlabeled data, then ``train --from`` it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tuneserve.data import Unlabeled, load, load_unlabeled, split
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.exporters import PARITY_TOLERANCE, load_weights
from tuneserve.package import Package
from tuneserve.runtime import Predictor
from tuneserve.training import CNNConfig, train, train_cnn
from tuneserve.training.objectives import Contrastive, nt_xent
from tuneserve.training.pretrain import pretrain, pretrain_defaults


@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.fixture(scope="module")
def unlabeled_digits(digits):
    return Unlabeled("digits", "image", list(digits.X), "digits")


@pytest.fixture(scope="module")
def contrastive_package(unlabeled_digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "cnn-contrastive"
    return pretrain(unlabeled_digits, out)  # the defaults: 40 epochs, a few seconds


def test_nt_xent_prefers_matching_views():
    torch.manual_seed(0)
    a = torch.randn(16, 32)
    matching = float(nt_xent(a, a + 0.01 * torch.randn(16, 32), 0.1))
    unrelated = float(nt_xent(a, torch.randn(16, 32), 0.1))
    assert matching < 0.1 < 1.0 < unrelated


def test_contrastive_cnn_gives_an_embedding_package(contrastive_package, digits):
    package = Package.load(contrastive_package.package.path)
    m = package.manifest
    assert (m.task, m.modality, m.label_names) == ("embedding", "image", None)
    assert m.graph.output_kind == "embedding"
    assert m.graph.parity_max_abs_diff <= PARITY_TOLERANCE
    lineage = m.lineage
    assert (lineage.trainer, lineage.backbone.strategy, lineage.backbone.name) == (
        "pretrain",
        "contrastive",
        "cnn",
    )
    history = contrastive_package.history
    assert min(r["val_loss"] for r in history) < history[0]["val_loss"]  # it learned
    predictor = Predictor(package)
    features = predictor.run(digits.X[:5])
    assert features.shape == (5, lineage.details["embedding_size"]) == (5, 128)
    assert len(predictor.predict(digits.X[:2])[0].embedding) == 128
    with pytest.raises(InvalidInputError, match=r"not a classifier .*embedding.*no probabilities"):
        predictor.predict_proba(digits.X[:2])


def test_pretrained_features_beat_random_ones(contrastive_package, digits):
    """A linear probe on the embeddings (no labels were used to learn them) does better
    than the same probe on an untrained CNN's features."""
    parts = split(digits, seed=0)
    few = parts.train.sample_per_class(10, seed=0)[0]
    pretrained = Predictor(contrastive_package.package.path)

    untrained = train_cnn(few, parts.validation, CNNConfig(epochs=1, learning_rate=1e-9))

    def probe(embed) -> float:
        clf = LogisticRegression(max_iter=2000).fit(embed(few.X), few.y)
        return float(np.mean(clf.predict(embed(parts.test.X)) == parts.test.y))

    def random_features(images):
        x = untrained.preprocessor.transform(images)["input"]
        with torch.no_grad():
            return untrained.model.embed(torch.from_numpy(x)).numpy()

    assert probe(pretrained.run) > probe(random_features) + 0.05


def test_train_from_a_pretrained_cnn(contrastive_package, digits, tmp_path):
    source = contrastive_package.package
    target = digits.select_classes(["5", "6", "7", "8", "9"])
    result = train(
        target, tmp_path / "ft", init=source.path, config=CNNConfig(epochs=3), guard=False
    )
    manifest = result.package.manifest
    assert manifest.lineage.parent == source.id
    assert manifest.task == "classification" and len(manifest.label_names) == 5
    assert result.test_metrics["test_accuracy"] > 0.8
    # the body started from the pretrained weights: its first layer moved only a little
    start = load_weights(source)["features.0.weight"]
    end = load_weights(result.package)["features.0.weight"]
    assert float((end - start).abs().mean()) < float(start.abs().mean())


def test_denoising_autoencoder(unlabeled_digits, tmp_path):
    config = pretrain_defaults("cnn", epochs=4)
    result = pretrain(unlabeled_digits, tmp_path / "dae", objective="denoise", config=config)
    lineage = result.package.manifest.lineage
    assert lineage.backbone.strategy == "denoise"
    # the decoder reconstructs 8x8 pixels
    assert lineage.backbone.model_arguments["num_classes"] == 64
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_interrupted_pretraining_resumes_exactly(unlabeled_digits, tmp_path):
    data = Unlabeled("d", "image", unlabeled_digits.X[:300], "digits")
    config = pretrain_defaults("cnn", epochs=4, batch_size=64)
    whole = pretrain(data, tmp_path / "a", config=config, checkpoint_dir=tmp_path / "ca")

    calls = {"n": 0}
    original = Contrastive.forward

    def interrupting(self, *inputs):
        calls["n"] += 1
        if calls["n"] == 12:  # in epoch 3 (4 training batches and 1 validation batch each)
            raise KeyboardInterrupt
        return original(self, *inputs)

    Contrastive.forward = interrupting
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(data, tmp_path / "b", config=config, checkpoint_dir=tmp_path / "cb")
    finally:
        Contrastive.forward = original
    assert not (tmp_path / "b").exists()
    resumed = pretrain(
        data, tmp_path / "b", config=config, checkpoint_dir=tmp_path / "cb", resume=True
    )
    assert resumed.history[:2] != [] and len(resumed.history) == 4
    a, b = load_weights(whole.package), load_weights(resumed.package)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_simcse_text_pretraining_then_probe(reviews_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    texts = tmp_path / "unlabeled.txt"
    import pandas as pd

    texts.write_text("\n".join(pd.read_csv(reviews_csv)["text"].iloc[:64]) + "\n")
    config = pretrain_defaults("text", epochs=1, batch_size=16)
    source = pretrain(texts, tmp_path / "enc", config=config, max_length=32)
    m = source.package.manifest
    assert (m.task, m.modality) == ("embedding", "text")
    assert Predictor(source.package).run(["good food", "bad food"]).shape == (2, 384)
    result = train(
        reviews_csv,
        tmp_path / "clf",
        init=source.package.path,
        strategy="probe",
        max_length=32,
        guard=False,
    )
    assert result.package.manifest.lineage.parent == source.package.id
    assert result.package.manifest.lineage.backbone.strategy == "probe"
    assert result.test_metrics["test_accuracy"] >= 0.9


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_vision_model_contrastive_pretraining(tiny_vit, unlabeled_digits, tmp_path):
    data = Unlabeled("d", "image", unlabeled_digits.X[:200], "digits")
    config = pretrain_defaults("vision", epochs=2, batch_size=32)
    result = pretrain(data, tmp_path / "vit", backbone=str(tiny_vit), config=config)
    assert Predictor(result.package).run(data.X[:3]).shape == (3, 32)
    target = load("digits").sample_per_class(20, seed=0)[0]
    tuned = train(target, tmp_path / "ft", init=result.package.path, strategy="probe", guard=False)
    assert tuned.package.manifest.lineage.parent == result.package.id


def test_unlabeled_sources_and_bad_input(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), color=i * 60).save(folder / f"{i}.png")
    assert load_unlabeled(folder).modality == "image" and len(load_unlabeled(folder)) == 3
    (tmp_path / "t.csv").write_text("id,text\n1,the soup was cold today\n2,a lovely evening out\n")
    assert load_unlabeled(tmp_path / "t.csv").X == [
        "the soup was cold today",
        "a lovely evening out",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_unlabeled(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="pretrain learns from images or text"):
        pretrain("wine", tmp_path / "x")
    with pytest.raises(
        InvalidInputError,
        match="objective 'denoise' is not valid for backbone 'minilm'; it supports contrastive",
    ):
        pretrain(tmp_path / "t.csv", tmp_path / "x", objective="denoise")
