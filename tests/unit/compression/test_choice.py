"""The rules, the Pareto front and the choice, on measurements made up for each case."""

from __future__ import annotations

import pytest

from tuneserve.compression import Budget, Measurement, pareto_front
from tuneserve.compression._choice import broken_rules, choose
from tuneserve.exceptions import InvalidInputError


def _m(name: str, value: float, latency: float, size: float, drop: float = 0.0) -> Measurement:
    return Measurement(
        name=name,
        path="",
        package_id="",
        metric="accuracy",
        value=value,
        low=None,
        high=None,
        drop=drop,
        drop_low=None,
        drop_high=None,
        agreement=None,
        size_mb=size,
        gzip_mb=size,
        latency_ms=latency,
        latency_p90_ms=latency,
        batch_latency_ms=latency * 4,
        items_per_s=32000 / (latency * 4),
        parameters=1,
        steps=[name],
        details={},
    )


ORIGINAL = _m("original", 0.95, 4.0, 10.0)


def test_front_keeps_only_the_variants_nothing_beats_on_all_three() -> None:
    fast = _m("fast", 0.90, 1.0, 5.0, 0.05)
    dominated = _m("dominated", 0.89, 2.0, 6.0, 0.06)  # fast beats it everywhere
    small = _m("small", 0.93, 3.0, 1.0, 0.02)  # slower than fast, but smaller and better
    assert pareto_front([ORIGINAL, fast, dominated, small]) == ["original", "fast", "small"]


def test_choice_is_the_fastest_within_the_accuracy_budget() -> None:
    within = _m("int8", 0.945, 2.0, 3.0, 0.005)
    faster_but_worse = _m("distill", 0.90, 1.0, 2.0, 0.05)
    chosen, why, limits = choose(ORIGINAL, [within, faster_but_worse], Budget(0.01))
    assert chosen is within
    assert "int8" in why and "2.00x faster" in why
    assert limits["distill"] == ["accuracy drop 5.00 points > 1"]
    assert limits["int8"] == []


def test_latency_and_size_rules_and_preferences() -> None:
    a = _m("a", 0.95, 1.0, 8.0, 0.0)
    b = _m("b", 0.95, 2.0, 2.0, 0.0)
    assert choose(ORIGINAL, [a, b], Budget(0.01, prefer="size"))[0] is b
    assert choose(ORIGINAL, [a, b], Budget(0.01, prefer="latency"))[0] is a
    assert choose(ORIGINAL, [a, b], Budget(0.01, size_mb=5))[0] is b
    assert broken_rules(a, Budget(0.01, latency_ms=0.5, size_mb=5)) == [
        "latency 1.00 ms > 0.5 ms",
        "size 8.000 MB > 5 MB",
    ]


def test_no_variant_meets_the_budget_names_the_closest_and_what_limited_each() -> None:
    close = _m("int8", 0.93, 2.0, 3.0, 0.02)
    far = _m("distill", 0.80, 1.0, 2.0, 0.15)
    chosen, why, _ = choose(ORIGINAL, [far, close], Budget(0.01))
    assert chosen is None
    assert why.index("int8") < why.index("distill")  # closest first
    assert "accuracy drop 2.00 points > 1" in why and "--max-accuracy-drop" in why


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_accuracy_drop": -0.1}, "--max-accuracy-drop"),
        ({"max_accuracy_drop": 2.0}, "--max-accuracy-drop"),
        ({"latency_ms": 0.0}, "--latency-ms"),
        ({"size_mb": -1.0}, "--size-mb"),
        ({"prefer": "speed"}, "--prefer"),
    ],
)
def test_bad_rules_are_refused_with_the_option_named(options: dict, named: str) -> None:
    with pytest.raises(InvalidInputError, match=named):
        Budget(**options)
