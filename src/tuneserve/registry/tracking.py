"""Log a training run to MLflow: parameters, per-epoch metrics, the package, a report.

``train``, ``pretrain`` and ``--update`` call :func:`track_package` when tracking is on
(the default; ``TUNESERVE_TRACKING=0`` or ``--no-track`` turns it off), so the MLflow UI
shows curves and comparisons. ``registry register`` later reuses the run that logged a
package instead of copying it again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from tuneserve.lineage import Backbone, Lineage
from tuneserve.package import Package

from ._store import Store, client, current_store, experiment_id, quiet_mlflow

#: Tag holding the package id on runs and model versions.
PACKAGE_TAG = "tuneserve.package_id"
#: Per-epoch metrics are logged as ``epoch/<name>`` (curves in the MLflow UI); the
#: package's final metrics keep their plain names.
EPOCH_PREFIX = "epoch/"
#: Tag holding ``host:pid`` of the process that logs a run (see :func:`end_dead_runs`).
OWNER_TAG = "tuneserve.owner"
#: MLflow's limits: keys of 250 characters, parameter values of 6000.
_MAX_KEY, _MAX_PARAM = 250, 6000


def tracking_enabled(track: bool | None = None) -> bool:
    """``track`` when given, else ``TUNESERVE_TRACKING`` (default on)."""
    if track is not None:
        return track
    return os.environ.get("TUNESERVE_TRACKING", "1").strip().lower() not in ("0", "false", "no")


def training_params(lineage: Lineage) -> dict[str, Any]:
    """What a run is logged with as parameters: the backbone, strategy, settings, split,
    fold and update of ``lineage`` (not the history, logged as metrics, nor the held-out
    row indices)."""
    backbone = lineage.backbone or Backbone()
    typed: dict[str, Any] = {
        "trainer": lineage.trainer,
        "backbone": backbone.name,
        "strategy": backbone.strategy,
        "model_class": backbone.model_class,
        "best_epoch": lineage.best_epoch,
        "parent_version": lineage.parent_version,
    }
    out: dict[str, Any] = {k: v for k, v in typed.items() if v is not None}
    out.update(lineage.config)  # a setting of None (no clipping, ...) is a setting too
    if backbone.model_arguments:
        out["model_config"] = backbone.model_arguments  # the parameter names runs always had
    out.update(lineage.details)
    for key in ("split", "fold", "update"):
        record = getattr(lineage, key)
        if record is not None:
            out[key] = record.model_dump()
    if lineage.ensemble is not None:
        out["ensemble"] = lineage.ensemble.combiner
        out["members"] = [m.name for m in lineage.ensemble.members]
        if lineage.ensemble.selection:
            out["selection"] = lineage.ensemble.selection
    return out


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested training config -> flat ``a.b`` parameters (the history is left out: it is
    logged as metrics)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key == "history":
            continue
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name[:_MAX_KEY]] = text[:_MAX_PARAM]
    return out


def _metric_rows(history: list[dict[str, float]]) -> list[tuple[str, float, int]]:
    rows: list[tuple[str, float, int]] = []
    for record in history:
        step = int(record.get("epoch", len(rows)))
        rows += [(EPOCH_PREFIX + k, float(v), step) for k, v in record.items() if k != "epoch"]
    return rows


def warn_untracked(exc: Exception, what: str, hint: str = "") -> None:
    """Say that MLflow tracking failed and that ``what`` stands anyway."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    logging.getLogger("tuneserve").warning(
        "tracking failed (%s); %s is not lost.%s", first, what, f" Hint: {hint}" if hint else ""
    )


def log_package(package: Package, track: bool | None, kind: str) -> str | None:
    """Log ``package`` as an MLflow run when tracking is on; the run id, else None.

    The package is already written: when the MLflow store fails, a warning says so and
    names the command that logs it later, instead of failing the stage."""
    if not tracking_enabled(track):
        return None
    try:
        return track_package(package, kind=kind)
    except Exception as exc:  # the store is down, locked, or refuses: keep the package
        warn_untracked(
            exc,
            f"the package {package.path}",
            f"log it later with tuneserve registry register {package.path} --name NAME",
        )
        return None


def find_run(mlflow_client: Any, exp_id: str, package_id: str) -> str | None:
    """The id of a run that logged the package ``package_id``, if any."""
    with quiet_mlflow():
        runs = mlflow_client.search_runs(
            [exp_id],
            filter_string=f"tags.`{PACKAGE_TAG}` = '{package_id}' and "
            "attributes.status = 'FINISHED'",
            max_results=1,
        )
    return runs[0].info.run_id if runs else None


def end_dead_runs(mlflow_client: Any, exp_id: str) -> list[str]:
    """Mark KILLED the runs still RUNNING whose logging process, on this host, is gone
    (a ``register`` or ``train --track`` killed midway), and return their ids.

    Runs started on other hosts are left alone: their processes cannot be checked here.
    """
    host = socket.gethostname().replace("'", "")
    with quiet_mlflow():
        runs = mlflow_client.search_runs(
            [exp_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{OWNER_TAG}` LIKE '{host}:%'",
            max_results=1000,
        )
        ended = []
        for run in runs:
            pid = run.data.tags.get(OWNER_TAG, "").rpartition(":")[2]
            if pid.isdigit() and not _alive(int(pid)):
                mlflow_client.set_terminated(run.info.run_id, "KILLED")
                ended.append(run.info.run_id)
    return ended


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def track_package(
    package: Package | str | Path,
    *,
    run_name: str | None = None,
    store: Store | None = None,
    kind: str = "train",
    tags: dict[str, str] | None = None,
) -> str:
    """Log ``package`` as a finished MLflow run and return the run id (``tags`` added to
    its own, e.g. ``mlflow.parentRunId`` to nest it under a study's run).

    Parameters: the training config, flattened. Metrics: each epoch of the history (step =
    epoch) and the package's final metrics. Tags: package id, data fingerprint, parent.
    Artifacts: the package under ``package/`` and an HTML report of the curves.
    """
    from mlflow.entities import Metric, Param, RunTag

    package = package if isinstance(package, Package) else Package.load(package)
    store = store or current_store()
    mlflow_client = client(store)
    exp = experiment_id(mlflow_client, store)
    m = package.manifest
    backbone = m.lineage.backbone or Backbone()
    tags = {
        "tuneserve.kind": kind,
        "tuneserve.task": m.task,
        "tuneserve.modality": m.modality,
        "tuneserve.data_fingerprint": m.lineage.data_fingerprint or "",
        "tuneserve.parent_package": m.lineage.parent or "",
        "tuneserve.backbone": backbone.name or "",
        "mlflow.runName": run_name or m.name,
        **(tags or {}),
    }
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, s) for k, v, s in _metric_rows(m.lineage.history)]
    metrics += [Metric(k, float(v), now, 0) for k, v in m.metrics.items()]
    params = [Param(k, v) for k, v in flatten(training_params(m.lineage)).items()]
    with quiet_mlflow():
        # the owner tag lets a later register end this run if this process dies midway
        owner = {OWNER_TAG: f"{socket.gethostname()}:{os.getpid()}", "tuneserve.kind": kind}
        run = mlflow_client.create_run(exp, run_name=run_name or m.name, tags=owner)
        run_id = run.info.run_id
        try:
            for start in range(0, max(len(metrics), len(params), 1), 100):
                mlflow_client.log_batch(
                    run_id,
                    metrics=metrics[start : start + 100],
                    params=params[start : start + 100],
                    tags=[RunTag(k, v) for k, v in tags.items()] if start == 0 else [],
                )
            mlflow_client.log_artifacts(run_id, str(package.path), "package")
            with tempfile.TemporaryDirectory() as folder:
                report = Path(folder) / "report.html"
                report.write_text(training_report(package), encoding="utf-8")
                mlflow_client.log_artifact(run_id, str(report))
            # tagged last: a run found by its package id holds the whole package
            mlflow_client.set_tag(run_id, PACKAGE_TAG, package.id)
        except BaseException:
            mlflow_client.set_terminated(run_id, "FAILED")
            raise
        mlflow_client.set_terminated(run_id)
    return str(run_id)


def training_report(package: Package) -> str:
    """A self-contained HTML page: the package's metrics and its per-epoch curves."""
    import base64
    import html
    import io

    m = package.manifest
    history = m.lineage.history
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in m.metrics.items()
    )
    plot = ""
    if history and len(history[0]) > 1:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        keys: list[str] = [k for k in ("train_loss", "val_loss", "val_accuracy") if k in history[0]]
        keys = keys or [k for k in history[0] if k != "epoch"]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        epochs = [r["epoch"] for r in history]
        for ax, key in zip(axes[0], keys, strict=True):
            ax.plot(epochs, [r[key] for r in history], marker="o")
            ax.set_title(key)
            ax.set_xlabel("epoch")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        plot = f'<img alt="training curves" src="data:image/png;base64,{encoded}">'
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(m.name)}</title></head><body>"
        f"<h1>{html.escape(m.name)}</h1><p>{m.task}, {m.modality}, package {package.id}</p>"
        f"<table border='1'><tr><th>metric</th><th>value</th></tr>{rows}</table>{plot}"
        "</body></html>"
    )


def track_evaluation(
    package: Package | None,
    metrics: dict[str, float],
    report_html: str,
    *,
    data: str,
    kind: str = "evaluate",
    steps: list[tuple[str, float, int]] | None = None,
    name: str | None = None,
    store: Store | None = None,
) -> str:
    """Log an evaluation (of ``package``, or a cross-validation) as a finished MLflow run:
    its metrics (``steps``: ``(key, value, step)`` series such as per-fold values), the
    HTML report as ``report.html``, and tags naming the package and its training run."""
    from mlflow.entities import Metric, RunTag

    store = store or current_store()
    mlflow_client = client(store)
    exp = experiment_id(mlflow_client, store)
    title = (name or f"{kind} {package.manifest.name if package else ''} on {data}")[:_MAX_KEY]
    tags = {
        "tuneserve.kind": kind,
        "tuneserve.data": data[:_MAX_PARAM],
        "mlflow.runName": title,
    }
    if package is not None:
        tags["tuneserve.task"] = package.manifest.task
        tags["tuneserve.evaluated_package"] = package.id
        tags["tuneserve.training_run"] = find_run(mlflow_client, exp, package.id) or ""
    now = int(time.time() * 1000)
    rows = [Metric(k[:_MAX_KEY], float(v), now, 0) for k, v in metrics.items()]
    rows += [Metric(k[:_MAX_KEY], float(v), now, step) for k, v, step in steps or []]
    with quiet_mlflow():
        run_id = mlflow_client.create_run(exp, run_name=title).info.run_id
        try:
            for start in range(0, max(len(rows), 1), 1000):
                mlflow_client.log_batch(
                    run_id,
                    metrics=rows[start : start + 1000],
                    tags=[RunTag(k, v) for k, v in tags.items()] if start == 0 else [],
                )
            with tempfile.TemporaryDirectory() as folder:
                report = Path(folder) / "report.html"
                report.write_text(report_html, encoding="utf-8")
                mlflow_client.log_artifact(run_id, str(report))
        except BaseException:
            mlflow_client.set_terminated(run_id, "FAILED")
            raise
        mlflow_client.set_terminated(run_id)
    return str(run_id)
