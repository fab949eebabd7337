"""When the registry's store fails while the server loads a model, the answer is 503 (the
server's fault, worth a retry), never 400 (the client's)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from _live_server import LiveServer

from tuneserve.serving.app import create_app
from tuneserve.serving.repository import ModelSpec, Repository


def test_a_damaged_store_during_a_load_is_a_503(tmp_path, monkeypatch):
    from tuneserve.registry import Registry, current_store
    from tuneserve.training import train

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    registry = Registry()
    registry.register(train("iris", tmp_path / "p", backbone="logreg").package.path, "iris")
    registry.promote("iris", 1)
    repository = Repository([ModelSpec.parse("iris")])
    repository.load_all()
    app = create_app(repository, watch_interval=None)

    database = current_store().uri.removeprefix("sqlite:///")
    with open(database, "r+b") as fh:  # a disk error: the header and first pages are gone
        fh.write(b"this is not a database" * 1000)
    repository.registry = None  # a fresh client, as a restarted worker would have

    server = LiveServer(app)
    try:
        url = f"http://{server.url}/v2/repository/models/iris/load"
        request = urllib.request.Request(url, data=b"", method="POST")
        try:
            urllib.request.urlopen(request, timeout=60)
            raise AssertionError("the load succeeded on a damaged store")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.loads(exc.read())
            exc.close()
    finally:
        server.stop()
    assert status == 503, body
    assert "mlflow.db" in body["error"]
    assert repository.current["iris"] == "1"  # the loaded version keeps serving
