"""Search spaces: a default per backbone and strategy, narrowed or replaced by a small
YAML/JSON file, and turned into Optuna suggestions.

A study searches one or more *branches*: a backbone with one strategy (``cnn``,
``random-forest``, ``minilm/full``). With several branches the branch itself is a
categorical parameter named ``model``, and each branch's parameters are named
``BRANCH.NAME`` so that a sampler models each branch on its own.

A space file maps parameter names to a range (``{low: 1e-4, high: 1e-2, log: true}``),
a list of choices (``[32, 64]``) or a fixed value (``epochs: 10``); a mapping named after a
branch (``cnn:``, ``minilm/full:``) holds that branch's own entries, and ``strategy:`` (a
list) narrows the strategies searched. ``replace: true`` searches only what the file names
(everything else at the strategy's defaults); by default the file narrows the default
space.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tuneserve.exceptions import InvalidInputError
from tuneserve.training import Options, get_strategy, list_strategies, resolve_backbone


@dataclass(frozen=True)
class Range:
    """A numeric range; ``integer`` ranges suggest ints; ``step`` (not with ``log``) keeps
    values that far apart (None: any value, or every int)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False
    step: float | None = None

    def grid(self, points: int = 3) -> list[Any]:
        """``points`` values from ``low`` to ``high`` (log-spaced for a log range)."""
        if self.log:
            values = [
                math.exp(math.log(self.low) + i * (math.log(self.high / self.low)) / (points - 1))
                for i in range(points)
            ]
        else:
            values = [self.low + i * (self.high - self.low) / (points - 1) for i in range(points)]
        if self.integer:
            return sorted({round(v) for v in values})
        # four significant figures, but never outside the range
        return [min(max(float(f"{v:.4g}"), self.low), self.high) for v in values]


@dataclass(frozen=True)
class Choice:
    """A categorical parameter."""

    choices: tuple[Any, ...]


Param = Range | Choice | Any  # anything else is a fixed value


def _r(low: float, high: float, log: bool = False) -> Range:
    return Range(low, high, log=log, integer=isinstance(low, int) and isinstance(high, int))


_DECAY = _r(1e-6, 1e-2, log=True)
_LOOP: dict[str, dict[str, Param]] = {
    "mlp/full": {
        "learning_rate": _r(1e-4, 1e-2, log=True),
        "epochs": _r(20, 100),
        "batch_size": Choice((32, 64, 128)),
        "weight_decay": _DECAY,
    },
    "cnn/full": {
        "learning_rate": _r(3e-4, 1e-2, log=True),
        "epochs": _r(5, 30),
        "batch_size": Choice((32, 64, 128)),
        "weight_decay": _DECAY,
        "hidden": Choice((64, 128, 256)),
        "augment_strength": _r(0.0, 2.0),
    },
    "encoder/probe": {
        "learning_rate": _r(1e-3, 1e-1, log=True),
        "epochs": _r(20, 80),
        "weight_decay": _DECAY,
    },
    "encoder/partial": {
        "learning_rate": _r(3e-5, 3e-4, log=True),
        "epochs": _r(2, 6),
        "unfreeze": _r(1, 4),
        "layer_decay": _r(0.6, 1.0),
        "weight_decay": _DECAY,
    },
    "encoder/full": {
        "learning_rate": _r(1e-5, 1e-4, log=True),
        "epochs": _r(2, 5),
        "batch_size": Choice((8, 16, 32)),
        "layer_decay": _r(0.6, 1.0),
        "weight_decay": _DECAY,
    },
    "encoder/lora": {
        "learning_rate": _r(3e-4, 5e-3, log=True),
        "epochs": _r(3, 8),
        "lora_rank": Choice((4, 8, 16)),
        "weight_decay": _DECAY,
    },
}
#: scikit-learn estimators' own parameters (set with ``set_params``)
_ESTIMATORS: dict[str, dict[str, Param]] = {
    "logreg": {"C": _r(1e-3, 1e2, log=True)},
    "linear-svm": {"C": _r(1e-3, 1e2, log=True)},
    "sgd": {"alpha": _r(1e-6, 1e-2, log=True), "penalty": Choice(("l2", "l1", "elasticnet"))},
    "random-forest": {
        "n_estimators": _r(50, 400, log=True),
        "max_depth": Choice((None, 8, 16, 32)),
        "min_samples_leaf": _r(1, 8),
        "max_features": Choice(("sqrt", "log2", 1.0)),
    },
    "hist-gradient-boosting": {
        "learning_rate": _r(0.01, 0.3, log=True),
        "max_iter": _r(50, 500, log=True),
        "max_leaf_nodes": _r(8, 64, log=True),
        "min_samples_leaf": _r(5, 50),
        "l2_regularization": _r(1e-6, 1.0, log=True),
    },
}
#: strategies not searched by default (``auto`` chooses by itself; the others are stages)
_NOT_SEARCHED = {"auto"}
_OPTIONS = ("unfreeze", "lora_rank", "max_length")


@dataclass(frozen=True)
class Branch:
    """One backbone with one strategy, and its space.

    Attributes:
        backbone, strategy: What :func:`tuneserve.training.plan` takes.
        family: The backbone's family (``sklearn``, ``mlp``, ``cnn``, ``text``, ``vision``).
        space: Parameter name -> :class:`Range`, :class:`Choice` or a fixed value.
        estimator: Names this branch's estimator accepts (scikit-learn), with the name to
            set (``C`` of a calibrated SVM is ``estimator__C``).
        valid: Every name a space file may use for this branch.
        kinds: Whether a numeric parameter takes ints or floats (a range is read as such,
            however its bounds are written).
    """

    backbone: str
    strategy: str
    family: str
    space: dict[str, Param]
    estimator: dict[str, str] = field(default_factory=dict)
    valid: tuple[str, ...] = ()
    kinds: dict[str, str] = field(default_factory=dict)  # name -> "int" | "float"

    @property
    def label(self) -> str:
        single = len(list_strategies(self.family)) <= 1
        return self.backbone if single else f"{self.backbone}/{self.strategy}"

    def split(self, params: dict[str, Any]) -> tuple[dict[str, Any], Options, dict[str, Any]]:
        """A trial's values as loop settings, strategy options and estimator parameters."""
        settings: dict[str, Any] = {}
        options: dict[str, Any] = {}
        estimator: dict[str, Any] = {}
        for name, value in params.items():
            if name in self.estimator:
                estimator[self.estimator[name]] = value
            elif name in _OPTIONS:
                options[name] = int(value)
            else:
                settings[name] = value
        return settings, Options(**options, estimator=estimator), estimator


def check_estimator(branch: Branch, modality: str, task: str, values: dict[str, Any]) -> None:
    """Refuse values a scikit-learn branch's estimator would refuse when fit (its own
    parameter checks, run now rather than in a trial).

    Raises:
        InvalidInputError: the estimator's message, naming the parameter.
    """
    if branch.family != "sklearn":
        return
    _, spec = resolve_backbone(modality, branch.backbone)
    estimator = spec.factory(task == "classification", 0)
    _, _, params = branch.split(values)
    try:
        estimator.set_params(**params)
        for part in [estimator, *estimator.get_params(deep=False).values()]:
            validate = getattr(part, "_validate_params", None)
            if callable(validate) and hasattr(part, "get_params"):
                validate()
    except (ValueError, TypeError) as exc:  # sklearn's InvalidParameterError is a ValueError
        raise InvalidInputError(f"{exc}".split("\n")[0]) from None


@dataclass(frozen=True)
class Space:
    """The branches a study searches."""

    branches: tuple[Branch, ...]

    def names(self) -> dict[str, Param]:
        """Optuna parameter name -> distribution, over every branch (for the grid)."""
        out: dict[str, Param] = {}
        if len(self.branches) > 1:
            out["model"] = Choice(tuple(b.label for b in self.branches))
        for b in self.branches:
            for name, p in b.space.items():
                out[self.param_name(b, name)] = p
        return out

    def param_name(self, branch: Branch, name: str) -> str:
        return name if len(self.branches) == 1 else f"{branch.label}.{name}"

    def suggest(self, trial: Any) -> tuple[Branch, dict[str, Any]]:
        """The branch and parameter values of an Optuna trial."""
        branch = self.branches[0]
        if len(self.branches) > 1:
            label = trial.suggest_categorical("model", [b.label for b in self.branches])
            branch = next(b for b in self.branches if b.label == label)
        values: dict[str, Any] = {}
        for name, p in branch.space.items():
            key = self.param_name(branch, name)
            if isinstance(p, Range) and p.integer:
                step = int(p.step or 1)
                values[name] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log, step=step)
            elif isinstance(p, Range):
                values[name] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
            elif isinstance(p, Choice):
                values[name] = trial.suggest_categorical(key, list(p.choices))
            else:
                values[name] = p
        return branch, values

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's grid points (three per range), for Optuna's grid sampler."""
        return {
            k: (p.grid() if isinstance(p, Range) else list(p.choices))
            for k, p in self.names().items()
            if isinstance(p, (Range, Choice))
        }

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the grid, branch by branch (the union of each branch's product,
        not the product over all branches' parameters)."""
        import itertools

        points: list[dict[str, Any]] = []
        for b in self.branches:
            names = {
                self.param_name(b, k): (p.grid() if isinstance(p, Range) else list(p.choices))
                for k, p in b.space.items()
                if isinstance(p, (Range, Choice))
            }
            head = {"model": b.label} if len(self.branches) > 1 else {}
            for values in itertools.product(*names.values()):
                points.append({**head, **dict(zip(names, values, strict=True))})
        return points

    def to_dict(self) -> dict[str, Any]:
        """JSON form, stored with the study (a resumed study must search the same space)."""
        return {b.label: {k: _describe(p) for k, p in b.space.items()} for b in self.branches}


def _describe(p: Param) -> Any:
    if isinstance(p, Range):
        return {"low": p.low, "high": p.high, "log": p.log, "integer": p.integer, "step": p.step}
    if isinstance(p, Choice):
        return list(p.choices)
    return p


def _estimator_names(backbone: str, modality: str, classification: bool) -> dict[str, str]:
    """The parameters a scikit-learn backbone's estimator takes: plain names, and those of
    a wrapped estimator (a calibrated SVM's ``estimator__C``) under their own name."""
    _, spec = resolve_backbone(modality, backbone)
    params = spec.factory(classification, 0).get_params(deep=True)
    names = {k: k for k in params if "__" not in k}
    for k in params:
        head, _, tail = k.partition("__")
        if head == "estimator" and tail and "__" not in tail:
            names.setdefault(tail, k)
    return names


def _loop_key(family: str, strategy: str) -> str:
    return f"encoder/{strategy}" if family in ("text", "vision") else f"{family}/{strategy}"


def default_branches(
    modality: str, backbones: list[str | None], task: str, strategies: list[str] | None = None
) -> list[Branch]:
    """Each backbone's branches (its searchable strategies, or ``strategies``) with their
    default spaces."""
    out: list[Branch] = []
    for backbone in backbones:
        name, spec = resolve_backbone(modality, backbone)
        known = [s.name for s in list_strategies(spec.family) if s.name not in _NOT_SEARCHED]
        if strategies:
            for s in strategies:
                get_strategy(spec, s, backbone=name)  # names the strategies it has
            known = [s for s in known if s in strategies]
            if not known:
                has = ", ".join(s.name for s in list_strategies(spec.family))
                raise InvalidInputError(
                    f"--space strategy {strategies} leaves nothing to search for backbone "
                    f"{name!r}; it supports {has}"
                )
        for strategy in known:
            chosen = get_strategy(spec, strategy, backbone=name)
            kinds: dict[str, str] = {}
            if spec.family == "sklearn":
                estimator = _estimator_names(name, modality, task == "classification")
                space = dict(_ESTIMATORS.get(name, {}))
                valid = tuple(sorted(estimator))
                defaults = spec.factory(task == "classification", 0).get_params(deep=True)
                for short, full in estimator.items():
                    kinds.update(_kind(short, defaults.get(full)))
            else:
                estimator = {}
                space = dict(_LOOP.get(_loop_key(spec.family, strategy), {}))
                config = chosen.default_config()
                loop = list(fields(config)) if config is not None else []
                options = [o for o in _OPTIONS if o in chosen.options]
                valid = tuple(sorted({*(f.name for f in loop), *options}))
                for f in loop:
                    text = str(f.type)
                    if text.startswith(("int", "float")):
                        kinds[f.name] = text.split()[0]
                kinds.update({o: "int" for o in options})
            out.append(Branch(name, strategy, spec.family, space, estimator, valid, kinds))
    return out


def _kind(name: str, default: Any) -> dict[str, str]:
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return {}
    return {name: "int" if isinstance(default, int) else "float"}


def read_space_file(path: str | Path) -> dict[str, Any]:
    """A space file's contents (YAML or JSON)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidInputError(f"--space {file} does not exist; pass a YAML or JSON file")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".json":
            loaded = json.loads(text)
        else:
            import yaml

            loaded = yaml.safe_load(text)
    except Exception as exc:  # the parser's own message names the line
        raise InvalidInputError(f"--space {file} is not valid YAML/JSON: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise InvalidInputError(
            f"--space {file} must be a mapping of parameter names, e.g. 'learning_rate: "
            "{low: 1e-4, high: 1e-2, log: true}'"
        )
    return loaded


_SCALARS = (str, int, float, bool, type(None))


def _number(name: str, what: str, value: Any, where: str) -> float:
    """A number from a space file (YAML reads ``1e-4`` as text: it is taken as a number)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{where} {name}: {what} must be a number; got {value!r}")
    return value


def parse_param(name: str, value: Any, where: str = "--space", kind: str | None = None) -> Param:
    """A space file entry as a :class:`Range`, :class:`Choice` or fixed value; ``kind``
    (``int`` or ``float``) is what the parameter takes, whatever the bounds look like.

    Raises:
        InvalidInputError: an empty or inverted range, a log range that reaches 0, a bad
            step, no choices, a choice that is not a plain value.
    """
    if isinstance(value, list):
        if not value:
            raise InvalidInputError(
                f"{where} {name}: the list of choices is empty; give one or more"
            )
        odd = [v for v in value if not isinstance(v, _SCALARS)]
        if odd:
            raise InvalidInputError(
                f"{where} {name}: choices must be plain values (numbers, text, true/false, "
                f"null); got {odd[0]!r}"
            )
        return Choice(tuple(value)) if len(value) > 1 else value[0]
    if not isinstance(value, dict):
        if not isinstance(value, _SCALARS):
            raise InvalidInputError(f"{where} {name}: a fixed value must be plain; got {value!r}")
        return value
    unknown = sorted(set(value) - {"low", "high", "log", "step"})
    if unknown or not {"low", "high"} <= set(value):
        raise InvalidInputError(
            f"{where} {name}: a range is {{low: L, high: H}} with optional log: true and step: "
            f"N; got {value}"
        )
    low = _number(name, "low", value["low"], where)
    high = _number(name, "high", value["high"], where)
    if not low < high:
        word = "empty" if low == high else "inverted"
        raise InvalidInputError(
            f"{where} {name}: the range [{value['low']}, {value['high']}] is {word}; low must be "
            f"below high (to fix a value, write '{name}: {value['low']}')"
        )
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise InvalidInputError(f"{where} {name}: log is true or false; got {log!r}")
    if log and low <= 0:
        raise InvalidInputError(f"{where} {name}: a log range needs low > 0; got low={low}")
    integer = kind == "int" if kind else isinstance(low, int) and isinstance(high, int)
    if integer and not (float(low).is_integer() and float(high).is_integer()):
        raise InvalidInputError(
            f"{where} {name} takes whole numbers; got the range [{low}, {high}]"
        )
    step = value.get("step")
    if step is not None:
        step = _number(name, "step", step, where)
        if not step > 0 or (integer and not float(step).is_integer()) or log:
            raise InvalidInputError(
                f"{where} {name}: step must be a {'whole ' if integer else ''}number > 0 and "
                f"cannot go with log: true; got step={value.get('step')!r}"
            )
    if integer:
        return Range(int(low), int(high), log, True, int(step) if step is not None else None)
    return Range(float(low), float(high), log, False, float(step) if step is not None else None)


def apply_space_file(branches: list[Branch], given: dict[str, Any]) -> list[Branch]:
    """The branches with a space file's entries applied (see the module docstring).

    Raises:
        InvalidInputError: a name no branch takes (the message lists the valid ones), a
            branch the study does not search, a bad range.
    """
    given = dict(given)
    replace_all = given.pop("replace", False)
    if not isinstance(replace_all, bool):
        raise InvalidInputError(f"--space replace: is true or false; got {replace_all!r}")
    given.pop("strategy", None)  # applied when the branches were chosen
    labels = {b.label: b for b in branches}
    per_branch: dict[str, dict[str, Any]] = {b.label: {} for b in branches}
    for key, value in given.items():
        if key in labels or (isinstance(value, dict) and "low" not in value and "/" in key):
            if key not in labels:
                raise InvalidInputError(
                    f"--space names {key!r}, which this study does not search; it searches "
                    f"{', '.join(labels)}"
                )
            if not isinstance(value, dict):
                raise InvalidInputError(f"--space {key}: must be a mapping of its parameters")
            per_branch[key].update(value)
        else:
            for label in labels:
                per_branch[label].setdefault(key, value)
    out = []
    for b in branches:
        entries = per_branch[b.label]
        shared = {k for k in given if k not in labels}
        space = {} if replace_all else dict(b.space)
        for name, value in entries.items():
            if name not in b.valid:
                if name in shared and len(branches) > 1 and any(name in o.valid for o in branches):
                    continue  # a shared entry that only other branches take
                raise InvalidInputError(
                    f"--space: unknown parameter {name!r} for {b.label}; valid: "
                    f"{', '.join(b.valid)}"
                )
            space[name] = parse_param(name, value, kind=b.kinds.get(name))
        out.append(dataclasses.replace(b, space=space))
    return out


def build_space(
    modality: str,
    task: str,
    backbones: list[str] | None,
    given: dict[str, Any] | None = None,
) -> Space:
    """The study's space: the default branches of ``backbones`` (default: the modality's
    default backbone), with a space file's entries applied."""
    given = given or {}
    strategies = given.get("strategy")
    if strategies is not None and not isinstance(strategies, list):
        strategies = [strategies]
    chosen: list[str | None] = list(backbones) if backbones else [None]
    return Space(
        tuple(apply_space_file(default_branches(modality, chosen, task, strategies), given))
    )
