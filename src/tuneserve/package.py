"""The model package: one self-contained directory per deployable model.

Layout::

    <package>/
      manifest.json     format version, task, labels, input schema, preprocessing, graph,
                        metrics, lineage, and the sha256 of every other file
      model.onnx        the inference graph (probabilities for classification)
      assets/...        preprocessing files (tokenizer.json, ...)
      extras/...        optional files for other runtimes (model.torchscript.pt, ...)

Packages are immutable once written: a write goes to a temporary sibling directory that is
renamed into place, so a crash never leaves a half-written package. Loading verifies every
checksum and refuses a package from a newer format version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import unicodedata
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneserve._version import __version__
from tuneserve.exceptions import (
    ChecksumError,
    InvalidInputError,
    NotFoundError,
    PackageError,
    PackageFormatError,
)
from tuneserve.lineage import Lineage, from_training_config

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "MAX_MANIFEST_BYTES",
    "Graph",
    "Lineage",
    "Manifest",
    "Package",
    "printable",
]

#: Bump when a change to the layout or manifest would mislead an older reader.
#: 1: classification and regression packages. 2: adds embedding packages (feature
#: extractors from ``tuneserve pretrain``). 3: typed lineage fields (split, held-out rows,
#: fold, update, history, backbone) instead of one ``training_config`` dict. Every version
#: up to this one is read.
FORMAT_VERSION = 3
MANIFEST_FILE = "manifest.json"
#: An optional Ed25519 signature of the package id (:mod:`tuneserve.signing`).
SIGNATURE_FILE = "signature.json"
GRAPH_FILE = "model.onnx"
#: Largest manifest.json read. The biggest part of a real manifest is the held-out row
#: indices of its lineage, one indented line each (about 17 bytes a row: 17 MB for a
#: million rows), so this leaves room for test splits of millions of rows while refusing a
#: manifest meant to exhaust memory.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
#: Deepest JSON nesting read from a manifest; tuneserve writes at most about 6 levels.
MAX_MANIFEST_DEPTH = 64


class _Model(BaseModel):
    # Ignore unknown keys so that an older reader of the same format version can still
    # load a package that a newer tuneserve annotated with extra information.
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class Graph(_Model):
    """The ONNX graph: file, input names in feed order, and the output to read."""

    file: str = GRAPH_FILE
    inputs: list[str]
    output: str
    output_kind: Literal["probabilities", "prediction", "embedding"]
    opset: int | None = None
    parity_max_abs_diff: float | None = Field(
        default=None,
        description="largest |original - ONNX| output difference measured at export",
    )


class Manifest(_Model):
    """Everything about a package except its weights."""

    format_version: int = FORMAT_VERSION
    name: str
    task: Literal["classification", "regression", "embedding"]
    modality: Literal["image", "table", "text"]
    label_names: list[str] | None = None
    input_schema: dict[str, Any]
    preprocessing: dict[str, Any]
    graph: Graph
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    files: dict[str, str] = Field(default_factory=dict, description="path -> sha256:hex")
    package_id: str = ""

    @model_validator(mode="before")
    @classmethod
    def _typed_lineage(cls, data: Any) -> Any:
        """Read a format-1/2 ``lineage.training_config`` into the typed lineage fields."""
        if isinstance(data, dict) and isinstance(data.get("lineage"), dict):
            lineage = data["lineage"]
            if "training_config" in lineage:
                data = {**data, "lineage": from_training_config(lineage)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.task == "classification":
            if not self.label_names or len(self.label_names) < 2:
                raise ValueError("a classification package needs at least 2 label_names")
            if len(set(self.label_names)) != len(self.label_names):
                raise ValueError(f"label_names repeat a name: {self.label_names}")
            if self.graph.output_kind != "probabilities":
                raise ValueError("a classification graph must output probabilities")
        elif self.task == "embedding":
            if self.graph.output_kind != "embedding" or self.label_names:
                raise ValueError("an embedding package outputs embeddings and has no labels")
        elif self.graph.output_kind != "prediction":
            raise ValueError("a regression graph must output predictions")
        if "kind" not in self.preprocessing:
            raise ValueError("preprocessing needs a 'kind'")
        return self


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _package_id(manifest_json: Mapping[str, Any]) -> str:
    """A content id over the manifest as stored (minus the id itself), file checksums included.

    It doubles as the manifest's own checksum: an edited manifest no longer matches its id.
    The creation time is left out, so the same content written twice gets the same id.
    """
    body = {k: v for k, v in manifest_json.items() if k != "package_id"}
    lineage = body.get("lineage")
    if isinstance(lineage, dict):
        body["lineage"] = {k: v for k, v in lineage.items() if k != "created_at"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f"pkg-{digest[:16]}"


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    """Parse manifest.json, refusing one too large or too deeply nested to read safely."""
    damaged = "Hint: the package is damaged; restore it from the registry or re-export it"
    with manifest_path.open("rb") as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise PackageFormatError(
            f"{manifest_path} is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MB, the "
            f"most tuneserve reads. {damaged}"
        )
    try:
        raw = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageFormatError(f"{manifest_path} is not valid JSON: {exc}. {damaged}") from exc
    except RecursionError as exc:
        raise PackageFormatError(
            f"{manifest_path} nests JSON deeper than {MAX_MANIFEST_DEPTH} levels. {damaged}"
        ) from exc
    if not isinstance(raw, dict):
        raise PackageFormatError(f"{manifest_path} must hold a JSON object")
    if _depth(raw) > MAX_MANIFEST_DEPTH:
        raise PackageFormatError(
            f"{manifest_path} nests JSON deeper than {MAX_MANIFEST_DEPTH} levels. {damaged}"
        )
    return raw


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a deep value would overflow it)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_MANIFEST_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def printable(text: str) -> str:
    """``text`` with control and invisible formatting characters escaped (``\\n``,
    ``\\x1b``, ``\\u202e``), for printing names a package chose (labels) to a terminal or a
    log without letting them move the cursor, recolour, or reorder the line."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _safe_relpath(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or name == MANIFEST_FILE:
        raise InvalidInputError(
            f"package file name {name!r} is not allowed; use a relative path inside the package "
            f"other than {MANIFEST_FILE}"
        )
    return rel


class Package:
    """A model package on disk, with its verified manifest.

    Use :meth:`load` to open one and :meth:`write` to create one.
    """

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self._stored: dict[str, Any] | None = None  # manifest.json as read, for verify()

    def __repr__(self) -> str:
        return f"Package({str(self.path)!r}, name={self.manifest.name!r}, id={self.id!r})"

    @property
    def id(self) -> str:
        """Content id: the same files and manifest give the same id."""
        return self.manifest.package_id

    @property
    def graph_path(self) -> Path:
        """Path of the ONNX graph."""
        return self.path / self.manifest.graph.file

    @property
    def assets_path(self) -> Path:
        """Folder of preprocessing assets."""
        return self.path / "assets"

    def size_bytes(self) -> int:
        """Total size of the package's files, manifest included."""
        return sum((self.path / f).stat().st_size for f in [*self.manifest.files, MANIFEST_FILE])

    # ---------------------------------------------------------------- reading
    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Package:
        """Open the package at ``path``.

        Args:
            path: The package directory.
            verify: Check every file against its recorded sha256 (default True).

        Raises:
            NotFoundError: ``path`` does not exist.
            PackageFormatError: no, malformed, too large or too deeply nested manifest, or
                a format version tuneserve never wrote (newer, or below 1); with ``verify``,
                also a symbolic link or a file the manifest does not list.
            ChecksumError: a file is missing or differs from its checksum.
        """
        root = Path(path).expanduser()
        if not root.exists():
            raise NotFoundError(f"package {str(path)!r} not found: no such directory")
        manifest_path = root / MANIFEST_FILE
        if not root.is_dir() or not manifest_path.is_file():
            raise PackageFormatError(
                f"{root} is not a tuneserve package: {MANIFEST_FILE} is missing. Hint: pass the "
                "directory that tuneserve wrote (it holds manifest.json and model.onnx)"
            )
        raw = _read_manifest(manifest_path)
        version = raw.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise PackageFormatError(f"{manifest_path} has no integer format_version")
        if version < 1:
            raise PackageFormatError(
                f"package {root} has format version {version}; tuneserve writes versions 1 to "
                f"{FORMAT_VERSION}. Hint: the manifest is damaged; restore the package from the "
                "registry or re-export it"
            )
        if version > FORMAT_VERSION:
            raise PackageFormatError(
                f"package {root} has format version {version}, newer than the newest this "
                f"tuneserve {__version__} reads ({FORMAT_VERSION}). Hint: upgrade tuneserve "
                "(pip install -U tuneserve)"
            )
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PackageFormatError(
                f"{manifest_path} is malformed at {where!r}: {first['msg']}. Hint: the package "
                "is damaged; restore it from the registry or re-export it"
            ) from exc
        package = cls(root, manifest)
        package._stored = raw
        if verify:
            package.verify()
        return package

    def verify(self) -> None:
        """Check the manifest against its id, and every file against the manifest.

        The package's folder must hold nothing but the manifest and the files it lists, and
        no symbolic link: a link would let a package carry a file of the host that loaded
        it (``assets/x -> /etc/passwd``) into the artifact store or an export. An ensemble
        lists its members' files, manifests included, so the same rule covers them.

        Raises:
            ChecksumError: the manifest was edited, or a file is missing or changed.
            PackageFormatError: the folder holds a symbolic link, a special file, or a file
                the manifest does not list.
        """
        stored = self._stored or self.manifest.model_dump(mode="json")
        if _package_id(stored) != self.manifest.package_id:
            raise ChecksumError(
                f"{MANIFEST_FILE} of package {self.path} was changed after the package was "
                f"written (its content no longer matches package_id {self.manifest.package_id!r})"
                ". Hint: restore the package from the registry or re-export it"
            )
        if self.manifest.graph.file not in self.manifest.files:
            raise ChecksumError(
                f"package {self.path} does not list its graph {self.manifest.graph.file!r} in "
                "files. Hint: re-export the package"
            )
        self._check_tree()
        for name, expected in self.manifest.files.items():
            try:
                file = self.path / _safe_relpath(name)
            except InvalidInputError as exc:
                raise PackageFormatError(
                    f"package {self.path} lists file {name!r} outside the package; refusing it"
                ) from exc
            if not file.is_file():
                raise ChecksumError(f"package {self.path} is incomplete: {name} is missing")
            actual = sha256_file(file)
            if actual != expected:
                raise ChecksumError(
                    f"checksum mismatch for {name} in package {self.path}: manifest says "
                    f"{expected[:23]}..., file has {actual[:23]}... The file was changed or "
                    "corrupted after the package was written. Hint: restore it from the "
                    "registry or re-export the package"
                )

    def _check_tree(self) -> None:
        """Refuse symbolic links, special files and unlisted files under the package."""
        # the signature (tuneserve.signing) is made after the package and signs its id
        listed = set(self.manifest.files) | {MANIFEST_FILE, SIGNATURE_FILE}
        hint = (
            "Hint: a package holds only the files its manifest lists; remove it, or re-export "
            "the package"
        )
        for folder, dirs, files in os.walk(self.path, followlinks=False):
            base = Path(folder)
            for entry in sorted([*dirs, *files]):
                path = base / entry
                name = path.relative_to(self.path).as_posix()
                mode = path.lstat().st_mode
                if stat.S_ISLNK(mode):
                    raise PackageFormatError(
                        f"package {self.path} holds a symbolic link {name!r} -> "
                        f"{os.readlink(path)!r}; packages may not link to files outside "
                        f"themselves. {hint}"
                    )
                if stat.S_ISDIR(mode):
                    continue
                if not stat.S_ISREG(mode):
                    raise PackageFormatError(
                        f"package {self.path} holds {name!r}, which is not a regular file. {hint}"
                    )
                if name not in listed:
                    raise PackageFormatError(
                        f"package {self.path} holds {name!r}, which its manifest does not "
                        f"list. {hint}"
                    )

    # ---------------------------------------------------------------- writing
    @classmethod
    def write(
        cls,
        path: str | Path,
        manifest: Manifest,
        files: Mapping[str, bytes | Path],
        *,
        overwrite: bool = False,
    ) -> Package:
        """Write a package atomically and return it, loaded and verified.

        Args:
            path: Target directory; it must not exist unless ``overwrite``.
            manifest: The manifest; ``files`` and ``package_id`` are filled in here.
            files: Relative path -> content (bytes, or a file to copy). Must include the
                graph file named in ``manifest.graph``.
            overwrite: Replace an existing package at ``path``. Only a directory holding a
                manifest.json (a package) is ever replaced.

        Raises:
            PackageError: the target exists (and not ``overwrite``) or is not a package.
        """
        target = Path(path).expanduser().resolve()
        if target.exists():
            if not overwrite:
                raise PackageError(
                    f"{target} already exists. Hint: choose another --out, or pass overwrite "
                    "(--force) to replace the package there"
                )
            if not (target / MANIFEST_FILE).is_file():
                raise PackageError(
                    f"refusing to replace {target}: it exists and is not a tuneserve package"
                )
        if manifest.graph.file not in files:
            raise PackageError(f"files must include the graph {manifest.graph.file!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            checksums: dict[str, str] = {}
            for name, content in sorted(files.items()):
                dest = tmp / _safe_relpath(name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    dest.write_bytes(content)
                else:
                    shutil.copyfile(content, dest)
                checksums[name] = sha256_file(dest)
            current = {"files": checksums, "format_version": FORMAT_VERSION}
            body = manifest.model_copy(update=current).model_dump(mode="json")
            body["package_id"] = _package_id(body)
            text = json.dumps(body, indent=2, sort_keys=False)
            (tmp / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
            _fsync_tree(tmp)
            if overwrite and target.exists():
                # Two renames: a crash between them leaves the old package at .<name>.old-*
                trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(target, trash)
                os.rename(tmp, target)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                try:
                    # rename never replaces a non-empty directory, so something created at
                    # the target meanwhile is kept and this write fails instead
                    os.rename(tmp, target)
                except OSError as exc:
                    raise PackageError(
                        f"{target} appeared while the package was being written; nothing was "
                        "replaced. Hint: choose another --out"
                    ) from exc
            _fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.load(target)


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush file contents so the rename never exposes empty files after a power cut."""
    for file in root.rglob("*"):
        if file.is_file():
            with file.open("rb") as fh:
                os.fsync(fh.fileno())
