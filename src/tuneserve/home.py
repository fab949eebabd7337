"""Where tuneserve keeps its state: ``TUNESERVE_HOME`` (default ``./.tuneserve``)."""

from __future__ import annotations

import os
from pathlib import Path


def tuneserve_home() -> Path:
    """The state folder: caches, demo output, and later the registry."""
    return Path(os.environ.get("TUNESERVE_HOME", ".tuneserve")).expanduser()
