"""Model selection: filter candidates with rules, combine members into ensembles, and
write the result as one package the runtime and the server run like any other."""

from ._combiner import Combiner
from ._ensemble import (
    EnsembleSelection,
    fit_stacker,
    fit_weights,
    hard_vote,
    soft_vote,
    stack_features,
    weighted,
)
from ._package import export_ensemble, member_probabilities
from ._rules import COST_NAMES, Rule, apply_rules, parse_rule
from ._select import METHODS, Selection, select

__all__ = [
    "COST_NAMES",
    "METHODS",
    "Combiner",
    "EnsembleSelection",
    "Rule",
    "Selection",
    "apply_rules",
    "export_ensemble",
    "fit_stacker",
    "fit_weights",
    "hard_vote",
    "member_probabilities",
    "parse_rule",
    "select",
    "soft_vote",
    "stack_features",
    "weighted",
]
