"""The study's HTML report: a summary, Optuna's own plots and every trial, best first, in
one self-contained page. Reads the user attrs ``tuneserve tune`` records (study: ``metric``,
``direction``, ``data``, ``sampler``, ``pruner``, ``fidelity``, ``storage``, ``started_at``;
trial: ``backbone``, ``strategy``, ``package``, ``seconds``, ``error``, ``steps``) and copes
when any of them is missing."""

from __future__ import annotations

import html
import math
import shlex
import warnings
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuneserve.atomic import write_text
from tuneserve.redact import mask_url

#: what one rung of each fidelity is called (the unit of the study's compute)
STEP_NAMES = {"epoch": "epochs", "fold": "folds", "rows": "row rungs"}
#: the table's order: complete trials (best first), then pruned, running, the rest
_RANK = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2}


def tune_report(study: optuna.Study, out: Path, *, title: str | None = None) -> Path:
    """Write the study's report to ``out`` (atomically: a crash never leaves half a page)
    and return ``out``. A plot that cannot be drawn yet (too few trials) is replaced by a
    line saying why: this never raises for a small or empty study."""
    from tuneserve.evaluation import html_page

    data = study.user_attrs.get("data")
    name = title or f"Hyperparameter search {study.study_name}" + (f" on {data}" if data else "")
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and _finite(t.value)]
    pick = max if _direction(study) == "maximize" else min
    best = pick(complete, key=lambda t: float(t.value or 0.0)) if complete else None
    body = _summary(study, trials, best) + _plots(study, complete, best)
    body += "<h2>Trials, best first</h2>" + _table(study, trials, best)
    write_text(Path(out), html_page(name, body))
    return Path(out)


def _direction(study: optuna.Study) -> str:
    said = study.user_attrs.get("direction")
    if said in ("maximize", "minimize"):
        return str(said)
    return "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"


def _metric(study: optuna.Study) -> str:
    return str(study.user_attrs.get("metric") or (study.metric_names or ["value"])[0])


def _steps(study: optuna.Study) -> str:
    return STEP_NAMES.get(str(study.user_attrs.get("fidelity") or "epoch"), "steps")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _wall(study: optuna.Study, trials: list[FrozenTrial]) -> str | None:
    """From ``started_at`` (else the first trial's start) to the last trial's end (now while
    one runs). Optuna's datetimes are naive local time: an aware ``started_at`` becomes one."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    start = min(starts) if starts else None
    try:
        said = datetime.fromisoformat(str(study.user_attrs["started_at"]))
        start = said.astimezone().replace(tzinfo=None) if said.tzinfo else said
    except (KeyError, ValueError):
        pass
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if start is None:
        return None
    if not ends or any(t.state == TrialState.RUNNING for t in trials):
        ends.append(datetime.now())
    s = max(0.0, (max(ends) - start).total_seconds())
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _summary(study: optuna.Study, trials: list[FrozenTrial], best: FrozenTrial | None) -> str:
    a = study.user_attrs
    n = {s: sum(t.state == s for t in trials) for s in TrialState}
    # the compute: the rungs every trial ran (its intermediate values, or 1 if it reported none)
    compute = sum(len(t.intermediate_values) or 1 for t in trials)
    rows = {
        "study": study.study_name,
        "data": a.get("data"),
        "metric": f"{_metric(study)} ({_direction(study)})",
        "sampler": a.get("sampler") or type(study.sampler).__name__,
        "pruner": a.get("pruner") or type(study.pruner).__name__,
        "fidelity": a.get("fidelity"),
        "best": None if best is None else f"{_fmt(best.value)} (trial {best.number})",
        "best parameters": None if best is None else _params(best.params),
        "trials": f"{len(trials)}: {n[TrialState.COMPLETE]} complete, {n[TrialState.PRUNED]} "
        f"pruned, {n[TrialState.FAIL]} failed, {n[TrialState.RUNNING]} running",
        "compute": f"{compute} {_steps(study)} over all trials (the rungs each trial ran)",
        "wall time": _wall(study, trials),
        "started": a.get("started_at"),
    }
    cells = "".join(
        f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items() if v
    )
    text = f"<table class='summary'>{cells}</table>"
    if best is None:
        text += "<p><b>No trial has completed yet</b>: there is no best value.</p>"
    if a.get("storage"):
        command = f"optuna-dashboard {shlex.quote(mask_url(str(a['storage'])))}"
        text += (
            f"<p>Live view of the same storage: <code>{html.escape(command)}</code> "
            "(<code>pip install optuna-dashboard</code>).</p>"
        )
    return text


def _image(draw: Callable[[], Any], size: tuple[float, float]) -> tuple[str, list[str]]:
    """``draw()``'s figure as an embedded PNG, and Optuna's warnings while drawing (recorded,
    not raised: tests run with ``-W error``; matplotlib's cosmetic ones are dropped). The rc
    context undoes Optuna's global ``plt.style.use("ggplot")``."""
    import matplotlib

    from tuneserve.evaluation import plot_image

    with warnings.catch_warnings(record=True) as caught, matplotlib.rc_context():
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        drawn = draw()
        figure = (drawn.flat[0] if hasattr(drawn, "flat") else drawn).get_figure()
        figure.set_size_inches(*size)
        image = plot_image(figure)
    return image, [str(w.message) for w in caught if "optuna" in (w.filename or "")]


def _missing(why: str) -> str:
    return f"<p class='missing'>Not drawn: {html.escape(why)}</p>"


def _section(heading: str, caption: str, content: str) -> str:
    return f"<h2>{heading}</h2><p><i>{html.escape(caption)}</i></p>{content}"


def _plots(study: optuna.Study, complete: list[FrozenTrial], best: FrozenTrial | None) -> str:
    """A section per plot: its caption, then the image or a line saying why it is missing."""
    from optuna.visualization import matplotlib as plots

    metric = _metric(study)
    names = {k for t in complete for k in t.params}
    varying = sorted(k for k in names if len({repr(t.params.get(k)) for t in complete}) > 1)
    if len(complete) < 2:
        why = f"needs at least 2 complete trials; this study has {len(complete)}"
    else:
        why = "" if varying else "every complete trial has the same parameters"

    def slices() -> Any:
        drawn = plots.plot_slice(study, params=varying, target_name=metric)
        axes = list(getattr(drawn, "flat", [drawn]))
        for extra in set(axes[0].get_figure().axes) - set(axes):
            extra.remove()  # the trial-number colour bar, which the tight layout overlaps
        return drawn

    history = partial(plots.plot_optimization_history, study, target_name=metric)
    out = _section(
        "Optimization history",
        f"{metric} of each trial and the best so far.",
        _image(history, (9, 4.5))[0] if complete else _missing("no trial has completed yet"),
    )
    out += _section(
        "Parameter importances",
        f"How much each parameter explains the spread of {metric} (Optuna's default "
        "evaluator, over the complete trials).",
        _missing(why) if why else _importances(study, metric),
    )
    lines = partial(plots.plot_parallel_coordinate, study, target_name=metric)
    out += _section(
        "Parallel coordinates",
        f"Each complete trial as a line through its parameters to its {metric}.",
        _missing(why) if why else _image(lines, (10, 5))[0],
    )
    reported = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    curves = _intermediate(study, best, metric) if reported else ""
    out += _section(
        "Intermediate values",
        f"{metric} at each rung of every trial: pruned trials dashed and grey, an x where the "
        "pruner stopped them, the best trial in gold.",
        curves or _missing("no trial reported intermediate values"),
    )
    if not why:
        width = min(4 + 3.2 * len(varying), 18)
        caption = f"{metric} against each parameter that varied (darker: a later trial)."
        out += _section("Slices", caption, _image(slices, (width, 4))[0])
    return out


def _importances(study: optuna.Study, metric: str) -> str:
    from optuna.visualization import matplotlib as plots

    try:
        draw = partial(plots.plot_param_importances, study, target_name=metric)
        image, said = _image(draw, (9, 4))
    except ValueError as exc:  # Optuna refuses to assess this search space
        return _missing(f"Optuna cannot assess the importances here: {exc}")
    equal = [s for s in said if "importances will be equal" in s]
    if equal:  # equal bars would mislead: say why instead
        return _missing(f"the trials do not tell the parameters apart yet ({equal[0]})")
    return image + "".join(f"<p><i>Optuna notes: {html.escape(s)}</i></p>" for s in said)


def _intermediate(study: optuna.Study, best: FrozenTrial | None, metric: str) -> str:
    """Optuna's intermediate-values plot, restyled so that what the pruner stopped shows."""
    from optuna.visualization import matplotlib as plots

    by_label = {f"Trial{t.number}": t for t in study.get_trials(deepcopy=False)}

    def draw() -> Any:
        from matplotlib.lines import Line2D

        ax = plots.plot_intermediate_values(study)
        for line in ax.get_lines():
            trial = by_label.get(str(line.get_label()))
            if trial is not None and trial.state == TrialState.PRUNED:
                line.set(color="#999999", linestyle="--", alpha=0.8)
                x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
                ax.plot(x[-1:], y[-1:], "x", color="tab:red", markersize=8)
            elif trial is not None and best is not None and trial.number == best.number:
                line.set(color="gold", linewidth=2.5, alpha=1.0, zorder=5)
            elif trial is not None:
                line.set(color="tab:blue", alpha=0.6)
        handles = [
            Line2D([], [], color="gold", linewidth=2.5, label="best"),
            Line2D([], [], color="tab:blue", label="complete"),
            Line2D([], [], color="#999999", linestyle="--", label="pruned"),
            Line2D([], [], color="tab:red", marker="x", linestyle="", label="stopped here"),
        ]
        # a legend of what the styles mean, instead of Optuna's one entry per trial
        ax.legend(handles=handles if best is not None else handles[1:], fontsize=8)
        ax.set(xlabel=f"rung ({_steps(study)})", ylabel=metric)
        return ax

    return _image(draw, (9, 4.5))[0]


def _table(study: optuna.Study, trials: list[FrozenTrial], best: FrozenTrial | None) -> str:
    if not trials:
        return "<p>No trials yet.</p>"
    sign = -1.0 if _direction(study) == "maximize" else 1.0

    def order(t: FrozenTrial) -> tuple[int, float, int]:
        value = sign * t.value if t.value is not None and _finite(t.value) else math.inf
        return _RANK.get(t.state, 3), value, t.number

    head = ["trial", "state", _metric(study), "parameters", "backbone / strategy", _steps(study)]
    rows = []
    for t in sorted(trials, key=order):
        a = t.user_attrs
        value = "" if t.value is None else _fmt(t.value)
        if t.state == TrialState.PRUNED and t.last_step is not None:
            value += f" (at rung {t.last_step})"
        seconds = a.get("seconds", t.duration.total_seconds() if t.duration else None)
        what = " / ".join(str(a[k]) for k in ("backbone", "strategy") if a.get(k))
        steps = a.get("steps", len(t.intermediate_values))
        if t.state == TrialState.FAIL:
            note = str(a.get("error", "failed (no error recorded)"))
        else:
            note = str(a.get("package", ""))  # kept trials only: a pruned one's is deleted
        secs = "" if seconds is None else f"{float(seconds):.1f}"
        cells = [t.number, t.state.name.lower(), value, _params(t.params), what, steps, secs, note]
        top = best is not None and t.number == best.number
        style = " style='background:#fff6d5'" if top else ""
        tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        rows.append(f"<tr{style}>{tds}</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in [*head, "seconds", "package or error"])
    return f"<table class='trials'><tr>{header}</tr>{''.join(rows)}</table>"
