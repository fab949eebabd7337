"""Version of tuneserve and the git revision of the code that is running."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("tuneserve")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


@functools.cache
def git_revision() -> str | None:
    """Return the git commit of the tuneserve source tree, with ``+dirty`` if it has edits.

    Returns None when tuneserve runs from an installed wheel (no git checkout around it).
    """
    here = Path(__file__).resolve().parent
    try:
        # Only a checkout that tracks this very file counts: an installed copy inside some
        # other repository (a venv in a project folder) must not record that project's HEAD.
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", "_version.py"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if tracked.returncode != 0:
            return None
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        suffix = "+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return rev.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        return None
