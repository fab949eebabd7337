"""The request message: what a worker accepts, and the error that names what is wrong with
what it refuses (no Redis needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.queueing import Keys, MalformedMessageError, encode_request, parse_request
from tuneserve.redact import mask_url

KEYS = Keys("requests")


def _fields(body: object) -> dict[str, str]:
    return {"request": json.dumps(body)}


def test_a_request_round_trips():
    rid, fields = encode_request(
        "reviews", ["great food"], version="2", reply_to="requests:reply:abc", ttl=60
    )
    assert len(rid) == 32
    request = parse_request(fields, KEYS)
    assert (request.id, request.model, request.reply_to, request.ttl) == (
        rid,
        "reviews",
        "requests:reply:abc",
        60,
    )
    assert request.payload == {"inputs": ["great food"], "version": "2"}  # what /v1 reads


def test_numpy_values_are_sent_as_json():
    _, fields = encode_request("digits", [np.zeros((2, 2), np.float32)], request_id="x")
    assert json.loads(fields["request"])["inputs"] == [[[0.0, 0.0], [0.0, 0.0]]]
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        encode_request("digits", [object()])


@pytest.mark.parametrize(
    ("fields", "message", "request_id"),
    [
        ({"other": "x"}, r"no 'request' field \(fields: \['other'\]\)", None),
        ({"request": "{not json"}, r"'request' field is not JSON", None),
        (_fields([1, 2]), r"a JSON list, not an object", None),
        (_fields({"model": "m", "inputs": [1]}), r"the request has no id", None),
        (_fields({"id": 7, "model": "m"}), r"has no id \(a non-empty string\); got 7", None),
        (_fields({"id": "a", "inputs": [1]}), r"request a names no model", "a"),
        (_fields({"id": "a", "model": ""}), r"names no model", "a"),
        (_fields({"id": "a", "model": "m", "ttl": 0}), r"ttl is 0; send a whole number", "a"),
        (_fields({"id": "a", "model": "m", "ttl": True}), r"ttl is True", "a"),
        (_fields({"id": "a", "model": "m", "ttl": "60"}), r"ttl is '60'", "a"),
        (
            _fields({"id": "a", "model": "m", "reply_to": "requests:results"}),
            r"reply_to is 'requests:results'; it must be a key that starts with "
            r"'requests:reply:'",
            "a",
        ),
        (_fields({"id": "a", "model": "m", "reply_to": 5}), r"reply_to is 5", "a"),
    ],
)
def test_what_is_no_request_is_refused_with_its_reason(fields, message, request_id):
    with pytest.raises(MalformedMessageError, match=message) as caught:
        parse_request(fields, KEYS)
    assert isinstance(caught.value, InvalidInputError)  # the sender's fault: never retried
    assert caught.value.request_id == request_id  # kept when known: an error result is due


def test_a_refused_request_keeps_its_reply_key_when_it_is_valid():
    with pytest.raises(MalformedMessageError) as caught:
        parse_request(_fields({"id": "a", "reply_to": "requests:reply:c"}), KEYS)
    assert caught.value.reply_to == "requests:reply:c"


def test_inputs_are_left_to_the_models_decoding():
    """Whether inputs suit the model is for serving.decode to say (as for REST)."""
    request = parse_request(_fields({"id": "a", "model": "m", "inputs": "not a list"}), KEYS)
    assert request.payload == {"inputs": "not a list"}


def test_keys_derive_from_the_stream():
    keys = Keys("s")
    assert (keys.results, keys.dead, keys.failures) == ("s:results", "s:dead", "s:failures")
    assert (keys.done("id1"), keys.reply("c")) == ("s:done:id1", "s:reply:c")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:s3cret@host/1", "redis://:***@host/1"),
    ],
)
def test_a_password_in_the_url_is_never_shown(url, shown):
    assert mask_url(url) == shown


def test_the_back_off_doubles_to_its_cap_and_warns_once_per_outage(caplog):
    import asyncio
    import logging

    from tuneserve.queueing.connection import Backoff, RedisHealth

    errors: list[int] = []
    health = RedisHealth("redis://:pw@host:1/0", lambda: errors.append(1))
    backoff = Backoff(health, first=0.001, cap=0.004)
    delays = []

    async def outage() -> None:
        for _ in range(4):
            delays.append(backoff.delay)
            await backoff.wait(ConnectionError("refused"), "reading")

    with caplog.at_level(logging.WARNING, "tuneserve.queueing.connection"):
        asyncio.run(outage())
        backoff.reset()
        backoff.reset()
    assert delays == [0.001, 0.002, 0.004, 0.004] and backoff.delay == 0.001
    assert len(errors) == 4  # every failed call is counted
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # one when it went, one when it came back
    assert "redis://:***@host:1/0: reading failed (ConnectionError: refused)" in warnings[0]
    assert "answers again" in warnings[1]


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested deeper than the worker parses"),
        ('{"id": "x", "model": "m", "inputs": [' + "9" * 5000 + "]}", "is not JSON"),
    ],
    ids=["deeply-nested", "huge-integer"],
)
def test_json_python_cannot_parse_is_a_malformed_message(raw, pattern):
    """RecursionError and the int-string limit's ValueError are the message's fault: dead
    letter at once, never a retry that fails the same way forever."""
    with pytest.raises(MalformedMessageError, match=pattern):
        parse_request({"request": raw}, KEYS)


def test_a_ttl_above_the_workers_result_ttl_is_cut_to_it():
    body = {"id": "a", "model": "m", "inputs": [1], "reply_to": "requests:reply:c"}
    assert parse_request(_fields({**body, "ttl": 600}), KEYS, max_ttl=600).ttl == 600
    assert parse_request(_fields({**body, "ttl": 10**16}), KEYS, max_ttl=600).ttl == 600
    assert parse_request(_fields({**body, "ttl": 10**16}), KEYS).ttl == 10**16
