"""One writer at a time per registered model, across processes, on each backend.

MLflow's API has no compare-and-set: ``set_registered_model_alias`` and
``set_registered_model_tag`` overwrite unconditionally, and ``create_model_version`` never
refuses a duplicate. So "read the champion, write the audit entry, move the alias" and
"is this package registered? if not, register it" are made atomic with a lock that the
backend itself enforces, held by the process for the whole step:

- the embedded SQLite store is a local file, so every process that writes it runs on this
  host: an exclusive ``flock`` on a lock file next to the database serializes them (the
  kernel releases it when a process dies, so a killed writer never leaves it held);
- a PostgreSQL store: a session-level ``pg_advisory_lock`` taken on the same database,
  which the server holds for every client of that database and drops with the session.

Other stores (an MLflow tracking server over HTTP, MySQL) get no lock: writers are
then as safe as MLflow makes them, which is not safe against concurrent promotes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._store import Store, StoreUnavailableError, sqlite_path

#: A ``postgresql+driver://`` SQLAlchemy URI -> the libpq URI psycopg takes.
_DRIVER = re.compile(r"^postgres(?:ql)?(?:\+[a-z0-9_]+)?://")


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for model ``name`` (namespaced to tuneserve)."""
    digest = hashlib.sha256(f"tuneserve.registry:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def model_lock(store: Store, name: str) -> Iterator[None]:
    """Hold the write lock of registered model ``name`` in ``store`` for the block."""
    db = sqlite_path(store)
    if db is not None:
        with _file_lock(db.with_name(f"{db.name}.locks") / f"{name}.lock"):
            yield
    elif _DRIVER.match(store.uri):
        with _advisory_lock(_DRIVER.sub("postgresql://", store.uri), _key(name)):
            yield
    else:
        yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        raise StoreUnavailableError(
            f"cannot create the registry's lock file {path} ({exc.strerror or exc}); "
            "writing to the registry needs write access to the folder of its database"
        ) from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released on close, or when the process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _advisory_lock(uri: str, key: int) -> Iterator[None]:
    import psycopg

    try:
        conn = psycopg.connect(uri, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailableError(
            f"cannot lock the model in the MLflow store {store_label(uri)}: {first}. "
            "Hint: check that the database server is up and MLFLOW_TRACKING_URI"
        ) from exc
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def store_label(uri: str) -> str:
    """``uri`` without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", uri)
