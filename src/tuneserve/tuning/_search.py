"""``tune(data, out)``: an Optuna study over a space of backbones, strategies and settings;
every trial a package built through the one seam; the best written to ``out/best``."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tuneserve.atomic import write_text
from tuneserve.data import DataLike, Dataset, load
from tuneserve.evaluation import check_metric
from tuneserve.exceptions import InvalidInputError, TuneserveError
from tuneserve.package import Package
from tuneserve.training import build
from tuneserve.training.budget import duration_seconds

from ._objective import Objective, OutOfTime, Setup, plan_for
from ._space import (
    Branch,
    Choice,
    Range,
    Space,
    build_space,
    check_estimator,
    read_space_file,
)
from ._study import (
    TuneError,
    masked,
    open_storage,
    pruner,
    quiet_optuna,
    requeue_unfinished,
    sampler,
)

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
DEFAULT_TRIALS = 20
FAILURES_IN_A_ROW = 5
RECORD = "tune.json"


@dataclass
class TuneResult:
    """What a study found.

    Attributes:
        study, storage: The study's name and where it lives (password masked).
        best_trial, best_value, best_params: The best trial of the whole study (every
            worker's), its validation metric and its parameters.
        metric, direction: What was optimised.
        package: ``out/best``, the best trial's package (None when another machine holds
            it: ``best_package_at`` says where).
        report: The HTML report.
        counts: Trials per state (``complete``, ``pruned``, ``fail``, ``running``, ...).
        compute: Epochs (or folds, or row rungs) every trial ran, summed.
        requeued: Trials an earlier, interrupted run left unfinished and this one re-ran.
        run_ids: MLflow runs (``study``, ``best``), set by :func:`tuneserve.tune`.
    """

    study: str
    storage: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    metric: str
    direction: str
    package: Package | None
    report: Path
    counts: dict[str, int]
    compute: int
    best_package_at: str | None = None
    requeued: list[int] = field(default_factory=list)
    run_ids: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "storage": self.storage,
            "best_trial": self.best_trial,
            "best_value": self.best_value,
            "best_params": self.best_params,
            "metric": self.metric,
            "direction": self.direction,
            "package": str(self.package.path) if self.package is not None else None,
            "best_package_at": self.best_package_at,
            "report": str(self.report),
            "counts": self.counts,
            "compute": self.compute,
            "requeued": self.requeued,
            "run_ids": self.run_ids,
        }


def parse_duration(text: str | float | int | None, option: str = "--timeout") -> float | None:
    """Seconds from ``90``, ``90s``, ``10m`` or ``1h`` (None stays None).

    Raises:
        InvalidInputError: not a positive duration.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        parsed = duration_seconds(str(text))
        if parsed is None:
            raise InvalidInputError(
                f"{option} {text!r} is not a duration; write e.g. 90s, 10m or 1h"
            )
        seconds = parsed
    if not seconds > 0:
        raise InvalidInputError(f"{option} must be more than 0 seconds; got {text!r}")
    return seconds


def _study_name(data: Dataset, space: Space, metric: str) -> str:
    labels = "+".join(b.label for b in space.branches)
    return re.sub(r"[^A-Za-z0-9_.+/-]", "-", f"{data.name}-{labels}-{metric}")[:120]


def _check_space(setup: Setup) -> None:
    """Every branch planned at its ranges' ends and with each choice, before any trial:
    a value no trial could use is refused once, with its name, rather than failing each
    trial."""
    for branch in setup.space.branches:
        corners: list[dict[str, Any]] = [{}, {}]
        extra: list[dict[str, Any]] = []
        for name, p in branch.space.items():
            if isinstance(p, Range):
                corners[0][name], corners[1][name] = p.low, p.high
            elif isinstance(p, Choice):
                extra += [{name: c} for c in p.choices]
            else:
                corners[0][name] = corners[1][name] = p
        for values in corners + extra:
            base = {k: v for k, v in corners[0].items() if k not in values}
            try:
                plan_for(setup, branch, {**base, **values})
                check_estimator(branch, setup.data.modality, setup.data.task, {**base, **values})
            except InvalidInputError as exc:
                raise InvalidInputError(f"--space, {branch.label}: {exc}") from None


def _existing(study: optuna.Study, attrs: dict[str, Any]) -> None:
    """Refuse to continue a study that searched other data, metric, space or split: its
    trials' values could not be ranked against this run's."""
    have = study.user_attrs
    checked = (
        ("data_fingerprint", "data"),
        ("metric", "metric"),
        ("space", "space"),
        ("split", "split (--seed, --folds)"),
        ("fidelity", "fidelity"),
    )
    for key, what in checked:
        if key in have and have[key] != attrs[key]:
            raise TuneError(
                f"study {study.study_name!r} already exists with another {what} "
                f"({str(have[key])[:120]}); pass --study NEW_NAME to start a new study, or "
                "the same data, metric, space, seed and folds to continue it"
            )


def _prepare_out(out: Path, study: str, storage: str, force: bool) -> None:
    """``out`` made ready for ``study``: new, empty, this study's own (a rerun resumes), or
    replaced with ``force``; ``tune.json`` names the study from the start, so a killed run's
    folder is known as this study's."""
    record = out / RECORD
    try:
        ours = record.is_file() and json.loads(record.read_text("utf-8")).get("study") == study
    except (ValueError, AttributeError):  # not JSON, or not an object
        ours = False
    if out.exists() and not ours and any(out.iterdir()) and not force:
        raise InvalidInputError(
            f"{out} already holds something other than this study's results; choose another "
            "--out, or pass --force"
        )
    out.mkdir(parents=True, exist_ok=True)
    if not ours:
        write_text(record, json.dumps({"study": study, "storage": storage}, indent=2))


def _copy_best(source: Path, target: Path) -> None:
    """``target`` replaced by a copy of ``source``, never half-written (names unique to this
    process, so that two workers on one ``--out`` do not collide)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    for _ in range(5):  # another worker may be swapping its copy in at the same moment
        try:
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            break
        except OSError:
            time.sleep(0.2)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TuneError(f"could not write {target}: another process keeps replacing it")
    shutil.rmtree(old, ignore_errors=True)


def best_of(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial, ties to the earliest (the same answer in every worker and
    every storage, which Optuna's ``best_trial`` does not promise)."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not complete:
        return None
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda t: (sign * float(t.value or 0.0), t.number))


def _keep_best_only(trials_dir: Path) -> TrialCallback:
    """After each trial: delete this folder's packages of finished trials that are not the
    best so far (a study of a hundred trials keeps one package, not a hundred)."""

    def callback(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        best = best_of(study)
        if best is None:
            return
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            path = Path(str(t.user_attrs.get("package") or ""))
            if t.number != best.number and path.parent == trials_dir and path.exists():
                shutil.rmtree(path, ignore_errors=True)

    return callback


def _stop_after_failures(limit: int) -> TrialCallback:
    """Stop the study after ``limit`` failed trials in a row (a space where every trial
    diverges would otherwise run until the timeout, or for ever)."""
    streak = [0]

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        streak[0] = streak[0] + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        if streak[0] >= limit:
            study.stop()

    return callback


def _no_trial_finished(study: optuna.Study, timeout: float | None) -> TuneError:
    trials = study.get_trials(deepcopy=False)
    timed = [t for t in trials if str(t.user_attrs.get("error", "")).startswith("the timeout")]
    if timed and timeout is not None:
        t = timed[0]
        seconds, steps = float(t.user_attrs.get("seconds", 0)), int(t.user_attrs.get("steps", 0))
        epochs, per_epoch = t.user_attrs.get("epochs"), t.user_attrs.get("epoch_seconds")
        if steps and epochs and per_epoch:
            took = (
                f"trial {t.number} ran {steps} of {epochs} epochs in {seconds:.1f} s (an epoch "
                f"takes {float(per_epoch):.2g} s, so its epochs take about "
                f"{float(per_epoch) * int(epochs):.0f} s, besides loading and export)"
            )
        else:
            took = f"trial {t.number} ran {steps} step(s) in {seconds:.1f} s before it was stopped"
        return TuneError(
            f"--timeout {timeout:g}s ended before any trial finished: {took}. Hint: raise "
            "--timeout, or narrow the space (fewer epochs, a smaller backbone)"
        )
    errors = [str(t.user_attrs.get("error")) for t in trials if t.user_attrs.get("error")]
    detail = f"; first error: {errors[0]}" if errors else ""
    return TuneError(f"no trial of study {study.study_name!r} finished{detail}")


def tune(
    data: DataLike,
    out: str | Path,
    *,
    backbones: Sequence[str] | None = None,
    trials: int | None = None,
    timeout: str | float | None = None,
    sampler_name: str = "tpe",
    pruner_name: str = "hyperband",
    folds: int | None = None,
    metric: str | None = None,
    space: str | Path | dict[str, Any] | None = None,
    storage: str | None = None,
    study: str | None = None,
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.2,
    force: bool = False,
    callbacks: Sequence[TrialCallback] = (),
    progress: bool | None = None,
) -> TuneResult:
    """Search training hyperparameters with Optuna and write the best trial's package to
    ``out/best`` and an HTML report to ``out/report.html``.

    Args:
        data: A labeled :class:`Dataset` or anything :func:`tuneserve.data.load` takes.
        out: The study's folder (``best/``, ``report.html``, ``trials/``, ``tune.json``).
        backbones: The backbones that compete (default: the modality's default).
        trials: Trials the study should have finished (complete or pruned) in all, over
            every worker and every resumed run (default 20 without ``timeout``; the grid's
            size for ``grid``).
        timeout: Seconds (or ``10m``) this run may spend; running trials are stopped then.
        sampler_name: ``grid``, ``random``, ``tpe``, ``gp`` or ``cmaes``.
        pruner_name: ``none``, ``median``, ``asha`` (successive halving) or ``hyperband``.
        folds: K-fold cross-validation inside train + validation for each trial.
        metric: The validation metric (default: accuracy, or mse for regression).
        space: A space file (YAML/JSON) or its contents, narrowing or replacing the
            default space.
        storage: A database URL (``postgresql://...``) shared by workers; default SQLite
            under ``TUNESERVE_HOME``. A study of the same name there is continued.
        study: The study's name (default: from the data, backbones and metric).
        seed, validation, test: The split (the same for every trial) and the sampler's seed.
        force: Use an ``out`` that holds something else.
        callbacks: ``callback(study, trial)`` after each trial (tracking, printing).
        progress: Show a progress bar (default: on a terminal).

    Raises:
        InvalidInputError: a bad space, metric, sampler, pruner or timeout.
        TuneError: an unreachable storage; a study of the same name with other data; no
            trial finished (with how long one takes when the timeout was too short).
    """
    from ._progress import study_progress

    dataset = data if isinstance(data, Dataset) else load(data)
    metric = check_metric(
        metric or ("accuracy" if dataset.task == "classification" else "mse"),
        dataset.task,
        dataset.num_classes if dataset.task == "classification" else 0,
    )
    seconds = parse_duration(timeout)
    if trials is not None and trials < 1:
        raise InvalidInputError(f"--trials must be 1 or more; got {trials}")
    if folds is not None and folds < 2:
        raise InvalidInputError(f"--folds must be 2 or more; got {folds}")
    sampler(sampler_name, seed)  # names the valid ones before anything else
    pruner(pruner_name)
    given = (read_space_file(space) if not isinstance(space, dict) else space) if space else {}
    chosen = build_space(dataset.modality, dataset.task, list(backbones or []), given)
    target = Path(out).expanduser().resolve()
    setup = Setup(dataset, chosen, metric, seed, validation, test, folds, target / "trials")
    _check_space(setup)
    name = study or _study_name(dataset, chosen, metric)
    store, url = open_storage(storage)
    _prepare_out(target, name, masked(url), force)
    setup.study, setup.storage = name, masked(url)
    attrs = {
        "metric": metric,
        "direction": setup.direction,
        "data": dataset.name,
        "data_fingerprint": dataset.fingerprint,
        "space": json.dumps(chosen.to_dict(), sort_keys=True, default=str),
        "fidelity": "fold" if folds else ("rows" if _all_sklearn(chosen) else "epoch"),
        "storage": masked(url),
        "split": {"seed": seed, "validation": validation, "test": test, "folds": folds},
    }
    with quiet_optuna():
        # a worker that joins a study with trials (another worker's, or a resumed run) seeds
        # its sampler apart, so that it does not propose the points the first one did
        before = {
            x.study_name: x.n_trials
            for x in optuna.get_all_study_summaries(store, include_best_trial=False)
        }
        worker_seed = seed + before.get(name, 0)
        the_study = optuna.create_study(
            study_name=name,
            storage=store,
            direction=_direction(setup.direction),
            sampler=sampler(
                "random" if sampler_name == "grid" and len(chosen.branches) > 1 else sampler_name,
                worker_seed,
                chosen.grid(),
            ),
            pruner=pruner(pruner_name),
            load_if_exists=True,
        )
        _existing(the_study, attrs)
        if sampler_name == "grid" and len(chosen.branches) > 1:
            # Optuna's grid is one product; branches have their own parameters, so each
            # branch's points are queued (once) instead of the product over all of them
            for point in chosen.grid_points():
                the_study.enqueue_trial(point, skip_if_exists=True)
        for key, value in {
            **attrs,
            "sampler": sampler_name,
            "pruner": pruner_name,
            "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }.items():
            if key not in the_study.user_attrs or key in ("sampler", "pruner"):
                the_study.set_user_attr(key, value)
        total = trials
        if sampler_name == "grid":  # a grid ends with its last point
            total = min(total or _grid_size(chosen), _grid_size(chosen))
        elif total is None and seconds is None:
            total = DEFAULT_TRIALS
        finished = len(the_study.get_trials(deepcopy=False, states=DONE))
        setup.deadline = time.monotonic() + seconds if seconds is not None else None
        requeued: list[int] = []
        if total is None or finished < total:
            requeued = requeue_unfinished(the_study)
            extra: list[TrialCallback] = [
                _keep_best_only(setup.trials_dir),
                _stop_after_failures(FAILURES_IN_A_ROW),
                *callbacks,
            ]
            if total is not None:
                extra.insert(0, optuna.study.MaxTrialsCallback(total, states=DONE))
            left = max(total - finished, 0) if total is not None else None
            with study_progress(the_study, trials=left, timeout=seconds) as shown:
                the_study.optimize(
                    Objective(setup),
                    timeout=seconds,
                    callbacks=[*extra, shown],
                    catch=(TuneserveError,),
                    gc_after_trial=True,
                )
    return _finish(the_study, setup, target, seconds, requeued, url)


def _direction(name: str) -> optuna.study.StudyDirection:
    return optuna.study.StudyDirection[name.upper()]


def _all_sklearn(space: Space) -> bool:
    return all(b.family == "sklearn" for b in space.branches)


def _grid_size(space: Space) -> int:
    return len(space.grid_points())


def _finish(
    study: optuna.Study,
    setup: Setup,
    out: Path,
    timeout: float | None,
    requeued: list[int],
    url: str,
) -> TuneResult:
    from ._report import tune_report

    best = best_of(study)
    if best is None:
        raise _no_trial_finished(study, timeout)
    target = out / "best"
    package: Package | None = None
    elsewhere: str | None = None
    for _ in range(3):  # a worker may delete the package it held as a better one arrives
        kept = str(best.user_attrs.get("package") or "")
        try:
            if _holds(target, study.study_name, best.number):
                package = Package.load(target)
            elif setup.folds:
                package = _rebuild(setup, best, target)
            elif kept and Path(kept).is_dir():
                _copy_best(Path(kept), target)
                package = Package.load(target)
            else:
                elsewhere = f"{best.user_attrs.get('owner', '?')}:{kept or '?'}"
            break
        except (FileNotFoundError, shutil.Error):
            best = best_of(study) or best
    counts: dict[str, int] = {}
    compute = 0
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        compute += len(t.intermediate_values) or 1
    report = tune_report(study, out / "report.html")
    result = TuneResult(
        study=study.study_name,
        storage=masked(url),
        best_trial=best.number,
        best_value=float(best.value if best.value is not None else float("nan")),
        best_params=dict(best.params),
        metric=setup.metric,
        direction=setup.direction,
        package=package,
        report=report,
        counts=counts,
        compute=compute,
        best_package_at=elsewhere,
        requeued=requeued,
    )
    write_text(out / RECORD, json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _holds(target: Path, study: str, trial: int) -> bool:
    """``target`` is already that trial's package (a rerun with nothing better found)."""
    try:
        tuning = Package.load(target, verify=False).manifest.lineage.tuning
    except Exception:  # absent or unreadable: write it again
        return False
    return tuning is not None and (tuning.study, tuning.trial) == (study, trial)


def _rebuild(setup: Setup, best: optuna.trial.FrozenTrial, target: Path) -> Package:
    """The best parameters trained once on the study's split (cross-validated trials keep
    no package of their own)."""
    from ._objective import with_tuning

    branch: Branch = setup.space.branches[0]
    if len(setup.space.branches) > 1:
        branch = next(b for b in setup.space.branches if b.label == best.params["model"])
    prefix = f"{branch.label}." if len(setup.space.branches) > 1 else ""
    values = {
        k.removeprefix(prefix): v
        for k, v in best.params.items()
        if k != "model" and k.startswith(prefix)
    }
    values = {
        **{k: v for k, v in branch.space.items() if not isinstance(v, (Range, Choice))},
        **values,
    }
    chosen = with_tuning(plan_for(setup, branch, values), setup, best.number, best.params)
    tmp = target.with_name(f".{target.name}.build-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(setup.data, chosen, tmp, name=target.name)
    _copy_best(tmp, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return Package.load(target)


__all__ = ["OutOfTime", "TuneError", "TuneResult", "parse_duration", "tune"]
