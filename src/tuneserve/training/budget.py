"""A training-time budget (``--time-budget``): loop-trained models stop before an epoch
that would not fit, keeping their best epoch, and the lineage says so.

The budget counts from when the strategy starts fitting (loading the model, tokenizing,
caching features and the epochs), not the export and parity check that follow. It is
checked between epochs through :func:`tuneserve.training.loop.on_epoch`: after each epoch,
training ends when the time used plus the last epoch's time would pass the budget; and
after every optimizer step through :func:`tuneserve.training.loop.on_step`: when the
deadline has passed (the machine got slower, or one epoch is longer than the budget), the
epoch is cut there, scored, and training ends with the best epoch kept.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tuneserve.exceptions import InvalidInputError
from tuneserve.lineage import Lineage

from .loop import on_epoch, on_step

#: Seconds a ``train`` spends at most on a loop-trained model unless told otherwise: enough
#: for a few epochs of full fine-tuning of MiniLM on a few thousand short texts on 2 CPU
#: cores (``benchmarks/results/train_vs_trainer.md``), and a wait a person sits through.
DEFAULT_TIME_BUDGET = 180.0

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$", re.IGNORECASE)
_RULE = (
    "--time-budget must be a duration > 0: seconds (180), or a number with s, m or h (90s, 3m, 1h)"
)


def duration_seconds(text: str) -> float | None:
    """Seconds of ``90``, ``90s``, ``3m`` or ``1h`` (any case, spaces allowed); None when
    ``text`` is not such a duration (callers name their own option in the error)."""
    match = _DURATION.match(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_time_budget(value: str | float | None) -> float | None:
    """Seconds of a time budget given as ``90s``, ``3m``, ``1h``, plain seconds, or
    ``none`` (no budget; ``None`` too).

    Raises:
        InvalidInputError: anything else, zero or negative (the message says the rule).
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("none", "off"):
            return None
        parsed = duration_seconds(value)
        if parsed is None:
            raise InvalidInputError(
                f"{_RULE}; got {value!r}. Hint: --time-budget 5m, or --time-budget none for "
                "no limit"
            )
        seconds = parsed
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{_RULE}; got {value!r} ({type(value).__name__})")
    else:
        seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInputError(
            f"{_RULE}; got {value!r}. Hint: --time-budget 5m, or --time-budget none for no limit"
        )
    return seconds


def format_seconds(seconds: float) -> str:
    """``180`` -> ``3m``, ``90`` -> ``90s``, ``5400`` -> ``1.5h``."""
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


@dataclass
class Budget:
    """A deadline ``seconds`` after ``start`` (``None``: no budget), and what it did.

    Attributes:
        seconds: The budget.
        start: ``time.perf_counter()`` when it began.
        stopped_after: The epoch after which it asked the loop to stop, if it did.
        epochs_seen: Epochs reported to it.
    """

    seconds: float | None
    start: float = field(default_factory=time.perf_counter)
    stopped_after: int | None = None
    epochs_seen: int = 0
    _last: float | None = None

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left (infinite without a budget)."""
        return math.inf if self.seconds is None else self.seconds - self.used()

    def after_epoch(self, record: dict[str, float]) -> bool:
        """The loop's epoch callback: stop when the next epoch, as long as this one, would
        pass the deadline."""
        now = time.perf_counter()
        took = now - (self._last if self._last is not None else now - record["epoch_seconds"])
        self._last = now
        self.epochs_seen += 1
        if self.seconds is None or self.left() >= took:
            return False
        self.stopped_after = int(record["epoch"])
        return True

    def after_step(self) -> bool:
        """The loop's step callback: cut the epoch when the deadline has passed (a slower
        machine than the last epoch said, or a first epoch longer than the budget)."""
        return self.seconds is not None and self.left() <= 0

    @contextlib.contextmanager
    def watching(self) -> Iterator[Budget]:
        """Every loop inside the block stops when the budget would run out: after an epoch
        when the next would not fit, and within one step when the deadline passes."""
        self._last = None
        with on_epoch(self.after_epoch), on_step(self.after_step):
            yield self

    def record(self, lineage: Lineage, epochs: int | None) -> dict[str, Any]:
        """What the budget did, for ``Lineage.details["time_budget"]``: ``ended_training``
        is true when it stopped a loop before its last epoch (``epochs``, or the history's
        length when the loop ran to its end)."""
        run = len(lineage.history)
        ended = self.stopped_after is not None and (epochs is None or run < epochs)
        return {
            "seconds": self.seconds,
            "used_seconds": round(self.used(), 2),
            "ended_training": ended,
            "epochs_run": run,
            "epochs_planned": epochs,
        }


def with_budget_record(trained: Any, budget: Budget, epochs: int | None) -> Any:
    """``trained`` (a :class:`TrainedModel`) with ``details["time_budget"]`` added."""
    if budget.seconds is None:
        return trained
    lineage = trained.lineage
    details = {**lineage.details, "time_budget": budget.record(lineage, epochs)}
    trained.lineage = lineage.model_copy(update={"details": details})
    return trained


def budget_message(details: dict[str, Any]) -> str | None:
    """One line for the CLI when the budget ended training, else ``None``."""
    record = details.get("time_budget")
    if not isinstance(record, dict) or not record.get("ended_training"):
        return None
    return (
        f"the time budget of {format_seconds(float(record['seconds']))} ended training after "
        f"epoch {record['epochs_run']} of {record['epochs_planned']} (best epoch kept). Hint: "
        "a larger --time-budget (or none) lets it run to the end"
    )
