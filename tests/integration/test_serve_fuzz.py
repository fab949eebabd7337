"""Fuzz every operation of the server's OpenAPI document with schemathesis: whatever the
generated request, the server answers below 500, and every 4xx is ``{"error": ...}``."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tuneserve.serving import ModelSpec, Repository, create_app

calls = 0


@pytest.fixture(scope="module")
def app(digits_package, cancer_package, text_package):
    repository = Repository(
        [
            ModelSpec.parse(f"digits={digits_package}"),
            ModelSpec.parse(f"cancer={cancer_package}"),
            ModelSpec.parse(f"reviews={text_package}"),
        ]
    )
    repository.load_all()
    return create_app(repository)


def _operations(app) -> list:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_generated_request_gets_a_server_error(app):
    operations = _operations(app)
    assert len(operations) >= 12
    global calls
    calls = 0
    for operation in operations:
        fuzz(operation, examples=25)
    assert calls > 100


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error_with_more_examples(app):
    global calls
    calls = 0
    for operation in _operations(app):
        fuzz(operation, examples=200)
    assert calls > 1000


def _deep(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


#: Bodies that once made the server answer 500 (issue 13), sent to every operation that
#: takes a body: each must get a 4xx with {"error": ...}.
HOSTILE = {
    "JSON nested 100,000 deep": _deep(100_000),
    "OIP data nested 900 deep": '{"inputs": [{"name": "input", "shape": [1], "datatype": '
    f'"FP32", "data": {_deep(900)}}}]}}',
    "shape [2^32, 2^32]": '{"inputs": [{"name": "input", "shape": [4294967296, 4294967296], '
    '"datatype": "FP32", "data": [1]}]}',
    "outputs[].parameters not an object": '{"inputs": [{"name": "input", "shape": [1, 1], '
    '"datatype": "FP32", "data": [1]}], "outputs": [{"name": "o", "parameters": [1]}]}',
    "list-valued table cell": '{"inputs": [{"mean radius": [1, 2, 3]}]}',
    "lone surrogate text": '{"inputs": ["\\ud800"]}',
    "lone surrogate in BYTES": '{"inputs": [{"name": "text", "shape": [1], "datatype": '
    '"BYTES", "data": ["\\udc80"]}]}',
}


@pytest.mark.parametrize("shape", list(HOSTILE))
def test_hostile_bodies_on_every_operation_get_a_client_error(app, shape):
    body = HOSTILE[shape].encode()
    sent = 0
    for operation in _operations(app):
        if operation.method.upper() != "POST" or not operation.body:
            continue
        if "/repository/models/" in operation.path:
            continue  # never unload the models
        for name in ("digits", "cancer", "reviews"):
            params = {"name": name, "version": "1"}
            case = operation.Case(
                path_parameters={k: v for k, v in params.items() if f"{{{k}}}" in operation.path},
                media_type="application/json",
                body={},
            )
            response = case.call(data=body, headers={"content-type": "application/json"})
            sent += 1
            assert 400 <= response.status_code < 500, (shape, operation.label, response.text[:300])
            assert set(json.loads(response.text)) == {"error"}, response.text[:300]
    assert sent >= 6


def fuzz(operation, examples: int) -> None:
    """Up to ``examples`` generated requests for one operation."""
    keeps_models = "/repository/models/" not in operation.path  # never unload them

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        global calls
        calls += 1
        named = keeps_models and "name" in (case.path_parameters or {})
        if named and calls % 2:  # half the cases reach a real model, so the body is fuzzed
            case.path_parameters["name"] = ("digits", "cancer", "reviews")[calls % 3]
        response = case.call()
        assert response.status_code < 500, (operation.label, response.text[:300])
        if response.status_code >= 400:
            assert set(json.loads(response.text)) == {"error"}, response.text[:300]

    check()
