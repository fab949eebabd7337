"""Transfer with the body frozen first: train the new output layer alone for a few epochs,
then every weight (a pretrained body is not pushed around by the gradients of a random
head; one of the alternatives the ``--from`` guard tries, :mod:`.guard`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from .config import TrainConfig
from .loop import LoopResult


def fit_head_first(
    model: nn.Module,
    head: nn.Module,
    head_epochs: int,
    config: TrainConfig,
    run_fit: Callable[[TrainConfig], LoopResult],
) -> LoopResult:
    """``run_fit(config)`` for ``head`` alone over ``head_epochs`` epochs (every other weight
    of ``model`` frozen), then for every weight over the rest of ``config.epochs`` (at least
    one); one history, epochs numbered on. ``head_epochs`` 0: one plain ``run_fit``."""
    if head_epochs <= 0:
        return run_fit(config)
    own = {id(p) for p in head.parameters()}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    for p in body:
        p.requires_grad_(False)
    try:
        first = run_fit(replace(config, epochs=head_epochs, patience=None, warmup_epochs=0.0))
    finally:
        for p in body:
            p.requires_grad_(True)
    rest = max(1, config.epochs - head_epochs)
    second = run_fit(
        replace(config, epochs=rest, warmup_epochs=min(config.warmup_epochs, rest - 1))
    )
    shifted = [{**r, "epoch": r["epoch"] + head_epochs} for r in second.history]
    return LoopResult(
        history=first.history + shifted,
        best_epoch=second.best_epoch + head_epochs,
        best_score=second.best_score,
        stopped_early=second.stopped_early,
        resumed_from_epoch=second.resumed_from_epoch,
    )
