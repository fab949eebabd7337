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


def test_no_generated_request_gets_a_server_error(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    global calls
    calls = 0
    for operation in operations:
        fuzz(operation)
    assert calls > 100


def fuzz(operation) -> None:
    """Up to 25 generated requests for one operation."""
    keeps_models = "/repository/models/" not in operation.path  # never unload them

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
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
