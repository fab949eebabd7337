"""Which MLflow store tuneserve talks to, and the client for it.

With no configuration: an embedded SQLite store and a local artifact folder under
``$TUNESERVE_HOME/mlflow``. With ``MLFLOW_TRACKING_URI`` set: that store (a team's MLflow
server over http(s), or a database such as PostgreSQL directly), and for database stores
the artifacts go to ``TUNESERVE_ARTIFACT_ROOT`` (default: the local folder).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneserve.exceptions import TuneserveError, UnavailableError
from tuneserve.home import tuneserve_home

#: The MLflow experiment tuneserve's runs go to (``TUNESERVE_EXPERIMENT`` overrides).
EXPERIMENT = "tuneserve"


class RegistryError(TuneserveError):
    """The MLflow store refused an operation or cannot be reached."""


class StoreUnavailableError(RegistryError, UnavailableError):
    """The store cannot serve at all: its server is down or unreachable, or its database
    file is damaged. The fault is the store's, not the request's (HTTP 503)."""


@dataclass(frozen=True)
class Store:
    """An MLflow tracking + registry store: its URI and where new artifacts go."""

    uri: str
    artifact_root: str | None

    @property
    def embedded(self) -> bool:
        return self.uri.startswith("sqlite:")


def current_store() -> Store:
    """The store in force: ``MLFLOW_TRACKING_URI``, else the embedded SQLite one."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    local = tuneserve_home() / "mlflow"
    local_artifacts = _artifact_root(local)
    if not uri:
        local.mkdir(parents=True, exist_ok=True)
        return Store(f"sqlite:///{(local / 'mlflow.db').resolve()}", local_artifacts)
    if uri.startswith(("http://", "https://", "databricks")):
        return Store(uri, None)  # the server decides where artifacts live
    if uri.startswith("sqlite:") or "://" in uri:
        return Store(uri, local_artifacts)
    # a bare folder: MLflow's file store is deprecated; keep a SQLite store in it instead
    folder = Path(uri).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return Store(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri())


def _artifact_root(local: Path) -> str:
    """``TUNESERVE_ARTIFACT_ROOT`` as a URI (a bare path, even a relative one, becomes an
    absolute ``file:`` URI), else ``local/artifacts``."""
    given = os.environ.get("TUNESERVE_ARTIFACT_ROOT", "").strip()
    if given and "://" in given:
        return given
    return (Path(given).expanduser().resolve() if given else local / "artifacts").as_uri()


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's and alembic's start-up logging, progress bars and warnings."""
    # importing mlflow configures its loggers (level INFO): import it before quieting them,
    # or a first store's "Creating initial MLflow database tables" reaches stderr
    import mlflow  # noqa: F401

    names = ("mlflow", "alembic", "sqlalchemy")
    levels = {n: logging.getLogger(n).level for n in names}
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def sqlite_path(store: Store) -> Path | None:
    """The database file of an SQLite store (``None`` for other stores, or in memory)."""
    if not store.uri.startswith("sqlite:///"):
        return None
    path = store.uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


_SQLITE_MAGIC = b"SQLite format 3\x00"


def damaged_database(path: Path, what: str) -> StoreUnavailableError:
    """The one-line error for a registry database file that cannot be read."""
    return StoreUnavailableError(
        f"the registry database {path} {what}. Restore it from a backup; or, from a copy of "
        "it, save what still reads with `MLFLOW_TRACKING_URI=sqlite:///COPY tuneserve "
        "registry export NAME --out NAME.tar` and `tuneserve registry import` into a new store"
    )


def check_sqlite_file(path: Path) -> None:
    """Refuse a database file that is empty, not SQLite, or shorter than its header says.

    MLflow would turn a 0-byte file into a new, empty registry without a word, and would
    report the others as a multi-line SQL error at the first query.

    Raises:
        StoreUnavailableError: the file is not a whole SQLite database.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return  # a new store: MLflow creates it
    except OSError as exc:
        raise damaged_database(path, f"cannot be read ({exc.strerror or exc})") from exc
    if size == 0:
        raise StoreUnavailableError(
            f"the registry database {path} is empty (0 bytes), so it holds no registry. "
            "Restore it from a backup; to start a new, empty registry instead, delete the file"
        )
    if not header.startswith(_SQLITE_MAGIC):
        raise damaged_database(path, "is not an SQLite database (wrong header)")
    if len(header) < 100:
        raise damaged_database(path, f"is truncated ({size} bytes)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # the page count in the header is valid when its "version-valid-for" matches the
    # change counter (offsets 92 and 24, SQLite file format section 1.3)
    if header[92:96] == header[24:28] and pages and size < pages * page_size:
        raise damaged_database(
            path, f"is truncated ({size} bytes where its header says {pages * page_size})"
        )


#: What a database says when its file is damaged (SQLite's own messages).
_DAMAGED = ("file is not a database", "database disk image is malformed")
#: Exception names that mean the store cannot be reached at all.
_UNREACHABLE = ("OperationalError", "InterfaceError", "ConnectionError", "Timeout")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _damage(store: Store, exc: Exception) -> StoreUnavailableError | None:
    """The error for ``exc`` if it says the embedded database file is damaged."""
    db = sqlite_path(store)
    text = " ".join(str(e) for e in _chain(exc))
    said = next((d for d in _DAMAGED if d in text), None)
    return damaged_database(db, f"is damaged (SQLite: {said})") if db and said else None


def store_failure(store: Store, exc: Exception) -> RegistryError:
    """The one-line error for a store failure: :class:`StoreUnavailableError` when the store
    cannot serve at all (damaged file, server down), else :class:`RegistryError`."""
    damaged = _damage(store, exc)
    if damaged is not None:
        return damaged
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    unreachable = str(getattr(exc, "error_code", "")) == "TEMPORARILY_UNAVAILABLE" or any(
        isinstance(e, OSError) or any(n in type(e).__name__ for n in _UNREACHABLE)
        for e in _chain(exc)
    )
    kind = StoreUnavailableError if unreachable else RegistryError
    return kind(f"MLflow store {store.uri}: {first}")


def client(store: Store | None = None) -> Any:
    """An ``MlflowClient`` on ``store`` (default: :func:`current_store`).

    Raises:
        StoreUnavailableError: the store cannot be opened, or the embedded database file
            is empty, damaged, not SQLite, or truncated.
    """
    store = store or current_store()
    db = sqlite_path(store)
    if db is not None:
        check_sqlite_file(db)
    with quiet_mlflow():
        from mlflow import MlflowClient

        try:
            return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
        except Exception as exc:  # MLflow raises many types for a store it cannot open
            damaged = _damage(store, exc)
            if damaged is not None:
                raise damaged from exc
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailableError(
                f"cannot open the MLflow store {store.uri}: {first}. Hint: check "
                "MLFLOW_TRACKING_URI, or unset it to use the embedded store"
            ) from exc


def experiment_id(mlflow_client: Any, store: Store) -> str:
    """The id of tuneserve's experiment, created on first use."""
    name = os.environ.get("TUNESERVE_EXPERIMENT", EXPERIMENT)
    with quiet_mlflow():
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":  # deleted in the UI: bring it back
                mlflow_client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        try:
            return str(mlflow_client.create_experiment(name, artifact_location=store.artifact_root))
        except Exception:  # another process created it first
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)
