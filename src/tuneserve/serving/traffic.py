"""Traffic between a model's champion and its challenger: canary (a percentage of requests
answered by the challenger) and shadow (every request mirrored to the challenger, its
answer compared and never returned). Both need a registered model; the challenger is the
``challenger`` alias, followed like any alias."""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneserve.exceptions import InvalidInputError

from .repository import ModelSpec

CHALLENGER = "challenger"


def companion(name: str) -> str:
    """The served name of ``name``'s challenger."""
    return f"{name}:{CHALLENGER}"


@dataclass
class Traffic:
    """``canary``: model -> percent of its requests answered by the challenger.
    ``shadow``: models whose requests are mirrored to the challenger."""

    canary: dict[str, float] = field(default_factory=dict)
    shadow: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, canary: list[str], shadow: list[str]) -> Traffic:
        split: dict[str, float] = {}
        for entry in canary:
            name, sep, percent = entry.rpartition(":")
            try:
                value = float(percent)
            except ValueError:
                value = -1.0
            if not sep or not name or not 0 < value <= 100:
                raise InvalidInputError(
                    f"--canary {entry!r} must be MODEL:PERCENT with 0 < PERCENT <= 100, "
                    "e.g. digits:10"
                )
            split[name] = value
        return cls(split, set(shadow))

    def companions(self, specs: list[ModelSpec]) -> list[ModelSpec]:
        """The challenger specs the canary and shadow models need."""
        by_name = {s.name: s for s in specs}
        out = []
        for name in sorted(set(self.canary) | self.shadow):
            spec = by_name.get(name)
            if spec is None:
                raise InvalidInputError(
                    f"--canary/--shadow name {name!r} is not a served model; served: "
                    f"{', '.join(sorted(by_name))}"
                )
            if spec.ref is None:
                raise InvalidInputError(
                    f"model {name!r} is a package folder; canary and shadow need a registered "
                    f"model with a {CHALLENGER!r} alias"
                )
            registered = spec.ref.split("@")[0].split("/")[0]
            out.append(ModelSpec(name=companion(name), ref=f"{registered}@{CHALLENGER}"))
        return out
