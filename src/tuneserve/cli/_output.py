"""Shared output helpers for commands: JSON to stdout, tables through rich."""

from __future__ import annotations

import json
from typing import Any


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    print(json.dumps(obj, indent=2, default=str))


def console() -> Any:
    """A rich console on stdout."""
    from rich.console import Console

    return Console()
