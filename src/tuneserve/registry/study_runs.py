"""A hyperparameter study in MLflow: one run for the study, each trial a run nested under it
(MLflow's ``mlflow.parentRunId`` tag), the best package logged as a nested run too."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ._store import Store, client, current_store, experiment_id, quiet_mlflow
from .tracking import _MAX_KEY, _MAX_PARAM, OWNER_TAG, flatten

STUDY_TAG = "tuneserve.study"
PARENT_TAG = "mlflow.parentRunId"


def study_run(study: str, storage: str, store: Store | None = None) -> str:
    """The run of ``study`` (in ``storage``): an earlier run's, set running again (a
    resumed study, another worker), else a new one."""
    from mlflow.entities import RunTag

    store = store or current_store()
    mlflow_client = client(store)
    exp = experiment_id(mlflow_client, store)
    key = f"{storage}#{study}"[:_MAX_PARAM]
    with quiet_mlflow():
        found = mlflow_client.search_runs(
            [exp], filter_string=f"tags.`{STUDY_TAG}` = '{key.replace(chr(39), '')}'", max_results=1
        )
        if found:
            run_id = str(found[0].info.run_id)
            mlflow_client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {
            STUDY_TAG: key.replace("'", ""),
            "tuneserve.kind": "tune",
            "mlflow.runName": f"tune {study}"[:_MAX_KEY],
            OWNER_TAG: f"{socket.gethostname()}:{os.getpid()}",
        }
        run = mlflow_client.create_run(exp, run_name=tags["mlflow.runName"])
        mlflow_client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return str(run.info.run_id)


def track_trial(parent: str, trial: Any, metric: str, store: Store | None = None) -> str:
    """Log one finished Optuna trial as a run nested under ``parent``: its parameters, the
    validation metric at every step (epoch, fold or row rung), its value and state."""
    from mlflow.entities import Metric, Param, RunTag

    store = store or current_store()
    mlflow_client = client(store)
    exp = experiment_id(mlflow_client, store)
    now = int(time.time() * 1000)
    state = trial.state.name.lower()
    metrics = [Metric(f"val_{metric}"[:_MAX_KEY], float(v), now, int(step))
               for step, v in sorted(trial.intermediate_values.items())]  # fmt: skip
    if trial.value is not None:
        metrics.append(Metric("value", float(trial.value), now, 0))
    if "seconds" in trial.user_attrs:
        metrics.append(Metric("seconds", float(trial.user_attrs["seconds"]), now, 0))
    params = [Param(k[:_MAX_KEY], v[:_MAX_PARAM]) for k, v in flatten(trial.params).items()]
    tags = {
        PARENT_TAG: parent,
        "tuneserve.kind": "tune-trial",
        "tuneserve.trial": str(trial.number),
        "tuneserve.trial_state": state,
        "mlflow.runName": f"trial {trial.number} ({state})",
    }
    for key in ("backbone", "strategy", "package", "error"):
        if trial.user_attrs.get(key):
            tags[f"tuneserve.{key}"] = str(trial.user_attrs[key])[:_MAX_PARAM]
    with quiet_mlflow():
        run_id = str(mlflow_client.create_run(exp, run_name=tags["mlflow.runName"]).info.run_id)
        try:
            mlflow_client.log_batch(
                run_id, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in tags.items()]
            )
        except BaseException:
            mlflow_client.set_terminated(run_id, "FAILED")
            raise
        mlflow_client.set_terminated(run_id, "FINISHED" if state != "fail" else "FAILED")
    return run_id


def finish_study_run(
    run_id: str, metrics: dict[str, float], report_html: str, store: Store | None = None
) -> None:
    """The study's summary metrics and its HTML report on its run, and the run ended."""
    from mlflow.entities import Metric

    store = store or current_store()
    mlflow_client = client(store)
    now = int(time.time() * 1000)
    with quiet_mlflow():
        mlflow_client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
        )
        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "report.html"
            report.write_text(report_html, encoding="utf-8")
            mlflow_client.log_artifact(run_id, str(report))
        mlflow_client.set_terminated(run_id)


def nest_run(run_id: str, parent: str, store: Store | None = None) -> None:
    """Show ``run_id`` under ``parent`` in the MLflow UI."""
    with quiet_mlflow():
        client(store or current_store()).set_tag(run_id, PARENT_TAG, parent)
