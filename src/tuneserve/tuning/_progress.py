"""The progress of a running study: a bar (trials done, pruned, failed, the best so far and
the ETA) fed by an Optuna callback, and one plain line per finished trial for output that
is not a terminal."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuneserve.progress import progress_bar

#: ``callback(study, frozen_trial)``, what ``study.optimize(callbacks=[...])`` calls
StudyCallback = Callable[[optuna.Study, FrozenTrial], None]


@contextmanager
def study_progress(
    study: optuna.Study, *, trials: int | None, timeout: float | None
) -> Iterator[StudyCallback]:
    """A bar for ``study.optimize``; yields the callback to pass it.

    With ``trials`` (how many this run is to finish) the bar counts the trials this run
    finishes, complete or pruned (a failed trial is not one: it shows as ``failed``); its
    ETA is the bar's. With only ``timeout`` it counts the timeout's seconds (ticking once a
    second, so the ETA is the time left); with neither it is a plain count. Beside it:
    trials done (complete or pruned), pruned, failed, and the study's best value so far
    (other workers' trials included). The bar
    draws only where :func:`tuneserve.progress.progress_bar` does (a terminal, or
    ``TUNESERVE_PROGRESS=1``); the callback is harmless either way.
    """
    by_time = trials is None and timeout is not None
    total = trials if trials is not None else math.ceil(timeout) if timeout is not None else None
    label = f"tuning {study.study_name}" + (" (seconds of the timeout)" if by_time else "")
    counts = {"done": 0, "pruned": 0, "failed": 0}
    lock = threading.Lock()
    with progress_bar(label, total=total) as advance:

        def callback(study: optuna.Study, trial: FrozenTrial) -> None:
            with lock:
                done = trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
                counts["done"] += done
                counts["pruned"] += trial.state == TrialState.PRUNED
                counts["failed"] += trial.state == TrialState.FAIL
                fields: dict[str, float | str] = dict(counts)
                best = _best_value(study)
                if best is not None:
                    fields["best"] = best
                advance(int(done and not by_time), **fields)

        if not by_time:
            yield callback
            return
        stop = threading.Event()
        ticker = threading.Thread(target=_tick, args=(advance, stop, total), daemon=True)
        ticker.start()
        try:
            yield callback
        finally:
            stop.set()
            ticker.join()


def _tick(advance: Callable[..., None], stop: threading.Event, total: int | None) -> None:
    """Advance the bar by the whole seconds passed, once a second, until stopped or full."""
    started, shown = time.monotonic(), 0
    while not stop.wait(1.0):
        passed = min(int(time.monotonic() - started), total or 0)
        if passed > shown:
            advance(passed - shown)
            shown = passed


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no complete trial yet
        return None


def trial_line(trial: FrozenTrial, metric: str) -> str:
    """One plain line for a finished trial, e.g. ``trial 3 complete: val_accuracy=0.9123
    (cnn/full; lr=0.001, batch_size=32) 12.3 s``; a pruned trial says at which rung it was
    stopped, a failed one its error."""
    a = trial.user_attrs
    state = trial.state.name.lower()
    if trial.state == TrialState.PRUNED and trial.last_step is not None:
        state += f" at rung {trial.last_step}"
    line = f"trial {trial.number} {state}"
    if trial.value is not None:
        line += f": {metric}={trial.value:.4g}"
    what = "/".join(str(a[k]) for k in ("backbone", "strategy") if a.get(k))
    shown = {k: v for k, v in trial.params.items() if not (k == "backbone" and a.get(k))}
    params = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
    inside = "; ".join(p for p in (what, params) if p)
    if inside:
        line += f" ({inside})"
    seconds = a.get("seconds")
    if seconds is None and trial.duration is not None:
        seconds = trial.duration.total_seconds()
    if seconds is not None:
        line += f" {float(seconds):.1f} s"
    if trial.state == TrialState.FAIL:
        line += f": {a.get('error', 'failed (no error recorded)')}"
    return line


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
