"""What the registry hands out: references (``NAME``, ``NAME/VERSION``, ``NAME@ALIAS``),
versions, audit entries and registration results."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tuneserve.exceptions import TuneserveError

__all__ = ["NAME", "AuditEntry", "Ref", "Registered", "Version"]

#: What a registered model may be called.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/@]+))?$")


@dataclass(frozen=True)
class Ref:
    """A parsed reference: ``N``, ``N/V``, ``N@ALIAS`` (optionally ``models:/`` first)."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ref:
        match = _REF.match(text.strip())
        if not match or not NAME.match(match["name"]):
            raise TuneserveError(
                f"bad model reference {text!r}; write NAME, NAME/VERSION or NAME@ALIAS "
                "(models:/ in front is accepted), e.g. digits@champion"
            )
        return cls(match["name"], match["version"], match["alias"])

    def __str__(self) -> str:
        if self.version:
            return f"{self.name}/{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


@dataclass
class Version:
    """One registered version, as ``show`` and ``list`` report it."""

    name: str
    version: str
    aliases: list[str]
    package_id: str
    description: str
    tags: dict[str, str]
    metrics: dict[str, float]
    run_id: str | None
    source: str
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": int(self.version),
            "aliases": self.aliases,
            "package_id": self.package_id,
            "description": self.description,
            "metrics": self.metrics,
            "tags": self.tags,
            "run_id": self.run_id,
            "created": self.created,
        }


@dataclass
class AuditEntry:
    """One change of an alias: who moved it, when, from which version to which."""

    action: str
    alias: str
    from_version: str | None
    to_version: str | None
    who: str
    when: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "who": self.who,
            "when": self.when,
            "note": self.note,
        }


@dataclass
class Registered:
    """What :meth:`Registry.register` did: the version, and whether it is new."""

    version: Version
    created: bool
    run_id: str
    warnings: list[str] = field(default_factory=list)
