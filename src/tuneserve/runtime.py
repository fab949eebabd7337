"""Run a model package with ONNX Runtime on raw inputs.

A package is a preprocessor and a graph, or an ensemble: member packages whose class
probabilities, side by side, feed a combiner graph (:mod:`tuneserve.ensemble_package`).

This module never imports torch: the server and ``tuneserve predict`` depend on it, so what
was exported and evaluated is exactly what runs, and start-up stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.ensemble_package import INPUT, EnsembleSpec, is_ensemble
from tuneserve.exceptions import InputItemError, InvalidInputError, PackageFormatError
from tuneserve.package import Package
from tuneserve.preprocessing import Preprocessor, TablePreprocessor, preprocessor_from_spec

__all__ = ["EnsembleMembers", "Prediction", "Predictor"]


@dataclass(frozen=True)
class Prediction:
    """One prediction: a label with class probabilities, a regression value, or an
    embedding (feature-extractor packages)."""

    label: str | None = None
    probabilities: dict[str, float] | None = None
    value: float | None = None
    embedding: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the fields that do not apply."""
        if self.embedding is not None:
            return {"embedding": self.embedding}
        if self.value is not None:
            return {"value": self.value}
        return {"label": self.label, "probabilities": self.probabilities}


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


PADDING_SLACK = 1.15  # a group's padded tokens may exceed its real tokens by 15 %
CALL_TOKENS = 16  # what one more graph call costs, in tokens: a group smaller than this joins


def length_groups(
    mask: np.ndarray | None, slack: float = PADDING_SLACK
) -> list[tuple[np.ndarray, int]] | None:
    """Split a right-padded text batch into groups of similar lengths (smart batching).

    Texts of a batch are padded to the longest, so one long text makes every short one
    cost as much as it does. Sorted by length, texts are grouped while the group's padded
    tokens stay within ``slack`` times its real tokens (plus :data:`CALL_TOKENS`); each
    group runs with its own, shorter padding. Returns ``[(row indices, length)]``, or
    ``None`` when one call is best (not text, one row, or little padding to save).
    """
    if mask is None or mask.ndim != 2 or len(mask) < 2:
        return None
    if mask.shape[1] > 1 and (np.diff(mask, axis=1) > 0).any():
        return None  # not right-padded: columns cannot be cut
    lengths = mask.sum(axis=1).astype(np.int64)
    if int(lengths.max()) * len(lengths) <= slack * int(lengths.sum()) + CALL_TOKENS:
        return None
    order = np.argsort(lengths, kind="stable")
    groups: list[tuple[np.ndarray, int]] = []
    start, real = 0, 0
    for end, row in enumerate(order):
        length = int(lengths[row])
        if end > start and length * (end - start + 1) > slack * (real + length) + CALL_TOKENS:
            groups.append((order[start:end], int(lengths[order[end - 1]])))
            start, real = end, 0
        real += length
    groups.append((order[start:], int(lengths[order[-1]])))
    return groups


class EnsembleMembers:
    """An ensemble's members as the feed of its combiner graph: raw inputs ->
    ``{"member_probabilities": (n, members * classes)}``, each member's probabilities with
    its columns put in the ensemble's class order."""

    def __init__(self, members: list[Predictor], labels: list[str]) -> None:
        self.predictors = members
        self.modality = members[0].manifest.modality
        self._order: list[list[int]] = []  # per member: its columns in the ensemble's order
        for member in members:
            columns = list(member.labels or [])
            if sorted(columns) != sorted(labels):
                raise PackageFormatError(
                    f"ensemble member {member.package.path} has classes {columns}; the "
                    f"ensemble has {labels}"
                )
            self._order.append([columns.index(n) for n in labels])

    @classmethod
    def load(cls, package: Package, **options: Any) -> EnsembleMembers:
        """The members of an ensemble package, each a :class:`Predictor` with ``options``.
        They load unverified: the ensemble's own manifest lists every member file, so
        loading the ensemble checked them."""
        spec = EnsembleSpec.of(package.manifest)
        members = [
            Predictor(Package.load(path, verify=False), **options)
            for path in spec.member_paths(package)
        ]
        return cls(members, spec.labels)

    def transform(self, inputs: Any) -> dict[str, np.ndarray]:
        blocks = [
            np.asarray(m.run(inputs))[:, order]
            for m, order in zip(self.predictors, self._order, strict=True)
        ]
        return {INPUT: np.concatenate(blocks, axis=1).astype(np.float32)}


class Predictor:
    """Predict with a package: preprocessing in numpy, the graph in ONNX Runtime. An
    ensemble package runs its members (each a :class:`Predictor` with the same options)
    and then its combiner graph.

    Args:
        package: A :class:`Package` or the path of one (verified on load; an ensemble's
            members are files of the ensemble, so that check covers them).
        batch_size: Inputs per ONNX Runtime call; large input lists are chunked.
        intra_op_threads: ONNX Runtime threads per call (default: the usable CPU cores).
        providers: ONNX Runtime execution providers (default: CPU).

    Example:
        >>> p = Predictor("digits-cnn")                      # doctest: +SKIP
        >>> p.predict(["seven.png"])[0].label                # doctest: +SKIP
        '7'
    """

    def __init__(
        self,
        package: Package | str | Path,
        *,
        batch_size: int = 64,
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        self.package = package if isinstance(package, Package) else Package.load(package)
        self.manifest = self.package.manifest
        self.batch_size = batch_size
        self.preprocessor: Preprocessor | None = None
        self.members: EnsembleMembers | None = None
        if is_ensemble(self.manifest):
            self.members = EnsembleMembers.load(
                self.package,
                batch_size=batch_size,
                intra_op_threads=intra_op_threads,
                providers=providers,
            )
        else:
            self.preprocessor = preprocessor_from_spec(
                self.manifest.preprocessing, self.package.assets_path
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or _default_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.package.graph_path),
                sess_options=options,
                providers=list(providers or ["CPUExecutionProvider"]),
            )
        except Exception as exc:  # ONNX Runtime raises its own untyped errors
            raise PackageFormatError(
                f"ONNX Runtime cannot load the graph of package {self.package.path}: "
                f"{str(exc)[:300]}. Hint: re-export the package"
            ) from exc
        self._inputs = list(self.manifest.graph.inputs)
        self._output = self.manifest.graph.output
        self._check_package()

    def _check_package(self) -> None:
        """Refuse a package whose manifest disagrees with its graph or preprocessing."""
        m, where = self.manifest, f"package {self.package.path}"
        if self.preprocessor is not None and self.preprocessor.modality != m.modality:
            raise PackageFormatError(
                f"{where}: modality {m.modality!r} but {self.preprocessor.kind!r} preprocessing"
            )
        if self.members is not None and self.members.modality != m.modality:
            raise PackageFormatError(
                f"{where}: the ensemble's members take {self.members.modality} inputs, its "
                f"manifest says {m.modality}"
            )
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if not set(self._inputs) <= graph_inputs or len(self._inputs) != len(graph_inputs):
            raise PackageFormatError(
                f"{where}: manifest inputs {self._inputs} do not match the graph's "
                f"{sorted(graph_inputs)}"
            )
        if self._output not in graph_outputs:
            raise PackageFormatError(
                f"{where}: output {self._output!r} is not in the graph's {sorted(graph_outputs)}"
            )
        width = graph_outputs[self._output][-1] if graph_outputs[self._output] else None
        if (
            m.task == "classification"
            and isinstance(width, int)
            and width != len(m.label_names or [])
        ):
            raise PackageFormatError(
                f"{where}: the graph outputs {width} class probabilities but the manifest "
                f"names {len(m.label_names or [])} labels"
            )
        # a table's preprocessing and graph must agree on the number of features
        if isinstance(self.preprocessor, TablePreprocessor):
            made = len(self.preprocessor.feature_names)
            shapes = {i.name: i.shape for i in self.session.get_inputs()}
            wanted = (shapes.get("input") or [None])[-1]
            if isinstance(wanted, int) and wanted != made:
                raise PackageFormatError(
                    f"{where}: the preprocessing makes {made} features per row but the graph "
                    f"takes {wanted}. Hint: the package is damaged; re-export it"
                )

    @property
    def labels(self) -> list[str] | None:
        """Class names in probability-column order (None for regression)."""
        return self.manifest.label_names

    def _chunks(self, inputs: Sequence[Any]) -> Iterator[Sequence[Any]]:
        if isinstance(inputs, str | bytes | dict) or not hasattr(inputs, "__len__"):
            raise InvalidInputError(
                f"inputs must be a list, got a single {type(inputs).__name__}. "
                "Hint: wrap one input in a list"
            )
        if len(inputs) == 0:
            raise InvalidInputError("inputs is empty; send at least one input")
        if hasattr(inputs, "iloc"):  # a DataFrame: slice rows, not columns
            for start in range(0, len(inputs), self.batch_size):
                yield inputs.iloc[start : start + self.batch_size]
            return
        for start in range(0, len(inputs), self.batch_size):
            yield inputs[start : start + self.batch_size]

    def run(
        self, inputs: Sequence[Any], progress: Callable[[int], object] | None = None
    ) -> np.ndarray:
        """Return the graph output for raw inputs, ``batch_size`` at a time; ``progress(n)``
        is called after each batch of ``n`` inputs.

        Returns:
            ``(n, classes)`` probabilities for classification, ``(n,)`` values for regression,
            ``(n, dim)`` features for an embedding package.
        """
        outputs = []
        offset = 0
        for chunk in self._chunks(inputs):
            try:
                feed = self._feed(chunk)
            except InputItemError as exc:  # report the position in the whole input
                raise exc.shifted(offset) from exc
            offset += len(chunk)
            outputs.append(self._run_feed({k: feed[k] for k in self._inputs}))
            if progress is not None:
                progress(len(chunk))
        result = np.concatenate(outputs, axis=0)
        if self.manifest.task == "regression":
            return result.reshape(len(result))
        return result

    def _feed(self, chunk: Sequence[Any]) -> dict[str, np.ndarray]:
        if self.members is not None:
            return self.members.transform(chunk)
        assert self.preprocessor is not None
        return self.preprocessor.transform(chunk)

    def _run_feed(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """One graph call per group of similar lengths when the feed is padded text."""
        groups = length_groups(feed.get("attention_mask"))
        if groups is None:
            (out,) = self.session.run([self._output], feed)
            return np.asarray(out)
        result: np.ndarray | None = None
        for rows, length in groups:
            (out,) = self.session.run(
                [self._output], {k: v[rows, :length] for k, v in feed.items()}
            )
            if result is None:
                result = np.empty((len(feed["attention_mask"]), *out.shape[1:]), out.dtype)
            result[rows] = out
        assert result is not None
        return result

    def predict_proba(
        self, inputs: Sequence[Any], progress: Callable[[int], object] | None = None
    ) -> np.ndarray:
        """Class probabilities ``(n, classes)``; columns follow :attr:`labels`."""
        if self.manifest.task != "classification":
            raise InvalidInputError(
                f"package {self.manifest.name!r} is not a classifier (its task is "
                f"{self.manifest.task}); it has no probabilities. Hint: use run() or predict()"
            )
        return self.run(inputs, progress)

    def predict(
        self, inputs: Sequence[Any], progress: Callable[[int], object] | None = None
    ) -> list[Prediction]:
        """Predict each input: the top label with all class probabilities, or a value."""
        return self.decode(self.run(inputs, progress))

    def decode(self, out: np.ndarray) -> list[Prediction]:
        """Predictions from the output of :meth:`run` (e.g. a slice of a batched run)."""
        if self.manifest.task == "regression":
            return [Prediction(value=float(v)) for v in out]
        if self.manifest.task == "embedding":
            return [Prediction(embedding=[float(v) for v in row]) for row in out]
        labels = self.labels or [str(i) for i in range(out.shape[1])]
        return [
            Prediction(
                label=labels[int(np.argmax(row))],
                probabilities={name: float(p) for name, p in zip(labels, row, strict=True)},
            )
            for row in out
        ]
