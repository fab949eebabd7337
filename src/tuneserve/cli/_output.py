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


def shown(text: object) -> str:
    """``text`` safe to print through rich: control characters escaped (a label could move
    the cursor or recolour the terminal) and rich markup (``[red]``, ``[link=...]``) shown
    as written."""
    from rich.markup import escape

    from tuneserve.package import printable

    return escape(printable(str(text)))
