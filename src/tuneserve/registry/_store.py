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

from tuneserve.exceptions import TuneserveError
from tuneserve.home import tuneserve_home

#: The MLflow experiment tuneserve's runs go to (``TUNESERVE_EXPERIMENT`` overrides).
EXPERIMENT = "tuneserve"


class RegistryError(TuneserveError):
    """The MLflow store refused an operation or cannot be reached."""


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


def client(store: Store | None = None) -> Any:
    """An ``MlflowClient`` on ``store`` (default: :func:`current_store`)."""
    store = store or current_store()
    with quiet_mlflow():
        from mlflow import MlflowClient

        try:
            return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
        except Exception as exc:  # MLflow raises many types for a store it cannot open
            raise RegistryError(
                f"cannot open the MLflow store {store.uri}: {exc}. Hint: check "
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
