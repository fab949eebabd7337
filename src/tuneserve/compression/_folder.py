"""What a search folder holds between runs: the variants, the checkpoints of training
steps, a stamp of what the search was run on, and the chosen copy. A rerun keeps what
still matches and starts over on what does not."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.atomic import write_text
from tuneserve.exceptions import InvalidInputError, TuneserveError
from tuneserve.package import Package

from ._recipes import Step

SUMMARY_FILE = "compression.json"
STAMP_FILE = "search.json"
STEP_FILE = "step.json"
CHOSEN = "chosen"

log = logging.getLogger("tuneserve.compression")


def prepare(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is not a search folder; with ``overwrite`` empty it."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file; pass a folder for the search")
    ours = (out / "variants").is_dir() or (out / SUMMARY_FILE).is_file()
    if overwrite and ours:
        shutil.rmtree(out)
    elif any(out.iterdir()) and not ours:
        raise InvalidInputError(
            f"--out {out} exists and is not a compression folder. Hint: choose a new folder "
            "(an interrupted search in it resumes; --force starts over)"
        )


def stamp(parent: Package, data_fingerprint: str, rows: Any, seed: int, unlabeled: str) -> dict:
    """What decides which rows train and which score: the original, the data, the split,
    the seed and the unlabeled inputs."""
    digest = hashlib.sha256()
    for part in (rows.train, rows.validation, rows.test):
        digest.update(np.asarray(part, dtype=np.int64).tobytes() + b"|")
    return {
        "original": parent.id,
        "data": data_fingerprint,
        "rows": digest.hexdigest(),
        "seed": seed,
        "unlabeled": unlabeled,
    }


def start(out: Path, now: dict) -> None:
    """Keep the variants of an earlier run only when it was run on the same rows (else a
    variant could have trained on rows that now score it)."""
    path = out / STAMP_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError):
            before = None
        if before != now:
            log.warning(
                "%s was a search on other data, rows, seed or unlabeled inputs: starting over",
                out,
            )
            for name in ("variants", "checkpoints", CHOSEN):
                shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(now, indent=1))


def fresh_checkpoints(folder: Path, step: dict) -> None:
    """Checkpoints of a training step resume only the same step (source and settings);
    others are removed, so that a changed setting retrains instead of failing."""
    marker = folder / STEP_FILE
    if marker.is_file():
        try:
            same = json.loads(marker.read_text()) == step
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(step, indent=1, default=str))


def usable(path: Path, source: Package, step: Step, expected: dict[str, Any]) -> Package | None:
    """The variant at ``path`` if it is ``step`` applied to ``source`` with the ``expected``
    settings (those not None), for a rerun to keep."""
    if not (path / "manifest.json").is_file():
        return None
    try:
        found = Package.load(path)
    except TuneserveError:
        return None
    done = found.manifest.lineage.compression
    if found.manifest.lineage.parent != source.id or done is None or done.method != step.method:
        return None
    recorded = {**found.manifest.lineage.config, **done.settings}
    if any(v is not None and recorded.get(k) != v for k, v in expected.items()):
        return None
    return found


def copy_chosen(source: Path | None, target: Path) -> Package | None:
    """A copy of the chosen variant at ``target``, swapped in whole; with no variant chosen,
    an earlier run's copy is removed (it is not this run's choice)."""
    if source is None:
        shutil.rmtree(target, ignore_errors=True)
        return None
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return Package.load(target)
