"""Model packages: atomic write, load, checksums, format version, failure cleanup."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tuneserve.exceptions import (
    ChecksumError,
    InvalidInputError,
    NotFoundError,
    PackageError,
    PackageFormatError,
)
from tuneserve.lineage import HeldOut
from tuneserve.package import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
    Graph,
    Lineage,
    Manifest,
    Package,
    printable,
    sha256_file,
)

LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    """A real 4-feature -> 3-class graph: softmax(x @ W + b)."""
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    bias = np.array([0.1, -0.2, 0.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [4, 3], weights.ravel().tolist()),
            helper.make_tensor("b", TensorProto.FLOAT, [3], bias.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _manifest(**overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "iris-logreg",
        "task": "classification",
        "modality": "table",
        "label_names": LABELS,
        "input_schema": {"type": "table", "columns": [{"name": "a", "type": "number"}]},
        "preprocessing": {"kind": "table", "columns": [{"name": "a", "kind": "numeric"}]},
        "graph": Graph(
            inputs=["input"],
            output="probabilities",
            output_kind="probabilities",
            opset=17,
            parity_max_abs_diff=1e-7,
        ),
        "metrics": {"accuracy": 0.96, "macro_f1": 0.95},
        "lineage": Lineage(
            data_fingerprint="sha256:" + "ab" * 32,
            parent="pkg-0123456789abcdef",
            config={"epochs": 3, "lr": 0.01},
        ),
    }
    fields.update(overrides)
    return Manifest(**fields)


def _files(onnx_bytes: bytes) -> dict[str, bytes | Path]:
    return {"model.onnx": onnx_bytes, "assets/vocab.txt": b"alpha\nbeta\n"}


@pytest.fixture
def package(tmp_path: Path, onnx_bytes: bytes) -> Package:
    return Package.write(tmp_path / "pkg", _manifest(), _files(onnx_bytes))


def _edit_manifest(root: Path, **changes: Any) -> None:
    path = root / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


# ----------------------------------------------------------------- round trip


def test_write_then_load_preserves_manifest(package: Package, tmp_path: Path) -> None:
    loaded = Package.load(tmp_path / "pkg")
    m = loaded.manifest
    assert loaded.path == (tmp_path / "pkg").resolve()
    assert m.format_version == FORMAT_VERSION
    assert m.name == "iris-logreg"
    assert m.task == "classification"
    assert m.modality == "table"
    assert m.label_names == LABELS
    assert m.input_schema == {"type": "table", "columns": [{"name": "a", "type": "number"}]}
    assert m.preprocessing == {"kind": "table", "columns": [{"name": "a", "kind": "numeric"}]}
    assert m.graph.inputs == ["input"]
    assert m.graph.output == "probabilities"
    assert m.graph.output_kind == "probabilities"
    assert m.graph.opset == 17
    assert m.graph.parity_max_abs_diff == pytest.approx(1e-7)
    assert m.metrics == {"accuracy": 0.96, "macro_f1": 0.95}
    assert m.lineage.data_fingerprint == "sha256:" + "ab" * 32
    assert m.lineage.parent == "pkg-0123456789abcdef"
    assert m.lineage.config == {"epochs": 3, "lr": 0.01}
    assert m.model_dump() == package.manifest.model_dump()
    assert loaded.id == package.id
    assert loaded.id.startswith("pkg-") and len(loaded.id) == len("pkg-") + 16


def test_files_are_written_with_checksums(package: Package, onnx_bytes: bytes) -> None:
    import hashlib

    assert package.graph_path.read_bytes() == onnx_bytes
    assert (package.assets_path / "vocab.txt").read_bytes() == b"alpha\nbeta\n"
    assert set(package.manifest.files) == {"model.onnx", "assets/vocab.txt"}
    assert (
        package.manifest.files["model.onnx"] == "sha256:" + hashlib.sha256(onnx_bytes).hexdigest()
    )
    on_disk = json.loads((package.path / MANIFEST_FILE).read_text())
    assert on_disk["files"] == package.manifest.files
    assert on_disk["package_id"] == package.id
    assert package.size_bytes() == sum(
        p.stat().st_size for p in package.path.rglob("*") if p.is_file()
    )


def test_written_graph_runs(package: Package) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(package.graph_path), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"input": np.ones((2, 4), dtype=np.float32)})[0]
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_file_given_as_path_is_copied(tmp_path: Path, onnx_bytes: bytes) -> None:
    src = tmp_path / "weights.onnx"
    src.write_bytes(onnx_bytes)
    pkg = Package.write(tmp_path / "p", _manifest(), {"model.onnx": src})
    assert pkg.graph_path.read_bytes() == onnx_bytes


def test_package_id_is_stable_for_same_content(tmp_path: Path, onnx_bytes: bytes) -> None:
    a = Package.write(tmp_path / "a", _manifest(), _files(onnx_bytes))
    b = Package.write(tmp_path / "b", _manifest(), _files(onnx_bytes))  # new created_at
    assert a.id == b.id
    c = Package.write(tmp_path / "c", _manifest(metrics={"accuracy": 0.5}), _files(onnx_bytes))
    d = Package.write(
        tmp_path / "d", _manifest(), {**_files(onnx_bytes), "assets/vocab.txt": b"alpha\n"}
    )
    assert len({a.id, c.id, d.id}) == 3


# ----------------------------------------------------------------- overwrite rules


def test_write_refuses_existing_path(package: Package, onnx_bytes: bytes) -> None:
    before = (package.path / MANIFEST_FILE).read_bytes()
    with pytest.raises(PackageError, match=r"pkg already exists\. Hint: .*overwrite"):
        Package.write(package.path, _manifest(name="other"), _files(onnx_bytes))
    assert (package.path / MANIFEST_FILE).read_bytes() == before


def test_write_overwrites_a_package_when_asked(package: Package, onnx_bytes: bytes) -> None:
    new = Package.write(
        package.path, _manifest(name="second"), {"model.onnx": onnx_bytes}, overwrite=True
    )
    assert new.manifest.name == "second"
    assert Package.load(package.path).manifest.name == "second"
    assert not (package.path / "assets").exists()  # old files are gone
    siblings = sorted(p.name for p in package.path.parent.iterdir())
    assert siblings == ["pkg"]  # no .old / .tmp leftovers


def test_write_refuses_to_overwrite_a_non_package_dir(tmp_path: Path, onnx_bytes: bytes) -> None:
    target = tmp_path / "important"
    target.mkdir()
    (target / "thesis.txt").write_text("do not delete")
    with pytest.raises(PackageError, match=r"refusing to replace .*important: .*not a tuneserve"):
        Package.write(target, _manifest(), _files(onnx_bytes), overwrite=True)
    assert (target / "thesis.txt").read_text() == "do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["important"]


def test_write_needs_the_graph_file(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"files must include the graph 'model.onnx'"):
        Package.write(tmp_path / "p", _manifest(), {"assets/x": b"1"})
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "manifest.json"])
def test_write_refuses_unsafe_file_names(tmp_path: Path, onnx_bytes: bytes, name: str) -> None:
    target = tmp_path / "out" / "p"
    with pytest.raises(InvalidInputError, match=r"package file name .* is not allowed"):
        Package.write(target, _manifest(), {"model.onnx": onnx_bytes, name: b"x"})
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    assert not (tmp_path / "out" / "escape.txt").exists()


# ----------------------------------------------------------------- failed writes


def test_failed_write_leaves_nothing_behind(tmp_path: Path, onnx_bytes: bytes) -> None:
    out = tmp_path / "registry"
    out.mkdir()
    target = out / "pkg"
    files: dict[str, bytes | Path] = {
        "model.onnx": onnx_bytes,  # sorted first: written before the failure
        "z/weights.bin": tmp_path / "does-not-exist.bin",
    }
    with pytest.raises(FileNotFoundError, match=r"does-not-exist\.bin"):
        Package.write(target, _manifest(), files)
    assert not target.exists()
    assert list(out.iterdir()) == []  # no .pkg.tmp-* directory either


def test_failed_overwrite_keeps_the_old_package(
    package: Package, onnx_bytes: bytes, tmp_path: Path
) -> None:
    old_id = package.id
    files: dict[str, bytes | Path] = {"model.onnx": onnx_bytes, "z": tmp_path / "missing"}
    with pytest.raises(FileNotFoundError):
        Package.write(package.path, _manifest(name="new"), files, overwrite=True)
    reloaded = Package.load(package.path)
    assert reloaded.id == old_id
    assert reloaded.manifest.name == "iris-logreg"
    assert sorted(p.name for p in package.path.parent.iterdir()) == ["pkg"]


# ----------------------------------------------------------------- verification


def test_tampered_file_is_a_checksum_error(package: Package) -> None:
    vocab = package.assets_path / "vocab.txt"
    vocab.write_bytes(b"alpha\nBETA\n")  # same length, different content
    with pytest.raises(
        ChecksumError,
        match=r"checksum mismatch for assets/vocab\.txt in package .*changed or corrupted",
    ):
        Package.load(package.path)
    # verify=False opens it anyway (for inspection)
    assert Package.load(package.path, verify=False).id == package.id


def test_tampered_graph_is_a_checksum_error(package: Package) -> None:
    data = bytearray(package.graph_path.read_bytes())
    data[-1] ^= 0xFF
    package.graph_path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"checksum mismatch for model\.onnx"):
        Package.load(package.path)


def test_deleted_file_is_a_checksum_error(package: Package) -> None:
    (package.assets_path / "vocab.txt").unlink()
    with pytest.raises(ChecksumError, match=r"is incomplete: assets/vocab\.txt is missing"):
        Package.load(package.path)


def _reseal(root: Path, raw: dict[str, Any]) -> str:
    """Write ``raw`` with a matching package_id, as a (newer or buggy) writer would."""
    from tuneserve.package import _package_id

    raw["package_id"] = _package_id(raw)
    (root / MANIFEST_FILE).write_text(json.dumps(raw))
    return str(raw["package_id"])


def test_graph_not_listed_is_a_checksum_error(package: Package) -> None:
    raw = json.loads((package.path / MANIFEST_FILE).read_text())
    del raw["files"]["model.onnx"]
    _reseal(package.path, raw)
    with pytest.raises(ChecksumError, match=r"does not list its graph"):
        Package.load(package.path)


def test_newer_format_version_asks_for_upgrade(package: Package) -> None:
    _edit_manifest(package.path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(
        PackageFormatError,
        match=rf"format version {FORMAT_VERSION + 1}, newer than .*\({FORMAT_VERSION}\)\. "
        r"Hint: upgrade tuneserve",
    ):
        Package.load(package.path)


@pytest.mark.parametrize("version", [None, "1", 1.0])
def test_non_integer_format_version(package: Package, version: Any) -> None:
    _edit_manifest(package.path, format_version=version)
    with pytest.raises(PackageFormatError, match=r"has no integer format_version"):
        Package.load(package.path)


def test_unknown_manifest_keys_from_a_newer_writer_are_ignored(package: Package) -> None:
    raw = json.loads((package.path / MANIFEST_FILE).read_text())
    raw["future_field"] = {"x": 1}
    new_id = _reseal(package.path, raw)
    assert new_id != package.id
    loaded = Package.load(package.path)
    assert loaded.id == new_id
    assert not hasattr(loaded.manifest, "future_field")


@pytest.mark.parametrize(
    "change",
    [
        {"label_names": ["b", "a", "c"]},
        {"metrics": {"accuracy": 1.0}},
        {"future_field": 1},
    ],
    ids=["swapped-labels", "inflated-metric", "added-key"],
)
def test_edited_manifest_is_a_checksum_error(package: Package, change: dict[str, Any]) -> None:
    _edit_manifest(package.path, **change)
    with pytest.raises(ChecksumError, match=r"manifest\.json of package .* was changed after"):
        Package.load(package.path)


@pytest.mark.parametrize(
    "text", ["{not json", "", '{"format_version": 1,'], ids=["garbage", "empty", "truncated"]
)
def test_malformed_json_manifest(package: Package, text: str) -> None:
    (package.path / MANIFEST_FILE).write_text(text)
    with pytest.raises(PackageFormatError, match=r"manifest\.json is not valid JSON"):
        Package.load(package.path)


def test_manifest_that_is_not_an_object(package: Package) -> None:
    (package.path / MANIFEST_FILE).write_text("[1, 2, 3]")
    with pytest.raises(PackageFormatError, match=r"must hold a JSON object"):
        Package.load(package.path)


def test_manifest_with_invalid_field(package: Package) -> None:
    _edit_manifest(package.path, task="clustering")
    with pytest.raises(PackageFormatError, match=r"manifest\.json is malformed at 'task'"):
        Package.load(package.path)


def test_manifest_missing_required_field(package: Package) -> None:
    raw = json.loads((package.path / MANIFEST_FILE).read_text())
    del raw["graph"]
    (package.path / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(PackageFormatError, match=r"malformed at 'graph'"):
        Package.load(package.path)


def test_directory_without_manifest_is_not_a_package(tmp_path: Path, onnx_bytes: bytes) -> None:
    (tmp_path / "model.onnx").write_bytes(onnx_bytes)
    with pytest.raises(
        PackageFormatError, match=r"is not a tuneserve package: manifest\.json is missing"
    ):
        Package.load(tmp_path)


def test_a_file_is_not_a_package(tmp_path: Path) -> None:
    file = tmp_path / "model.onnx"
    file.write_bytes(b"x")
    with pytest.raises(PackageFormatError, match=r"not a tuneserve package"):
        Package.load(file)


def test_missing_package_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"package '.*nope' not found"):
        Package.load(tmp_path / "nope")


def test_manifest_file_entry_escaping_the_package(package: Package) -> None:
    raw = json.loads((package.path / MANIFEST_FILE).read_text())
    raw["files"]["../outside.txt"] = "sha256:" + "0" * 64
    (package.path / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(PackageError):
        Package.load(package.path)


class _ClobberingFiles(dict):  # type: ignore[type-arg]
    """A files mapping that, while being written, lets another writer create the target."""

    def __init__(self, target: Path, content: dict[str, bytes | Path]) -> None:
        super().__init__(content)
        self.target = target

    def items(self):  # type: ignore[no-untyped-def]
        self.target.mkdir()
        (self.target / "thesis.txt").write_text("someone else's work")
        return super().items()


def test_write_never_replaces_a_directory_that_appears_meanwhile(
    tmp_path: Path, onnx_bytes: bytes
) -> None:
    target = tmp_path / "pkg"
    with pytest.raises(PackageError, match=r"appeared while the package was being written"):
        Package.write(target, _manifest(), _ClobberingFiles(target, _files(onnx_bytes)))
    assert (target / "thesis.txt").read_text() == "someone else's work"
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no temporary directory left


# ----------------------------------------------------------------- hostile packages
def _host_file(tmp_path: Path) -> Path:
    secret = tmp_path / "host" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    return secret


def test_listed_symlink_to_a_host_file_is_refused(package: Package, tmp_path: Path) -> None:
    # the manifest is resealed with the host file's checksum, so only the link gives it away
    secret = _host_file(tmp_path)
    (package.assets_path / "vocab.txt").unlink()
    (package.assets_path / "vocab.txt").symlink_to(secret)
    raw = json.loads((package.path / MANIFEST_FILE).read_text())
    raw["files"]["assets/vocab.txt"] = sha256_file(secret)
    _reseal(package.path, raw)
    with pytest.raises(
        PackageFormatError, match=r"symbolic link 'assets/vocab\.txt' -> '.*passwd'"
    ):
        Package.load(package.path)


def test_unlisted_symlink_is_refused(package: Package, tmp_path: Path) -> None:
    (package.assets_path / "passwd").symlink_to(_host_file(tmp_path))
    with pytest.raises(PackageFormatError, match=r"symbolic link 'assets/passwd'"):
        Package.load(package.path)


def test_symlinked_folder_is_refused(package: Package, tmp_path: Path) -> None:
    # assets -> a host folder holding a copy of every listed asset still passes checksums
    host = _host_file(tmp_path).parent
    (host / "vocab.txt").write_bytes((package.assets_path / "vocab.txt").read_bytes())
    shutil.rmtree(package.assets_path)
    package.assets_path.symlink_to(host, target_is_directory=True)
    with pytest.raises(PackageFormatError, match=r"symbolic link 'assets'"):
        Package.load(package.path)


@pytest.mark.parametrize("name", ["assets/extra.bin", ".DS_Store", "extras/model.pt"])
def test_unlisted_file_is_refused_naming_it(package: Package, name: str) -> None:
    (package.path / name).parent.mkdir(parents=True, exist_ok=True)
    (package.path / name).write_bytes(b"not in the manifest")
    with pytest.raises(
        PackageFormatError,
        match=rf"holds '{re.escape(name)}', which its manifest does not list\. Hint: .*remove it",
    ):
        Package.load(package.path)


def test_special_file_is_refused(package: Package) -> None:
    os.mkfifo(package.assets_path / "pipe")
    with pytest.raises(PackageFormatError, match=r"'assets/pipe', which is not a regular file"):
        Package.load(package.path)


def test_empty_folders_are_tolerated(package: Package) -> None:
    (package.path / "extras").mkdir()
    assert Package.load(package.path).id == package.id


@pytest.mark.parametrize("version", [0, -1, True])
def test_format_version_below_one_is_refused(package: Package, version: Any) -> None:
    raw = json.loads((package.path / MANIFEST_FILE).read_text())
    raw["format_version"] = version
    _reseal(package.path, raw)  # a matching id: only the version is wrong
    with pytest.raises(PackageFormatError, match=r"format version|no integer format_version"):
        Package.load(package.path)


def test_deeply_nested_manifest_is_a_format_error(package: Package) -> None:
    raw = (package.path / MANIFEST_FILE).read_text()
    deep = "[" * 100_000 + "]" * 100_000
    (package.path / MANIFEST_FILE).write_text(raw.rstrip()[:-1] + f', "x": {deep}}}')
    with pytest.raises(PackageFormatError, match=r"nests JSON deeper than 64 levels"):
        Package.load(package.path)


def test_moderately_nested_manifest_is_a_format_error(package: Package) -> None:
    # deep enough to be absurd, too shallow for json's own recursion limit
    _edit_manifest(package.path, metrics=json.loads("[" * 200 + "]" * 200))
    with pytest.raises(PackageFormatError, match=r"nests JSON deeper than 64 levels"):
        Package.load(package.path)


def test_huge_manifest_is_refused_before_parsing(
    package: Package, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tuneserve.package.MAX_MANIFEST_BYTES", 1024)
    _edit_manifest(package.path, padding="x" * 2048)
    with pytest.raises(PackageFormatError, match=r"is larger than .* the most tuneserve reads"):
        Package.load(package.path)


def test_manifest_cap_fits_a_million_held_out_rows(tmp_path: Path, onnx_bytes: bytes) -> None:
    # the largest part of a real manifest: 1M held-out rows (a 5M-row data set's test split)
    rows = list(range(9_000_000, 10_000_000))
    held_out = HeldOut(data_fingerprint="sha256:" + "ab" * 32, rows=rows)
    lineage = Lineage(data_fingerprint="sha256:" + "ab" * 32, held_out=held_out)
    pkg = Package.write(tmp_path / "big", _manifest(lineage=lineage), _files(onnx_bytes))
    size = (pkg.path / MANIFEST_FILE).stat().st_size
    assert size < MAX_MANIFEST_BYTES // 3
    loaded = Package.load(pkg.path).manifest.lineage.held_out
    assert loaded is not None and loaded.rows == rows


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("cat", "cat"),
        ("chat noir", "chat noir"),
        ("héllo 猫", "héllo 猫"),
        ("a\nb", "a\\nb"),
        ("\x1b[2Jred", "\\x1b[2Jred"),
        ("evil\u202etxt", "evil\\u202etxt"),
        ("tab\tx\r", "tab\\tx\\r"),
    ],
)
def test_printable_escapes_control_characters(label: str, shown: str) -> None:
    assert printable(label) == shown
