"""A damaged embedded registry database: the CLI says so in one line, names the file and
what to do, and exits 2; the API raises :class:`StoreUnavailableError` (the store's fault,
HTTP 503), and an empty file is never silently turned into a new, empty registry."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tuneserve.registry import Registry, RegistryError, StoreUnavailableError

CLI = str(Path(sys.executable).parent / "tuneserve")


@pytest.fixture(scope="module")
def good_database(tmp_path_factory) -> bytes:
    """The bytes of a real, empty embedded registry database (MLflow's whole schema)."""
    home = tmp_path_factory.mktemp("good")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESERVE_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert Registry().models() == []
    return (home / "mlflow" / "mlflow.db").read_bytes()


def _scrambled(good: bytes) -> bytes:
    """The header page kept, every other page overwritten with noise."""
    page = int.from_bytes(good[16:18], "big")
    noise = random.Random(0).randbytes(len(good) - page)
    return good[:page] + noise


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda good: b"", r"is empty \(0 bytes\).*delete the file"),
    "text": (lambda good: b"name,version\nwine,1\n", r"is not an SQLite database"),
    "truncated": (lambda good: good[: len(good) // 3], r"is truncated \(\d+ bytes where"),
    "corrupted": (_scrambled, r"is damaged \(SQLite: "),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_database_is_one_clear_line(damage, good_database, tmp_path, monkeypatch):
    make, what = DAMAGE[damage]
    db = tmp_path / "home" / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(make(good_database))
    before = db.read_bytes()
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (["list"], ["show", "wine"], ["promote", "wine", "1"]):
        done = subprocess.run([CLI, "registry", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: the registry database {db} ")
        assert re.search(what, lines[0]), lines[0]
        assert "backup" in lines[0]
        if damage != "empty":
            assert "registry export" in lines[0]
    assert db.read_bytes() == before  # never rewritten, in particular not into a new store
    with pytest.raises(StoreUnavailableError) as raised:
        Registry().models()
    assert isinstance(raised.value, RegistryError)  # callers catching the old type still do
