"""Where the CLI keeps per-epoch checkpoints while a run is in progress."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def run_checkpoints(out: Path, given: Path | None) -> Iterator[Path]:
    """The checkpoint folder: ``given``, else ``OUT.checkpoints`` beside the package. The
    default one is removed once the run succeeds (it only serves to resume an interrupted
    run); after a failure or an interruption it stays for ``--resume``."""
    folder = given or out.with_name(out.name + ".checkpoints")
    yield folder
    if given is None and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
