"""Ensemble building blocks on fixed probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from tuneserve.evaluation import single_metric
from tuneserve.exceptions import InvalidInputError
from tuneserve.selection import (
    EnsembleSelection,
    fit_stacker,
    fit_weights,
    hard_vote,
    soft_vote,
    stack_features,
    weighted,
)


def _members(seed: int, members: int = 6, rows: int = 240, classes: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    P = []
    for m in range(members):
        skill = rng.uniform(0.2, 2.5)
        logits = rng.normal(size=(rows, classes)) + skill * np.eye(classes)[y]
        if m % 2:  # some members are good on one half of the rows only
            logits[: rows // 2] = rng.normal(size=(rows // 2, classes))
        P.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    return np.stack(P), y


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "f1_macro"])
@pytest.mark.parametrize("seed", range(4))
def test_greedy_selection_never_scores_worse_than_the_best_member(metric, seed):
    P, y = _members(seed)
    sign = -1 if metric == "log_loss" else 1
    best_single = max(sign * single_metric("classification", metric, y, p) for p in P)
    for init in (1, 3):
        selection = EnsembleSelection(metric=metric, rounds=15, init=init).fit(P, y)
        ensemble = sign * single_metric("classification", metric, y, selection.predict_proba(P))
        assert ensemble >= best_single - 1e-12
        assert selection.weights_.sum() == pytest.approx(1.0) and (selection.weights_ >= 0).all()


def test_greedy_selection_combines_complementary_members():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    truth = np.eye(2)[y]
    a = np.where(np.arange(400)[:, None] < 200, 0.9 * truth + 0.05, 0.5)  # right on half 1
    b = np.where(np.arange(400)[:, None] >= 200, 0.9 * truth + 0.05, 0.5)  # right on half 2
    noise = rng.dirichlet([1, 1], 400)
    P = np.stack([a, b, noise])
    selection = EnsembleSelection(metric="log_loss", rounds=10).fit(P, y)
    assert selection.weights_[2] == 0 and selection.weights_[0] > 0 and selection.weights_[1] > 0
    bagged = EnsembleSelection(metric="log_loss", rounds=10, bags=8, seed=1).fit(P, y)
    assert bagged.weights_.sum() == pytest.approx(1.0) and bagged.weights_[2] < 0.2


def test_votes_weights_and_stacking():
    P, y = _members(3, members=3)
    np.testing.assert_allclose(soft_vote(P), P.mean(0))
    votes = hard_vote(P)
    agree = (P.argmax(2) == P.argmax(2)[0]).all(0)  # rows where all three agree
    assert (votes[agree].argmax(1) == P[0][agree].argmax(1)).all()
    assert np.allclose(votes.round(6).sum(1), 1.0)
    w = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(weighted(P, w), 0.5 * P[0] + 0.25 * P[1] + 0.25 * P[2])

    perfect = np.eye(3)[y] * 0.98 + 0.02 / 3
    fitted = fit_weights(np.stack([perfect, P[0], P[1]]), y)
    assert fitted.sum() == pytest.approx(1.0) and fitted[0] > 0.9
    assert (fitted[1:] == 0).all()  # negligible weights are dropped, not served
    kept_all = fit_weights(np.stack([perfect, P[0], P[1]]), y, min_weight=0.0)
    assert (kept_all > 0).all() and kept_all[1:].max() < 1e-3  # tiny, yet served without it

    stacker = fit_stacker(P, y)
    assert stack_features(P).shape == (len(y), 9)
    assert stacker.predict_proba(stack_features(P)).shape == (len(y), 3)
    assert stacker.score(stack_features(P), y) >= max(np.mean(p.argmax(1) == y) for p in P) - 0.02


def test_bad_shapes_and_metrics_are_refused():
    P, y = _members(0, members=2)
    with pytest.raises(InvalidInputError, match="shape"):
        soft_vote(P[0])
    with pytest.raises(InvalidInputError, match="labels for"):
        fit_weights(P, y[:10])
    with pytest.raises(InvalidInputError, match="one non-negative weight per member"):
        weighted(P, np.array([1.0, -1.0]))
    with pytest.raises(InvalidInputError, match="unknown metric 'nope'"):
        EnsembleSelection(metric="nope").fit(P, y)


def test_packaged_hard_vote_breaks_ties_like_the_in_memory_one():
    import onnxruntime as ort

    from tuneserve.selection import Combiner

    rng = np.random.default_rng(0)
    P = rng.dirichlet([1, 1, 1], size=(2, 500))  # two members: every disagreement is a tie
    combiner = Combiner("vote", np.array([0.5, 0.5]))
    session = ort.InferenceSession(combiner.onnx(2, 3).SerializeToString())
    feed = np.concatenate(list(P), axis=1).astype(np.float32)
    (graph,) = session.run(None, {"member_probabilities": feed})
    expected = combiner.combine(P)
    assert (P[0].argmax(1) != P[1].argmax(1)).sum() > 100
    np.testing.assert_array_equal(graph.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(graph, expected, atol=1e-6)
    np.testing.assert_allclose(expected.sum(1), 1.0)
