"""The ensemble package: member packages inside one package, and a combiner graph over
their class probabilities.

Layout, inside an ordinary package (see :mod:`tuneserve.package`)::

    <ensemble>/
      manifest.json             preprocessing: {"kind": "ensemble-members", "modality",
                                "labels", "members": ["members/0", ...]}
      model.onnx                the combiner: member_probabilities -> probabilities
      assets/members/<i>/...    member i: its manifest, graph and assets, not its extras/

The runtime (:class:`tuneserve.runtime.Predictor`) runs every member on the raw inputs,
each with its own preprocessing and graph, and the combiner graph on their probabilities
side by side. :func:`tuneserve.selection.export_ensemble` writes such packages. This module
holds what both sides must agree on; it imports neither torch nor onnx.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from tuneserve.exceptions import InvalidInputError, PackageFormatError
from tuneserve.package import MANIFEST_FILE, Manifest, Package

__all__ = ["INPUT", "KIND", "EnsembleSpec", "is_ensemble", "member_files"]

#: The manifest's ``preprocessing.kind`` of an ensemble package (the name dates from when
#: the members ran as a preprocessor; packages on disk carry it).
KIND: Literal["ensemble-members"] = "ensemble-members"
#: The combiner graph's input: ``(rows, members * classes)``, member after member.
INPUT = "member_probabilities"
MEMBERS_DIR = "members"
ASSETS_DIR = "assets"  # Package.assets_path


class EnsembleSpec(BaseModel):
    """What an ensemble package's manifest says under ``preprocessing``.

    Attributes:
        modality: What a caller sends (every member takes the same input).
        labels: The ensemble's class order; each member's columns are put in this order
            before the combiner sees them.
        members: The member folders, relative to the package's ``assets/``, in the order
            of the combiner's input blocks.
    """

    model_config = ConfigDict(extra="ignore")

    kind: Literal["ensemble-members"] = KIND
    modality: Literal["image", "table", "text"]
    labels: list[str]
    members: list[str]

    @field_validator("members")
    @classmethod
    def _inside_the_package(cls, members: list[str]) -> list[str]:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for folder in members:
            rel = PurePosixPath(folder)
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                raise ValueError(f"member folder {folder!r} is outside the package")
        return members

    @classmethod
    def for_members(cls, modality: str, labels: list[str], count: int) -> EnsembleSpec:
        """The spec of a new ensemble of ``count`` members (stored as ``members/<i>``)."""
        folders = [f"{MEMBERS_DIR}/{i}" for i in range(count)]
        return cls.model_validate({"modality": modality, "labels": labels, "members": folders})

    @classmethod
    def of(cls, manifest: Manifest) -> EnsembleSpec:
        """Read the spec of an ensemble package's manifest.

        Raises:
            PackageFormatError: the manifest's ensemble spec is malformed.
        """
        try:
            return cls.model_validate(manifest.preprocessing)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PackageFormatError(
                f"the ensemble spec of package {manifest.name!r} is malformed at {where!r}: "
                f"{first['msg']}. Hint: re-export the package; manifests are not meant to be "
                "edited"
            ) from exc

    def member_paths(self, package: Package) -> list[Path]:
        """The member package folders inside ``package``."""
        return [package.assets_path / folder for folder in self.members]


def is_ensemble(manifest: Manifest) -> bool:
    """Whether a manifest describes an ensemble package."""
    return manifest.preprocessing.get("kind") == KIND


def member_files(member: Package, folder: str) -> dict[str, Path]:
    """What an ensemble package holds of ``member`` under ``assets/<folder>``: ensemble
    file name -> the member's file to copy. Its manifest, graph and assets, not its
    ``extras/`` (weights for other runtimes and for ``--from``): the ensemble never runs
    them, and a fine-tuned encoder's weights are as large as its graph.

    Raises:
        InvalidInputError: the member's manifest names a file outside its folder (a member
            loaded unverified could otherwise copy a file of the host).
    """
    kept = [n for n in member.manifest.files if not n.startswith("extras/")]
    for name in kept:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or name == MANIFEST_FILE:
            raise InvalidInputError(
                f"package file name {name!r} is not allowed; member {member.path} may name "
                f"only files inside its folder other than {MANIFEST_FILE}"
            )
    return {
        f"{ASSETS_DIR}/{folder}/{name}": Path(member.path) / name for name in [MANIFEST_FILE, *kept]
    }
