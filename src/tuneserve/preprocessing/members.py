"""The preprocessing of an ensemble package: run every member package on the raw inputs
(each with its own preprocessing and graph) and hand the combiner graph their class
probabilities side by side. Needs no torch: members run on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np

from tuneserve.exceptions import PackageFormatError

from ._base import Preprocessor, register_preprocessor

INPUT = "member_probabilities"
MEMBERS_DIR = "members"


@register_preprocessor
class MembersPreprocessor(Preprocessor):
    """Raw inputs -> ``{"member_probabilities": (n, members * classes)}``.

    Args:
        members: The member :class:`~tuneserve.runtime.Predictor` objects, in order.
        labels: The ensemble's class order; each member's columns are put in this order.
    """

    kind = "ensemble-members"
    modality = "table"  # replaced per instance by the members' modality

    def __init__(self, members: list[Any], labels: list[str]) -> None:
        if not members:
            raise PackageFormatError("an ensemble needs at least one member")
        self.members = members
        self.labels = list(labels)
        self.modality = members[0].manifest.modality  # type: ignore[misc]
        self._order = [[list(m.labels).index(n) for n in self.labels] for m in members]

    def fit(self, inputs: Any) -> Self:
        return self  # the members are fitted already

    def transform(self, inputs: Any) -> dict[str, np.ndarray]:
        blocks = [
            np.asarray(m.run(inputs))[:, order]
            for m, order in zip(self.members, self._order, strict=True)
        ]
        return {INPUT: np.concatenate(blocks, axis=1).astype(np.float32)}

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "modality": self.modality,
            "labels": self.labels,
            "members": [f"{MEMBERS_DIR}/{i}" for i in range(len(self.members))],
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], assets: Path | None = None) -> Self:
        from tuneserve.package import Package
        from tuneserve.runtime import Predictor

        if assets is None:
            raise PackageFormatError("an ensemble package has no assets folder with its members")
        # the ensemble's own manifest lists (and loading checked) every file of its members,
        # so each member is not checked twice; their extras/ are left out (see assets())
        members = [Predictor(Package.load(assets / rel, verify=False)) for rel in spec["members"]]
        built = cls(members, list(spec["labels"]))
        if built.modality != spec["modality"]:
            raise PackageFormatError(
                f"the ensemble's members take {built.modality} inputs, its manifest says "
                f"{spec['modality']}"
            )
        return built

    def input_schema(self) -> dict[str, Any]:
        return dict(self.members[0].manifest.input_schema)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {INPUT: {0: "batch"}}

    def assets(self) -> dict[str, bytes | Path]:
        """Each member's manifest, graph and assets, copied from its folder. Not its
        ``extras/`` (weights for other runtimes and for ``--from``): the ensemble never runs
        them, and a fine-tuned encoder's weights are as large as its graph."""
        from tuneserve.package import MANIFEST_FILE, _safe_relpath

        files: dict[str, bytes | Path] = {}
        for i, member in enumerate(self.members):
            package = member.package
            kept = [n for n in package.manifest.files if not n.startswith("extras/")]
            for name in kept:  # checked here too: a member may have been loaded unverified
                _safe_relpath(name)
            for name in [MANIFEST_FILE, *kept]:
                files[f"{MEMBERS_DIR}/{i}/{name}"] = Path(package.path) / name
        return files
