"""Frozen-backbone features computed once and kept on disk.

The key is (backbone identity, preprocessing spec, data fingerprint): the same backbone on
the same data with the same tokenization never runs twice, across epochs and across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.home import tuneserve_home


def backbone_identity(model_path: str) -> str:
    """Name plus, for a local folder, the size and mtime of each file (cheap, and changes
    whenever the weights change)."""
    path = Path(model_path)
    if not path.is_dir():
        return model_path
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return (
        model_path
        + "|"
        + "|".join(
            f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files
        )
    )


class FeatureCache:
    """A folder of ``<key>.npy`` feature matrices.

    Args:
        root: Folder (default ``$TUNESERVE_HOME/cache/features``).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else tuneserve_home() / "cache" / "features"
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(backbone: str, preprocessing: dict[str, Any], data_fingerprint: str) -> str:
        """The cache key of a (backbone, preprocessing, data) triple."""
        blob = json.dumps([backbone, preprocessing, data_fingerprint], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Read the features for ``key``, or compute, store (atomically) and return them."""
        path = self.root / f"{key}.npy"
        if path.is_file():
            self.hits += 1
            return np.load(path)
        self.misses += 1
        features = np.ascontiguousarray(compute(), dtype=np.float32)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
        np.save(tmp, features)
        os.replace(tmp, path)
        return features
