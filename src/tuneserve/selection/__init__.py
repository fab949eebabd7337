"""Model selection: filter candidates with rules, combine members into ensembles."""

from ._ensemble import (
    EnsembleSelection,
    fit_stacker,
    fit_weights,
    hard_vote,
    soft_vote,
    stack_features,
    weighted,
)
from ._rules import COST_NAMES, Rule, apply_rules, parse_rule

__all__ = [
    "COST_NAMES",
    "EnsembleSelection",
    "Rule",
    "apply_rules",
    "fit_stacker",
    "fit_weights",
    "hard_vote",
    "parse_rule",
    "soft_vote",
    "stack_features",
    "weighted",
]
