"""Where a study lives and what searches it: the storage (SQLite under ``TUNESERVE_HOME`` by
default, any database URL to share it between processes and machines), Optuna's samplers
and pruners by name, and the trials a killed process left running."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

from tuneserve.exceptions import InvalidInputError, TuneserveError
from tuneserve.home import tuneserve_home

SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes")
PRUNERS = ("none", "median", "asha", "hyperband")
#: who runs a trial: ``host:pid`` (a resumed study fails the trials of dead processes)
OWNER = "owner"


class TuneError(TuneserveError):
    """A study could not run or gave nothing: an unreachable storage, a timeout shorter than
    one trial, a study of other data or space."""


def default_storage() -> str:
    """``sqlite:///TUNESERVE_HOME/studies.db``."""
    home = tuneserve_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'studies.db'}"


def masked(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages, reports and tags); a
    password with ``/`` or ``@`` in it is hidden too (at worst more is hidden, never less)."""
    from tuneserve.redact import mask_url

    return mask_url(url)


def _driver(url: str) -> str:
    """``postgresql://`` with the psycopg 3 driver this package installs (SQLAlchemy's
    default there is psycopg2)."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def open_storage(url: str | None) -> tuple[optuna.storages.BaseStorage, str]:
    """The storage at ``url`` (default: :func:`default_storage`) and its URL.

    A heartbeat marks a trial alive; a trial whose process died is failed by the next
    worker after a grace period, and retried with the same parameters.

    Raises:
        TuneError: the URL cannot be reached or is not a database URL (named, masked).
    """
    chosen = url or default_storage()
    if "://" not in chosen:
        raise InvalidInputError(
            f"--storage {chosen!r} is not a database URL; use e.g. sqlite:///studies.db or "
            "postgresql://user@host:5432/db"
        )
    if chosen.startswith("sqlite:///") and chosen != "sqlite:///:memory:":
        # a file in a folder that does not exist yet: the folder is made, as for the default
        Path(chosen.removeprefix("sqlite:///")).expanduser().parent.mkdir(
            parents=True, exist_ok=True
        )
    try:
        with warnings.catch_warnings():  # the heartbeat and its retry are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                _driver(chosen),
                heartbeat_interval=5,
                grace_period=20,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=2
                ),
                engine_kwargs={"pool_pre_ping": True},
            )
    except Exception as exc:  # sqlalchemy's errors: unreachable host, bad driver, bad path
        reason = str(exc).strip().splitlines()[0][:300]
        raise TuneError(
            f"cannot reach the study storage {masked(chosen)}: {reason}. Hint: check the "
            "host, port, database and credentials, or leave --storage out for the local "
            "SQLite file"
        ) from None
    return storage, chosen


def sampler(name: str, seed: int, grid: dict[str, list[Any]] | None = None) -> Any:
    """Optuna's sampler by name (``tpe`` models parameters jointly and, with
    ``constant_liar``, keeps parallel workers from proposing the same point)."""
    with warnings.catch_warnings():  # multivariate, group, constant_liar: "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(name, seed, grid)


def _sampler(name: str, seed: int, grid: dict[str, list[Any]] | None) -> Any:
    if name == "grid":
        return optuna.samplers.GridSampler(grid or {}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True
        )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        # categorical parameters (the branch, batch sizes) fall back to random sampling
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise InvalidInputError(f"--sampler {name!r} is not known; choose {', '.join(SAMPLERS)}")


def pruner(name: str) -> optuna.pruners.BasePruner:
    """Optuna's pruner by name: ``asha`` is successive halving, ``hyperband`` with ``tpe``
    the BOHB-like combination."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    raise InvalidInputError(f"--pruner {name!r} is not known; choose {', '.join(PRUNERS)}")


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def requeue_unfinished(study: optuna.Study) -> list[int]:
    """Queue again, with their parameters, the trials still RUNNING whose process on this
    host is gone (a kill or a crash; they are failed first), and return the numbers of the
    trials this run will continue: those, and those an interrupted run (Ctrl-C) queued
    itself.

    Running trials of other hosts are left to the heartbeat: their processes cannot be
    checked from here, and the next worker fails and retries them after a grace period."""
    from optuna.exceptions import UpdateFinishedTrialError

    host = socket.gethostname()
    storage = study._storage  # setting a trial's state has no public API
    again: list[int] = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.WAITING and "retried_from" in trial.user_attrs:
            again.append(int(trial.user_attrs["retried_from"]))
            continue
        if trial.state != optuna.trial.TrialState.RUNNING:
            continue
        name, _, pid = str(trial.user_attrs.get(OWNER, "")).rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker (or the heartbeat) got there first
        root = int(trial.user_attrs.get("retried_from", trial.number))
        study.enqueue_trial(trial.params, user_attrs={"retried_from": root}, skip_if_exists=False)
        again.append(root)
    return sorted(set(again))


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own per-trial log lines off (tuneserve prints its own, and a failed trial's
    error in one line rather than Optuna's traceback), and its notes on
    experimental features (the heartbeat, TPE's ``group``) not shown."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():  # features Optuna marks experimental, used on purpose
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)
