"""Filter rules: ``f1_macro>=0.9``, ``latency_ms<=5``, ``size_mb<=30``."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuneserve.exceptions import InvalidInputError

#: Measured per package besides the metrics (see :class:`tuneserve.evaluation.Cost`).
COST_NAMES = ("latency_ms", "latency_p90_ms", "batch_latency_ms", "items_per_s", "size_mb")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
_RULE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Rule:
    """``name op value``: a candidate passes when its ``name`` compares true."""

    name: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value:g}"

    def passes(self, measured: dict[str, float]) -> bool:
        """False when the value is missing (e.g. ROC-AUC of rows that lack a class)."""
        value = measured.get(self.name)
        return value is not None and _OPS[self.op](value, self.value)


def parse_rule(text: str, known: Sequence[str]) -> Rule:
    """Parse ``text``; ``known`` lists the metric and cost names a rule may use."""
    match = _RULE.match(text)
    if match is None:
        raise InvalidInputError(
            f"cannot read the rule {text!r}: write NAME OP NUMBER with OP one of "
            ">=, <=, >, <, ==, e.g. 'f1_macro>=0.9' or 'latency_ms<=5'"
        )
    name, op, number = match.groups()
    if name not in known:
        raise InvalidInputError(
            f"the rule {text!r} names an unknown metric {name!r}; known: {', '.join(known)}"
        )
    try:
        value = float(number)
    except ValueError:
        raise InvalidInputError(
            f"the rule {text!r} compares with {number!r}, not a number"
        ) from None
    return Rule(name, op, value)


def apply_rules(
    candidates: dict[str, dict[str, float]], rules: Sequence[Rule]
) -> tuple[list[str], dict[str, list[str]]]:
    """The candidates that pass every rule, and for each rule the candidates it removed
    (with their values). Raises when none passes, saying which rule removed what."""
    removed: dict[str, list[str]] = {}
    survivors = []
    for name, measured in candidates.items():
        failed = [r for r in rules if not r.passes(measured)]
        for rule in failed:
            value = measured.get(rule.name)
            shown = f"{value:.4g}" if value is not None else "not measured"
            removed.setdefault(str(rule), []).append(f"{name} ({shown})")
        if not failed:
            survivors.append(name)
    if not survivors:
        detail = "; ".join(f"{rule} removed {', '.join(names)}" for rule, names in removed.items())
        raise InvalidInputError(
            f"no candidate meets every rule: {detail}. Hint: relax a rule or add candidates"
        )
    return survivors, removed
