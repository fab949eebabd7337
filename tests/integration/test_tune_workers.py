"""Studies that outlive a process: killed and resumed from the SQLite storage, and two worker
processes sharing one study on the real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

PG = "postgresql+psycopg://"
CLI = [sys.executable, "-m", "tuneserve.cli.main"]
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _tune(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "tune", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def _wait(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out


@contextlib.contextmanager
def _opened(url: str) -> Iterator[optuna.storages.RDBStorage]:
    """The storage at ``url``, its connections closed after."""
    storage = optuna.storages.RDBStorage(url.replace("postgresql://", PG))
    try:
        yield storage
    finally:
        storage.engine.dispose()


def _poll(url: str, study: str, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with _opened(url) as storage:
        while time.monotonic() < deadline:
            try:
                if ready(optuna.load_study(study_name=study, storage=storage)):
                    return
            except KeyError:  # not created yet
                pass
            time.sleep(0.2)
    raise AssertionError(f"study {study} never got ready")


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_a_killed_study_resumes_and_continues_the_killed_trial_from_its_checkpoint(
    tmp_path,
) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    space = tmp_path / "space.yaml"
    space.write_text(
        "learning_rate: {low: 0.001, high: 0.01, log: true}\nepochs: 30\npatience: 30\n"
        "batch_size: 16\n"
    )
    args = ["wine", "--out", str(tmp_path / "out"), "--backbone", "mlp", "--trials", "3"]
    args += ["--space", str(space), "--storage", storage, "--study", "killed"]
    args += ["--sampler", "random", "--pruner", "none", "--no-track"]
    first = _tune(*args)

    def running_a_while(study: optuna.Study) -> bool:
        return any(
            t.state == optuna.trial.TrialState.RUNNING and len(t.intermediate_values) >= 3
            for t in study.get_trials(deepcopy=False)
        )

    _poll(storage, "killed", running_a_while)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)  # and its pipes closed
    with _opened(storage) as opened:
        study = optuna.load_study(study_name="killed", storage=opened)
        killed = next(t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING)
    epochs_before = len(killed.intermediate_values)

    out = _wait(_tune(*args, "--json"))
    result = json.loads(out)
    assert result["requeued"] == [killed.number]
    with _opened(storage) as opened:
        study = optuna.load_study(study_name="killed", storage=opened)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 3  # the total counts over both runs
    again = next(t for t in study.trials if t.user_attrs.get("retried_from") == killed.number)
    assert again.params == killed.params and again.state == optuna.trial.TrialState.COMPLETE
    # it went on from the killed trial's last checkpoint, not from epoch 1
    assert min(again.intermediate_values) > 1
    assert min(again.intermediate_values) >= epochs_before - 1
    assert not any((tmp_path / "out" / "trials" / ".checkpoints").iterdir())
    assert Path(result["package"]).is_dir()


@pytest.fixture
def postgres() -> str:
    import psycopg

    try:
        psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=5
        ).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 (database test) is needed and down: {exc}")
    return POSTGRES


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_two_workers_share_a_study_on_postgresql(tmp_path, postgres) -> None:
    study = f"workers-{uuid.uuid4().hex[:8]}"
    common = ["breast_cancer", "--backbone", "logreg", "--trials", "10", "--storage", postgres]
    common += ["--study", study, "--sampler", "random", "--pruner", "none", "--no-track"]
    first = _tune(*common, "--out", str(tmp_path / "a"), "--json")
    _poll(postgres, study, lambda s: len(s.get_trials(deepcopy=False)) >= 1)
    second = _tune(*common, "--out", str(tmp_path / "b"), "--json")
    results = [json.loads(_wait(first)), json.loads(_wait(second))]

    with _opened(postgres) as opened:
        trials = optuna.load_study(study_name=study, storage=opened).get_trials(deepcopy=False)
        optuna.delete_study(study_name=study, storage=opened)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # both worked, no trial number twice, no point of the space run twice
    owners = {str(t.user_attrs["owner"]).rpartition(":")[2] for t in complete}
    assert len(owners) == 2, owners
    assert len({t.number for t in trials}) == len(trials)
    points = [tuple(sorted(t.params.items())) for t in complete]
    assert len(points) == len(set(points))
    assert 10 <= len(complete) <= 11  # a worker may finish the trial it had started
    # the study's best, found by either worker, is what the worker that ended last reports;
    # the one that holds its package wrote it to its --out/best, the other says where it is
    best = max(complete, key=lambda t: t.value)
    last = max(results, key=lambda r: r["counts"].get("complete", 0))
    assert last["best_trial"] == best.number
    assert last["best_value"] == pytest.approx(best.value)
    assert (last["package"] is None) == (last["best_package_at"] is not None)


@pytest.mark.slow
def test_optuna_dashboard_reads_the_study(tmp_path) -> None:
    """The storage is Optuna's own: ``optuna-dashboard URL`` shows a tuneserve study."""
    import shutil
    import socket
    import urllib.request

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    args = ["iris", "--out", str(tmp_path / "o"), "--backbone", "logreg", "--trials", "2"]
    _wait(_tune(*args, "--storage", storage, "--study", "shown", "--no-track"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert dashboard, "optuna-dashboard is a dev dependency; run make install"
    proc = subprocess.Popen(
        [dashboard, storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (shown,) = [s for s in studies if s["study_name"] == "shown"]
    attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
    assert attrs["metric"] == "accuracy" and attrs["data"] == "iris"
