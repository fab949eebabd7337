"""Filter rules: parsing, unknown names, and which rule removed which candidate."""

from __future__ import annotations

import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.selection import COST_NAMES, Rule, apply_rules, parse_rule

KNOWN = ["accuracy", "f1_macro", *COST_NAMES]


def test_rules_parse_and_filter():
    rules = [parse_rule("f1_macro>=0.9", KNOWN), parse_rule(" latency_ms <= 5 ", KNOWN)]
    assert rules == [Rule("f1_macro", ">=", 0.9), Rule("latency_ms", "<=", 5.0)]
    candidates = {
        "a": {"f1_macro": 0.95, "latency_ms": 2.0},
        "b": {"f1_macro": 0.85, "latency_ms": 1.0},
        "c": {"f1_macro": 0.97, "latency_ms": 9.0},
    }
    survivors, removed = apply_rules(candidates, rules)
    assert survivors == ["a"]
    assert removed == {"f1_macro>=0.9": ["b (0.85)"], "latency_ms<=5": ["c (9)"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("f2>=0.9", "unknown metric 'f2'; known: accuracy, f1_macro, latency_ms"),
        ("f1_macro => 0.9", "cannot read the rule"),
        ("f1_macro>=high", "cannot read the rule"),
    ],
)
def test_bad_rules_are_refused(text, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_rule(text, KNOWN)


def test_an_empty_survivor_set_says_which_rule_removed_what():
    rules = [parse_rule("accuracy>=0.99", KNOWN), parse_rule("size_mb<1", KNOWN)]
    candidates = {
        "cnn": {"accuracy": 0.98, "size_mb": 0.5},
        "vit": {"accuracy": 0.995, "size_mb": 80.0},
    }
    with pytest.raises(InvalidInputError) as caught:
        apply_rules(candidates, rules)
    assert "accuracy>=0.99 removed cnn (0.98)" in str(caught.value)
    assert "size_mb<1 removed vit (80)" in str(caught.value)
