"""The model registry on real MLflow stores: versions, lineage, aliases, promote / rollback
with an audit trail, resolve, export / import, concurrency.

One suite, every backend (as Optuna's ``testing/pytest_storages.py`` runs one storage suite
on each storage): each registry test runs once on the embedded SQLite store and once on the
real PostgreSQL server on this machine, each time on a fresh, empty store. A PostgreSQL store
is a new database (created and dropped here, so other data is never touched) with its
artifacts in the local folder, as for a team that points ``MLFLOW_TRACKING_URI`` at its
database. If PostgreSQL is down the PostgreSQL runs fail and say so: they never skip.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import tuneserve
from tuneserve.exceptions import (
    ChecksumError,
    DataError,
    InvalidInputError,
    NotFoundError,
    TuneserveError,
)
from tuneserve.package import Package
from tuneserve.registry import (
    CHAMPION,
    Registry,
    RegistryError,
    Store,
    current_store,
    export_bundle,
    import_bundle,
)
from tuneserve.training import train, update

#: The MLflow backends every registry test runs on.
STORES = ["sqlite", "postgresql"]
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, uniquely named database on the local PostgreSQL server, dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(dbname="postgres", connect_timeout=5, autocommit=True, **PG)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} as {PG['user']} ({exc}). "
            "The registry suite runs on PostgreSQL too: start the server (trust auth) and rerun"
        )
    name = f"tuneserve_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
        finally:
            # FORCE: MLflow's connection pools in this process still hold connections to it
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def new_store(monkeypatch) -> Iterator[Callable[[str, Path], Store]]:
    """``new_store(kind, home)`` points tuneserve at a fresh, empty store of that kind with
    ``home`` as TUNESERVE_HOME, and returns it; a second call switches to a second store."""
    with ExitStack() as cleanup:

        def use(kind: str, home: Path) -> Store:
            monkeypatch.setenv("TUNESERVE_HOME", str(home))
            if kind == "sqlite":  # the embedded store under home
                monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
            elif kind == "postgresql":
                uri = cleanup.enter_context(fresh_postgres_database())
                monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
            else:
                raise ValueError(f"unknown store kind {kind!r}; known: {STORES}")
            store = current_store()
            assert store.embedded == (kind == "sqlite")
            assert store.artifact_root == (home / "mlflow" / "artifacts").resolve().as_uri()
            return store

        yield use


@pytest.fixture(params=STORES)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def store(store_kind, new_store, tmp_path) -> Store:
    """A fresh store of each backend in turn, in force for the whole test."""
    return new_store(store_kind, tmp_path / "home")


@pytest.fixture
def registry(store) -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Three real packages: wine logreg, wine sgd, and an sgd update of it (a child)."""
    root = tmp_path_factory.mktemp("pkgs")
    logreg = train("wine", root / "logreg", backbone="logreg").package
    sgd = train("wine", root / "sgd", backbone="sgd").package
    child = update("wine", sgd.path, root / "sgd-v2", passes=2, seed=1).package
    return {"logreg": logreg.path, "sgd": sgd.path, "child": child.path}


@pytest.fixture(scope="module")
def iris_packages(tmp_path_factory) -> list[Path]:
    """Six distinct iris packages (one per seed) for the registration race."""
    root = tmp_path_factory.mktemp("iris")
    return [train("iris", root / f"p{i}", backbone="logreg", seed=i).package.path for i in range(6)]


def test_register_list_show_and_lineage(registry, packages):
    first = registry.register(packages["sgd"], "wine", description="first sgd")
    assert first.created and first.version.version == "1"
    # the package went to this store's artifact folder, whatever the backend
    assert first.version.source.startswith(registry.store.artifact_root + "/")
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
    registry, packages, new_store, store_kind, tmp_path
):
    for key in ("logreg", "sgd", "child"):
        registry.register(packages[key], "wine")
    registry.promote("wine", 2)
    registry.promote("wine", 3)
    registry.set_alias("wine", "challenger", 1)
    bundle = export_bundle(registry, "wine", tmp_path / "wine.tar")
    before = {v.version: v for v in registry.versions("wine")}

    new_store(store_kind, tmp_path / "other-home")
    other = Registry()
    assert other.store != registry.store
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


@pytest.mark.parametrize(("source", "target"), [("postgresql", "sqlite"), ("sqlite", "postgresql")])
def test_a_bundle_moves_a_model_between_backends(source, target, new_store, packages, tmp_path):
    """A team's PostgreSQL store to a laptop's embedded one, and back."""
    new_store(source, tmp_path / "source")
    exporter = Registry()
    exporter.register(packages["sgd"], "wine")
    exporter.register(packages["child"], "wine")
    exporter.promote("wine", 1)
    bundle = export_bundle(exporter, "wine", tmp_path / "wine.tar")

    new_store(target, tmp_path / "target")
    importer = Registry()
    assert import_bundle(importer, bundle) == ["wine/1", "wine/2"]
    assert importer.version("wine@champion").version == "1"
    assert importer.version("wine/2").tags["tuneserve.parent_version"] == "wine/1"
    assert Package.load(importer.resolve("wine/2")).id == Package.load(packages["child"]).id


def test_import_refuses_paths_outside_the_bundle(registry, tmp_path):
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


REGISTER = """
import sys
from tuneserve.registry import Registry
registry = Registry()
print(" ".join(registry.register(p, "race").version.version for p in sys.argv[1:]))
"""


def test_concurrent_registrations_get_distinct_versions(registry, iris_packages):
    # the processes inherit the environment, so they open the same store as this test
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, *map(str, part)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for part in (iris_packages[:3], iris_packages[3:])
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    numbers = sorted(int(v) for out, _ in outputs for v in out.split())
    assert numbers == [1, 2, 3, 4, 5, 6]
    ids = {registry.version(f"race/{n}").package_id for n in numbers}
    assert ids == {Package.load(p).id for p in iris_packages}
    for n in numbers:
        assert registry.resolve(f"race/{n}").is_dir()


def test_tracked_training_run_is_reused_by_register(registry, tmp_path):
    from mlflow import MlflowClient

    result = tuneserve.train("wine", tmp_path / "mlp", backbone="mlp", track=True)
    assert result.run_id
    mlflow = MlflowClient(registry.store.uri)
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["tuneserve.package_id"] == result.package.id
    assert run.data.params["backbone"] == "mlp"
    assert "test_accuracy" in run.data.metrics
    curve = mlflow.get_metric_history(result.run_id, "epoch/val_loss")
    assert len(curve) == len(result.history) and curve[0].step == 1
    artifacts = {a.path for a in mlflow.list_artifacts(result.run_id)}
    assert {"package", "report.html"} <= artifacts
    registered = registry.register(result.package.path, "wine-mlp")
    assert registered.run_id == result.run_id  # no second copy of the package


# ---- not about a backend: run once ---------------------------------------------------------


def test_a_postgresql_server_that_is_down_fails_loudly(monkeypatch):
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        monkeypatch.setitem(PG, "port", unused.getsockname()[1])
        refused = pytest.raises(
            pytest.fail.Exception, match=r"(?s)PostgreSQL is not reachable.*start the server"
        )
        with refused, fresh_postgres_database():
            raise AssertionError("a database on a server that is down")


def test_tracking_failure_keeps_the_package(tmp_path, monkeypatch, caplog):
    # an SQLite store that cannot be opened fails at once (MLflow retries a database server
    # it cannot reach for over a minute, so the same failure is not staged on PostgreSQL)
    (tmp_path / "blocker").write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/blocker/mlflow.db")
    result = tuneserve.train("iris", tmp_path / "p", backbone="logreg", track=True)
    assert result.run_id is None and Package.load(result.package.path).id
    assert "tracking failed" in caplog.text and "registry register" in caplog.text


def test_report_of_a_regression_update(tmp_path):
    from tuneserve.registry import training_report

    first = train("diabetes", tmp_path / "v1", backbone="sgd")
    second = update("diabetes", first.package.path, tmp_path / "v2", passes=2)
    page = training_report(second.package)
    assert "<img" in page and "test_mse" in page


def test_store_follows_mlflow_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert current_store().uri == f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert current_store().uri == "http://127.0.0.1:5000"
    assert current_store().artifact_root is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u@h/db")
    assert current_store().artifact_root == (tmp_path / "home/mlflow/artifacts").as_uri()


# ---- the audit trail under concurrency, and writes that die midway ---------------------------

PROMOTE = """
import sys, time
from pathlib import Path
from tuneserve.registry import Registry
registry = Registry()
go = Path(sys.argv[1])
while not go.exists():  # start together, after the slow imports
    time.sleep(0.01)
registry.promote("race", sys.argv[2], note=f"by {sys.argv[2]}")
"""


def _python(script: str, *args: object) -> subprocess.Popen[str]:
    # the processes inherit the environment, so they open the same store as the test
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def test_concurrent_promotes_leave_a_chain_that_rollback_follows(registry, iris_packages, tmp_path):
    for path in iris_packages[:4]:
        registry.register(path, "race")
    go = tmp_path / "go"
    procs = [_python(PROMOTE, go, v) for v in (1, 2, 3, 4)]
    go.touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    trail = registry.history("race")
    assert sorted(e.to_version for e in trail) == ["1", "2", "3", "4"]
    assert trail[0].from_version is None
    for before, entry in itertools.pairwise(trail):
        assert entry.from_version == before.to_version, [e.to_dict() for e in trail]
    assert all(e.note == f"by {e.to_version}" for e in trail)
    assert registry.version("race").version == trail[-1].to_version
    for entry in reversed(trail[1:]):  # rollback walks the chain back to the first champion
        assert registry.rollback("race").version == entry.from_version
    with pytest.raises(RegistryError, match="first champion on record"):
        registry.rollback("race")


def test_an_overlong_note_is_refused_before_anything_moves(registry, packages):
    registry.register(packages["logreg"], "wine")
    registry.register(packages["sgd"], "wine")
    registry.promote("wine", 1)
    registry.set_alias("wine", "challenger", 1)
    long = "x" * 120_000
    with pytest.raises(InvalidInputError, match=r"note is 120,000 characters.*Nothing was"):
        registry.promote("wine", 2, note=long)
    with pytest.raises(InvalidInputError, match="note is 120,000"):
        registry.set_alias("wine", "challenger", 2, note=long)
    registry.promote("wine", 2)
    with pytest.raises(InvalidInputError, match="note is 120,000"):
        registry.rollback("wine", note=long)
    assert registry.version("wine@champion").version == "2"
    assert registry.version("wine@challenger").version == "1"
    assert [(e.from_version, e.to_version) for e in registry.history("wine")] == [
        (None, "1"),
        (None, "1"),
        ("1", "2"),
    ]


def test_concurrent_registers_of_one_package_make_one_version(registry, iris_packages):
    procs = [_python(REGISTER, iris_packages[0]) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert [out.split() for out, _ in outputs] == [["1"], ["1"], ["1"]]
    assert [v.version for v in registry.versions("race")] == ["1"]


DIE_IN = """
import os, sys
from mlflow import MlflowClient
setattr(MlflowClient, sys.argv[2], lambda *args, **kwargs: os._exit(9))  # killed right there
from tuneserve.registry import Registry
Registry().register(sys.argv[1], "killed")
"""


def test_a_register_killed_midway_leaves_nothing_visible(registry, iris_packages):
    from mlflow import MlflowClient

    mlflow = MlflowClient(registry.store.uri)

    def killed_in(step: str) -> None:
        proc = _python(DIE_IN, iris_packages[0], step)
        proc.communicate(timeout=300)
        assert proc.returncode == 9

    killed_in("log_artifacts")  # leaves a RUNNING run
    exp = mlflow.get_experiment_by_name("tuneserve").experiment_id
    running = mlflow.search_runs([exp], "attributes.status = 'RUNNING'")
    assert len(running) == 1
    killed_in("create_model_version")  # leaves an empty model; ends the dead run
    assert mlflow.get_run(running[0].info.run_id).info.status == "KILLED"
    assert mlflow.get_registered_model("killed")  # MLflow has no transaction for both steps
    assert registry.models() == []  # not listed as if it were a model
    done = registry.register(iris_packages[0], "killed")
    assert done.created and done.version.version == "1"
    assert mlflow.search_runs([exp], "attributes.status = 'RUNNING'") == []
    assert [m["versions"] for m in registry.models()] == [1]


def test_register_can_insist_on_a_trusted_signature(registry, packages, tmp_path):
    import shutil

    from tuneserve.signing import SignatureError, generate_key, sign_package

    package = shutil.copytree(packages["logreg"], tmp_path / "pkg")
    private, public, _ = generate_key(tmp_path / "team")
    with pytest.raises(SignatureError, match="is not signed"):
        registry.register(package, "wine", trusted_keys=[str(public)])
    assert registry.models() == []  # refused before anything was created
    sign_package(package, private)
    done = registry.register(package, "wine", trusted_keys=[str(public)])
    assert done.created and done.version.version == "1"
    # the signature travels with the package: the stored copy still verifies
    from tuneserve.signing import verify_signature

    assert verify_signature(registry.resolve("wine/1"), [str(public)])
