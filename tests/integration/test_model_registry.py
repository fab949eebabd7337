"""The model registry on a real MLflow store (embedded SQLite): versions, lineage, aliases,
promote / rollback with an audit trail, resolve, export / import, concurrency."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tuneserve.exceptions import ChecksumError, DataError, NotFoundError, TuneserveError
from tuneserve.package import Package
from tuneserve.registry import CHAMPION, Registry, RegistryError, export_bundle, import_bundle
from tuneserve.training import train, update


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Three real packages: wine logreg, wine sgd, and an sgd update of it (a child)."""
    root = tmp_path_factory.mktemp("pkgs")
    logreg = train("wine", root / "logreg", backbone="logreg").package
    sgd = train("wine", root / "sgd", backbone="sgd").package
    child = update("wine", sgd.path, root / "sgd-v2", passes=2, seed=1).package
    return {"logreg": logreg.path, "sgd": sgd.path, "child": child.path}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Registry()


def test_register_list_show_and_lineage(registry, packages):
    first = registry.register(packages["sgd"], "wine", description="first sgd")
    assert first.created and first.version.version == "1"
    child = registry.register(packages["child"], "wine").version
    assert child.version == "2"
    assert child.tags["tuneserve.parent_version"] == "wine/1"
    assert child.tags["tuneserve.parent_package"] == first.version.package_id
    manifest = Package.load(packages["child"]).manifest
    assert child.tags["tuneserve.data_fingerprint"] == manifest.lineage.data_fingerprint
    assert len(child.tags["tuneserve.config_hash"]) == 16
    assert child.metrics["test_accuracy"] == pytest.approx(manifest.metrics["test_accuracy"])
    assert not any(k.startswith("epoch/") for k in child.metrics)
    again = registry.register(packages["sgd"], "wine")
    assert not again.created and again.version.version == "1"  # registered once
    listed = registry.models()
    assert listed == [
        {"name": "wine", "versions": 2, "latest": 2, "aliases": {}, "description": ""}
    ]
    assert registry.version("models:/wine/1").description == "first sgd"
    rows = {r["metric"]: r for r in registry.compare("wine", "1", "2")["metrics"]}
    assert rows["test_accuracy"]["delta"] == pytest.approx(
        rows["test_accuracy"]["b"] - rows["test_accuracy"]["a"]
    )


def test_promote_rollback_and_the_audit_trail(registry, packages, monkeypatch):
    for key in ("logreg", "sgd", "child"):
        registry.register(packages[key], "wine")
    monkeypatch.setenv("TUNESERVE_USER", "alice")
    registry.promote("wine", 1)
    registry.promote("wine", 2, note="better on new data")
    registry.promote("wine", 3)
    assert registry.version("wine").version == "3"  # N alone is the champion
    assert registry.rollback("wine").version == "2"
    assert registry.rollback("wine").version == "1"
    with pytest.raises(RegistryError, match="first champion on record"):
        registry.rollback("wine")
    registry.set_alias("wine", "challenger", 3)
    assert registry.version("wine@challenger").version == "3"
    trail = [(e.action, e.alias, e.from_version, e.to_version) for e in registry.history("wine")]
    assert trail == [
        ("promote", CHAMPION, None, "1"),
        ("promote", CHAMPION, "1", "2"),
        ("promote", CHAMPION, "2", "3"),
        ("rollback", CHAMPION, "3", "2"),
        ("rollback", CHAMPION, "2", "1"),
        ("alias", "challenger", None, "3"),
    ]
    entry = registry.history("wine")[1]
    assert entry.who.startswith("alice@") and entry.note == "better on new data"
    assert entry.when.endswith("Z")
    with pytest.raises(TuneserveError, match="moves with promote"):
        registry.set_alias("wine", CHAMPION, 2)
    with pytest.raises(TuneserveError, match="already the champion"):
        registry.promote("wine", 1)
    assert len(registry.history("wine")) == 6  # nothing recorded for the refused promote


def test_unknown_names_list_what_exists(registry, packages):
    registry.register(packages["sgd"], "wine")
    with pytest.raises(NotFoundError, match=r"no registered model named 'vine'; .*: wine"):
        registry.version("vine")
    with pytest.raises(NotFoundError, match="has no version 7; its versions: 1"):
        registry.version("wine/7")
    with pytest.raises(NotFoundError, match=r"no alias 'champion'; its aliases: none.*promote"):
        registry.resolve("models:/wine@champion")
    with pytest.raises(TuneserveError, match="bad model reference"):
        registry.version("wine/1/2")
    with pytest.raises(TuneserveError, match="model name 'a/b' is not allowed"):
        registry.register(packages["sgd"], "a/b")


def test_corrupted_package_is_refused(registry, packages, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(packages["sgd"], bad)
    graph = bad / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumError):
        registry.register(bad, "wine")
    assert registry.models() == []


def test_resolve_downloads_once_verifies_and_heals_its_cache(registry, packages, monkeypatch):
    registry.register(packages["sgd"], "wine")
    registry.promote("wine", 1)
    path = registry.resolve("models:/wine@champion")
    assert Package.load(path).id == Package.load(packages["sgd"]).id
    assert path.is_relative_to(registry.cache)

    def no_download(*args):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(Registry, "_download", no_download)
    assert registry.resolve("wine/1") == path  # the cached copy
    monkeypatch.undo()
    (path / "model.onnx").write_bytes(b"damaged")
    assert Package.load(registry.resolve("wine/1")).id  # fetched again, verified


def test_promote_refuses_a_package_that_does_not_load(registry, packages):
    registry.register(packages["logreg"], "wine")
    registry.register(packages["sgd"], "wine")
    registry.promote("wine", 1)
    stored = Path(registry.version("wine/2").source.removeprefix("file://"))
    (stored / "model.onnx").write_bytes(b"not onnx")  # the artifact store was damaged
    with pytest.raises(RegistryError, match=r"cannot be promoted.*champion stays 1"):
        registry.promote("wine", 2)
    assert registry.version("wine@champion").version == "1"
    assert [e.to_version for e in registry.history("wine")] == ["1"]


def test_export_and_import_keep_versions_metrics_lineage_and_aliases(
    registry, packages, tmp_path, monkeypatch
):
    for key in ("logreg", "sgd", "child"):
        registry.register(packages[key], "wine")
    registry.promote("wine", 2)
    registry.promote("wine", 3)
    registry.set_alias("wine", "challenger", 1)
    bundle = export_bundle(registry, "wine", tmp_path / "wine.tar")
    before = {v.version: v for v in registry.versions("wine")}

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "other-home"))
    other = Registry()
    assert import_bundle(other, bundle) == ["wine/1", "wine/2", "wine/3"]
    for v in other.versions("wine"):
        old = before[v.version]
        assert v.package_id == old.package_id
        assert v.metrics == pytest.approx(old.metrics)
        assert v.tags["tuneserve.imported_from"] == f"wine/{v.version}"
        assert v.tags["tuneserve.data_fingerprint"] == old.tags["tuneserve.data_fingerprint"]
    assert other.version("wine/3").tags["tuneserve.parent_version"] == "wine/2"
    assert other.version("wine@champion").version == "3"
    assert other.version("wine@challenger").version == "1"
    assert other.rollback("wine").version == "2"  # the audit trail came along
    with pytest.raises(TuneserveError, match=r"already exists.*--name"):
        import_bundle(other, bundle)
    single = export_bundle(registry, "wine/3", tmp_path / "v3.tar")
    assert import_bundle(other, single, "w3") == ["w3/1"]
    alone = other.version("w3/1")
    # its parent is not in the bundle, but the store holds it (imported above as wine/2)
    assert alone.tags["tuneserve.parent_version"] == "wine/2"
    assert alone.tags["tuneserve.imported_from"] == "wine/3"
    assert other.version("w3@champion").version == "1"


def test_import_refuses_paths_outside_the_bundle(registry, tmp_path):
    import io
    import tarfile

    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        data = b"{}"
        info = tarfile.TarInfo("../outside.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="not a plain file inside the bundle"):
        import_bundle(registry, evil)
    assert not (tmp_path / "outside.json").exists()
    assert registry.models() == []


def test_tracking_failure_keeps_the_package(tmp_path, monkeypatch, caplog):
    (tmp_path / "blocker").write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/blocker/mlflow.db")
    result = train("iris", tmp_path / "p", backbone="logreg", tracked=True)
    assert result.run_id is None and Package.load(result.package.path).id
    assert "tracking failed" in caplog.text and "registry register" in caplog.text


def test_report_of_a_regression_update(tmp_path):
    from tuneserve.registry import training_report

    first = train("diabetes", tmp_path / "v1", backbone="sgd")
    second = update("diabetes", first.package.path, tmp_path / "v2", passes=2)
    page = training_report(second.package)
    assert "<img" in page and "test_mse" in page


REGISTER = """
import sys
from tuneserve.registry import Registry
registry = Registry()
print(" ".join(registry.register(p, "race").version.version for p in sys.argv[1:]))
"""


def test_concurrent_registrations_get_distinct_versions(registry, tmp_path, monkeypatch):
    paths = [
        train("iris", tmp_path / f"p{i}", backbone="logreg", seed=i).package.path for i in range(6)
    ]
    env = {**__import__("os").environ}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, *map(str, part)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for part in (paths[:3], paths[3:])
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    numbers = sorted(int(v) for out, _ in outputs for v in out.split())
    assert numbers == [1, 2, 3, 4, 5, 6]
    ids = {registry.version(f"race/{n}").package_id for n in numbers}
    assert ids == {Package.load(p).id for p in paths}
    for n in numbers:
        assert registry.resolve(f"race/{n}").is_dir()


def test_tracked_training_run_is_reused_by_register(registry, tmp_path):
    from mlflow import MlflowClient

    result = train("wine", tmp_path / "mlp", backbone="mlp", tracked=True)
    assert result.run_id
    store = registry.store
    run = MlflowClient(store.uri).get_run(result.run_id)
    assert run.data.tags["tuneserve.package_id"] == result.package.id
    assert run.data.params["backbone"] == "mlp"
    assert "test_accuracy" in run.data.metrics
    curve = MlflowClient(store.uri).get_metric_history(result.run_id, "epoch/val_loss")
    assert len(curve) == len(result.trained.history) and curve[0].step == 1
    artifacts = {a.path for a in MlflowClient(store.uri).list_artifacts(result.run_id)}
    assert {"package", "report.html"} <= artifacts
    registered = registry.register(result.package.path, "wine-mlp")
    assert registered.run_id == result.run_id  # no second copy of the package


def test_store_follows_mlflow_tracking_uri(tmp_path, monkeypatch):
    from tuneserve.registry import current_store

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert current_store().uri == f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert current_store().uri == "http://127.0.0.1:5000"
    assert current_store().artifact_root is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u@h/db")
    assert current_store().artifact_root == (tmp_path / "home/mlflow/artifacts").as_uri()
