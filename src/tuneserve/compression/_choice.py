"""The rules a variant must meet, the Pareto front, and the choice among the variants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tuneserve.exceptions import InvalidInputError

from ._measure import Measurement

PREFERENCES = ("latency", "throughput", "size")
#: Latencies (or throughputs) within this share of the best are a tie on this noisy
#: machine; the smaller package, then the more accurate one, wins a tie.
TIE = 0.05


@dataclass(frozen=True)
class Budget:
    """What a chosen variant must keep, and what "most compressed" means.

    Attributes:
        max_accuracy_drop: Largest drop of the headline metric allowed (a fraction).
        latency_ms: Largest median latency at batch 1 (None: any).
        size_mb: Largest package size (None: any).
        prefer: ``latency`` (lowest at batch 1), ``throughput`` (most items/s at batch 32)
            or ``size`` (smallest package).
    """

    max_accuracy_drop: float = 0.01
    latency_ms: float | None = None
    size_mb: float | None = None
    prefer: str = "latency"

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise InvalidInputError(
                f"--max-accuracy-drop is a fraction within 0..1, got {self.max_accuracy_drop}. "
                "Hint: 0.01 allows one point of accuracy"
            )
        for name in ("latency_ms", "size_mb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.prefer not in PREFERENCES:
            raise InvalidInputError(
                f"--prefer must be one of {', '.join(PREFERENCES)}, got {self.prefer!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pareto_front(measured: Sequence[Measurement]) -> list[str]:
    """Names of the measurements no other one beats on accuracy, latency and size at once
    (at least as good on all three and better on one)."""

    def beats(a: Measurement, b: Measurement) -> bool:
        at_least = a.value >= b.value and a.latency_ms <= b.latency_ms and a.size_mb <= b.size_mb
        better = a.value > b.value or a.latency_ms < b.latency_ms or a.size_mb < b.size_mb
        return at_least and better

    return [m.name for m in measured if not any(beats(o, m) for o in measured if o is not m)]


def broken_rules(m: Measurement, budget: Budget) -> list[str]:
    """The rules ``m`` breaks, in words (empty: it meets them all)."""
    out = []
    if not m.drop <= budget.max_accuracy_drop:  # also a NaN score
        out.append(
            f"{m.metric} drop {100 * m.drop:.2f} points > {100 * budget.max_accuracy_drop:g}"
        )
    if budget.latency_ms is not None and m.latency_ms > budget.latency_ms:
        out.append(f"latency {m.latency_ms:.2f} ms > {budget.latency_ms:g} ms")
    if budget.size_mb is not None and m.size_mb > budget.size_mb:
        out.append(f"size {m.size_mb:.3f} MB > {budget.size_mb:g} MB")
    return out


def _cost(m: Measurement, prefer: str) -> float:
    """What ``prefer`` minimizes (a positive number)."""
    return {"latency": m.latency_ms, "throughput": 1.0 / m.items_per_s, "size": m.size_mb}[prefer]


def _best(feasible: Sequence[Measurement], prefer: str) -> Measurement:
    """The lowest cost, where costs within :data:`TIE` of it tie (then size, accuracy)."""
    lowest = min(_cost(m, prefer) for m in feasible)
    tied = [m for m in feasible if _cost(m, prefer) <= lowest * (1 + TIE)]
    return min(tied, key=lambda m: (m.size_mb, -m.value, _cost(m, prefer)))


def _compared(original: float, variant: float, faster: str, slower: str) -> str:
    if variant <= 0 or original <= 0:
        return "n/a"
    ratio = original / variant
    if ratio >= 1 + TIE:
        return f"{ratio:.2f}x {faster}"
    if ratio <= 1 - TIE:
        return f"{1 / ratio:.2f}x {slower}"
    return f"within {100 * TIE:g}%: no different on this machine"


def choose(
    original: Measurement, variants: Sequence[Measurement], budget: Budget
) -> tuple[Measurement | None, str, dict[str, list[str]]]:
    """The most compressed variant within the budget, why, and each variant's broken rules."""
    limits = {m.name: broken_rules(m, budget) for m in variants}
    feasible = [m for m in variants if not limits[m.name]]
    if not feasible:
        closest = sorted(variants, key=lambda m: (len(limits[m.name]), m.drop))[:3]
        said = "; ".join(f"{m.name}: {', '.join(limits[m.name])}" for m in closest)
        return (
            None,
            f"no variant of {len(variants)} meets the rules. Closest: {said or 'none built'}. "
            "Hint: allow a larger --max-accuracy-drop, a larger --latency-ms or --size-mb, or "
            "more fine-tuning epochs (--epochs)",
            limits,
        )
    best = _best(feasible, budget.prefer)
    size = _compared(original.size_mb, best.size_mb, "smaller", "larger")
    tie = f"within {100 * TIE:g}% of the best count as a tie, won by the smaller package"
    what = {
        "latency": f"the fastest at batch 1 (latencies {tie}): {best.latency_ms:.3f} ms against "
        f"the original's {original.latency_ms:.3f} ms, "
        f"{_compared(original.latency_ms, best.latency_ms, 'faster', 'slower')}; "
        f"{best.size_mb:.3f} MB against {original.size_mb:.3f} MB, {size}",
        "throughput": f"the most items/s at batch 32 (throughputs {tie}): "
        f"{best.items_per_s:.0f} against the original's {original.items_per_s:.0f}; "
        f"{best.size_mb:.3f} MB, {size}",
        "size": f"the smallest package: {best.size_mb:.3f} MB against the original's "
        f"{original.size_mb:.3f} MB, {size}",
    }[budget.prefer]
    why = (
        f"{best.name}: {what} among the {len(feasible)} of {len(variants)} variants whose "
        f"{best.metric} drops at most {100 * budget.max_accuracy_drop:g} points (it drops "
        f"{100 * best.drop:.2f}: {best.value:.4f} against {original.value:.4f})"
    )
    return best, why, limits
