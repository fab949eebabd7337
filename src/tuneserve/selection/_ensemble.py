"""Ways to combine the class probabilities of several members.

Every function takes the members' probabilities as one array ``P`` of shape
``(members, rows, classes)`` (columns in the same label order) and, to fit, the true
class indices ``y`` of those rows: validation rows, or out-of-fold rows from ``tuneserve
cv`` (the honest choice for weights and stacking).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sklearn

from tuneserve.evaluation import check_metric, oriented, single_metric
from tuneserve.exceptions import InvalidInputError


def _check(P: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 3 or P.shape[0] < 1:
        raise InvalidInputError(
            f"member probabilities must have shape (members, rows, classes); got {P.shape}"
        )
    if y is not None and len(y) != P.shape[1]:
        raise InvalidInputError(f"{len(y)} labels for {P.shape[1]} rows of probabilities")
    return P


def vote_tiebreak(members: int) -> float:
    """Weight of the mean probability in a hard vote: it breaks ties between classes with
    equal votes, and is too small (under one vote of ``1 / members``) to overturn a vote.
    Large enough to survive float32 in the graph."""
    return 0.1 / members


def hard_vote(P: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Each member votes for its top class, with its weight (default: equal weights summing
    to 1); rows are vote shares, and ties go to the class with the larger mean probability
    (see :func:`vote_tiebreak`), as the packaged hard vote computes them."""
    P = _check(P)
    w = np.full(len(P), 1 / len(P)) if weights is None else np.asarray(weights, np.float64)
    votes = np.zeros(P.shape[1:])
    rows = np.arange(P.shape[1])
    for weight, member in zip(w, P, strict=True):
        votes[rows, member.argmax(axis=1)] += weight
    tie = vote_tiebreak(len(P))
    return (votes + tie * P.mean(axis=0)) / (1 + tie)


def soft_vote(P: np.ndarray) -> np.ndarray:
    """The mean of the members' probabilities."""
    return _check(P).mean(axis=0)


def weighted(P: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean of the members' probabilities (weights sum to 1)."""
    P = _check(P)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(P),) or (w < 0).any() or w.sum() <= 0:
        raise InvalidInputError(f"need one non-negative weight per member; got {w.tolist()}")
    return np.tensordot(w / w.sum(), P, axes=1)


def fit_weights(P: np.ndarray, y: np.ndarray, min_weight: float = 1e-3) -> np.ndarray:
    """Weights on the simplex that minimize the log loss of the weighted mean on ``y``
    (scipy L-BFGS over softmax-parametrized weights). Weights below ``min_weight`` become
    0 (the others are renormalized): such a member moves no probability by more than about
    twice that, yet would cost a whole model call on every request it serves."""
    from scipy.optimize import minimize
    from scipy.special import softmax

    P = _check(P, y)
    rows = np.arange(P.shape[1])
    picked = np.clip(P[:, rows, y], 1e-15, 1.0)  # (members, rows): probability of the truth

    def loss(theta: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(softmax(theta) @ picked, 1e-15, None))))

    result = minimize(loss, np.zeros(len(P)), method="L-BFGS-B")
    weights = np.asarray(softmax(result.x))
    weights[weights < min(min_weight, weights.max())] = 0.0
    return weights / weights.sum()


def _score(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    return oriented(metric, single_metric("classification", metric, y, proba))


@dataclass
class EnsembleSelection:
    """Greedy ensemble selection with replacement (Caruana et al. 2004).

    Start from the ``init`` best members (sorted initialization); then, ``rounds`` times,
    add the member (again, if it helps) whose addition scores best on the selection rows.
    The kept ensemble is the best one seen along the way, so it never scores worse on
    those rows than the best single member. With ``bags`` > 1, selection runs on random
    halves of the members and the weights are averaged (bagged ensemble selection); if
    the average scores below the best member, the best member is kept.
    AutoGluon runs 25 rounds.

    Attributes (after :meth:`fit`):
        weights_: One weight per member, summing to 1.
        trajectory_: The score after each round (higher is better; the negative of losses).
    """

    metric: str = "log_loss"
    rounds: int = 25
    init: int = 1
    bags: int = 1
    bag_fraction: float = 0.5
    seed: int = 0
    weights_: np.ndarray = field(init=False, repr=False)
    trajectory_: list[float] = field(init=False, default_factory=list, repr=False)

    def _select(self, P: np.ndarray, y: np.ndarray, members: np.ndarray) -> np.ndarray:
        singles = [_score(self.metric, y, P[i]) for i in members]
        order = members[np.argsort(singles, kind="stable")[::-1]]
        counts = np.zeros(len(P))
        counts[order[: max(1, min(self.init, len(order)))]] += 1
        total = np.tensordot(counts, P, axes=1)
        best_counts = np.zeros(len(P))
        best_counts[order[0]] = 1  # the best single member: the floor
        best = max(singles)
        current = _score(self.metric, y, total / counts.sum())
        if current > best:
            best, best_counts = current, counts.copy()
        for _ in range(self.rounds):
            n = counts.sum() + 1
            scores = [_score(self.metric, y, (total + P[i]) / n) for i in members]
            pick = members[int(np.argmax(scores))]
            counts[pick] += 1
            total += P[pick]
            self.trajectory_.append(max(scores))
            if max(scores) > best:
                best, best_counts = max(scores), counts.copy()
        return best_counts / best_counts.sum()

    def fit(self, P: np.ndarray, y: np.ndarray) -> EnsembleSelection:
        P = _check(P, y)
        if self.rounds < 0 or self.init < 1 or self.bags < 1:
            raise InvalidInputError("rounds must be >= 0, init and bags >= 1")
        check_metric(self.metric, "classification", P.shape[2])
        rng = np.random.default_rng(self.seed)
        everyone = np.arange(len(P))
        self.trajectory_ = []
        with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
            if self.bags == 1:
                self.weights_ = self._select(P, y, everyone)
                return self
            size = max(1, round(self.bag_fraction * len(P)))
            weights = np.zeros(len(P))
            for _ in range(self.bags):
                bag = np.sort(rng.choice(everyone, size=size, replace=False))
                weights += self._select(P, y, bag)
            weights /= weights.sum()
            singles = [_score(self.metric, y, p) for p in P]
            if _score(self.metric, y, weighted(P, weights)) < max(singles):
                weights = np.eye(len(P))[int(np.argmax(singles))]  # keep the floor
        self.weights_ = weights
        return self

    def predict_proba(self, P: np.ndarray) -> np.ndarray:
        return weighted(P, self.weights_)


def fit_stacker(P: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """A multinomial logistic regression on the members' concatenated probabilities: fit it
    on out-of-fold probabilities, so it never learns from a member's training rows."""
    from sklearn.linear_model import LogisticRegression

    P = _check(P, y)
    missing = sorted(set(range(P.shape[2])) - set(np.unique(y).tolist()))
    if missing:
        raise InvalidInputError(
            f"the rows to fit the stacker on lack class(es) {missing}; it needs every class. "
            "Hint: use more rows (a larger fit share, or --oof)"
        )
    features = stack_features(P)
    return LogisticRegression(max_iter=1000, random_state=seed).fit(features, y)


def stack_features(P: np.ndarray) -> np.ndarray:
    """``(rows, members * classes)``: each row's probabilities from every member."""
    P = _check(P)
    return np.concatenate(list(P), axis=1)
