"""The registry with the real PostgreSQL on this machine as MLflow's backend store.

Each run uses a fresh database (created and dropped here), so it never touches other data.
If PostgreSQL is down the tests fail and say so: they never skip silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tuneserve.package import Package
from tuneserve.registry import Registry, current_store, export_bundle, import_bundle
from tuneserve.training import train

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@pytest.fixture(scope="module")
def pg_uri():
    import psycopg

    try:
        admin = psycopg.connect(dbname="postgres", connect_timeout=5, autocommit=True, **PG)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} as {PG['user']} ({exc}). "
            "These tests need the real server: start it (trust auth) and rerun"
        )
    name = f"tuneserve_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture
def pg_registry(pg_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pg_uri)
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    return Registry()


REGISTER = """
import sys
from tuneserve.registry import Registry
print(" ".join(Registry().register(p, "pg-race").version.version for p in sys.argv[1:]))
"""


def test_registry_on_postgresql(pg_registry, pg_uri, tmp_path, monkeypatch):
    assert pg_registry.store.uri == pg_uri == current_store().uri
    paths = [
        train("iris", tmp_path / f"p{i}", backbone="logreg", seed=i).package.path for i in range(4)
    ]
    first = pg_registry.register(paths[0], "iris")
    second = pg_registry.register(paths[1], "iris")
    assert (first.version.version, second.version.version) == ("1", "2")
    pg_registry.promote("iris", 1)
    pg_registry.promote("iris", 2)
    assert pg_registry.rollback("iris").version == "1"
    resolved = pg_registry.resolve("models:/iris@champion")
    assert Package.load(resolved).id == Package.load(paths[0]).id
    assert [e.action for e in pg_registry.history("iris")] == ["promote", "promote", "rollback"]

    # two processes at once against PostgreSQL: distinct versions, nothing lost
    env = {**os.environ, "MLFLOW_TRACKING_URI": pg_uri, "TUNESERVE_HOME": str(tmp_path / "h")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in paths[2:]
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert sorted(int(o.strip()) for o, _ in outs) == [1, 2]

    # migrate from the team's PostgreSQL store to a local embedded one
    bundle = export_bundle(pg_registry, "iris", tmp_path / "iris.tar")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "laptop"))
    local = Registry()
    assert local.store.embedded
    assert import_bundle(local, bundle) == ["iris/1", "iris/2"]
    assert local.version("iris@champion").version == "1"
