"""Where tuneserve keeps its state: ``TUNESERVE_HOME`` (default ``./.tuneserve``)."""

from __future__ import annotations

import os
from pathlib import Path


def tuneserve_home() -> Path:
    """The state folder (caches, demo output, the embedded MLflow store), always absolute.

    ``TUNESERVE_HOME`` may be relative (the default ``.tuneserve`` is): it is resolved
    against the working directory here, once, so that every reader (MLflow's file URIs
    included, which refuse relative paths) sees the same absolute folder."""
    return Path(os.environ.get("TUNESERVE_HOME") or ".tuneserve").expanduser().resolve()
