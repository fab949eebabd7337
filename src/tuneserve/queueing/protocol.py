"""What travels through Redis: the request message, the keys one stream name gives, and the
one Lua script that records an outcome and acknowledges its message atomically.

A request is one stream entry with one field, ``request``, holding JSON::

    {"id": "9f1c...", "model": "reviews", "inputs": ["great food"],
     "version": "3", "reply_to": "tuneserve:requests:reply:...", "ttl": 3600}

``inputs`` (and ``version``) are those of the REST ``/v1`` simple JSON API; ``version``,
``reply_to`` and ``ttl`` are optional. The keys of a stream ``S``:

=====================  ===================================================================
``S``                  the requests (a consumer group reads them; entries are deleted once
                       their outcome is recorded)
``S:results``          one entry per request id: ``id``, ``model``, ``version``, ``ok``
                       (``1``/``0``) and ``body`` (the ``/v1`` answer, or ``{"error"}``)
``S:dead``             dead letters: ``id``, ``error``, ``request`` (as sent), ``deliveries``
``S:done:{id}``        the idempotency marker of a recorded request: its entry id and its
                       results entry id (expires after the result TTL)
``S:failures``         the last error of each message that failed and waits for a retry
``S:reply:{client}``   a client's reply list (see :class:`tuneserve.client.QueueClient`)
=====================  ===================================================================
"""

from __future__ import annotations

import json
import reprlib
import uuid
from dataclasses import dataclass
from typing import Any

from tuneserve.exceptions import InvalidInputError

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_STREAM",
    "LEAVE_SCRIPT",
    "RENEW_SCRIPT",
    "Keys",
    "MalformedMessageError",
    "Request",
    "encode_request",
    "parse_request",
    "shown",
]

DEFAULT_STREAM = "tuneserve:requests"
DEFAULT_GROUP = "tuneserve-workers"
#: The stream entry field that holds the request's JSON.
FIELD = "request"


class MalformedMessageError(InvalidInputError):
    """A stream entry that is no request: retrying it cannot help, it is dead-lettered at
    once. ``request_id`` and ``reply_to`` are kept when the message had them, so the
    sender still learns why."""

    def __init__(self, problem: str, request_id: str | None = None, reply_to: str | None = None):
        super().__init__(problem)
        self.request_id = request_id
        self.reply_to = reply_to


@dataclass(frozen=True)
class Keys:
    """The Redis keys derived from one stream name."""

    stream: str

    @property
    def results(self) -> str:
        return f"{self.stream}:results"

    @property
    def dead(self) -> str:
        return f"{self.stream}:dead"

    @property
    def failures(self) -> str:
        return f"{self.stream}:failures"

    def done(self, request_id: str) -> str:
        return f"{self.stream}:done:{request_id}"

    def reply(self, client_id: str) -> str:
        return f"{self.stream}:reply:{client_id}"


@dataclass(frozen=True)
class Request:
    """One inference request read from the stream."""

    id: str
    model: str
    payload: dict[str, Any]  # {"inputs": [...], "version": optional}: what predict_json reads
    reply_to: str | None = None
    ttl: int | None = None


def encode_request(
    model: str,
    inputs: list[Any],
    *,
    request_id: str | None = None,
    version: str | None = None,
    reply_to: str | None = None,
    ttl: int | None = None,
) -> tuple[str, dict[str, str]]:
    """``(id, stream entry fields)`` of a request; a new id (uuid4 hex) unless given."""
    rid = request_id or uuid.uuid4().hex
    body: dict[str, Any] = {"id": rid, "model": model, "inputs": inputs}
    if version is not None:
        body["version"] = str(version)
    if reply_to is not None:
        body["reply_to"] = reply_to
    if ttl is not None:
        body["ttl"] = int(ttl)
    return rid, {FIELD: json.dumps(body, default=_plain)}


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays (a pandas row's cells, pixel arrays) as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable; send JSON values")


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlist = _SHOWN.maxdict = 10


def shown(value: Any) -> str:
    """``repr(value)`` cut to about 80 characters: what a sender wrote (an id, a model, a
    key) goes into error texts stored several times (dead letter, result, reply, log)."""
    return _SHOWN.repr(value)


def _cut(text: str) -> str:
    return text if len(text) <= 80 else f"{text[:60]}...({len(text):,} characters)"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_request(fields: dict[str, str], keys: Keys, max_ttl: int | None = None) -> Request:
    """The request in a stream entry's fields (read from ``keys.stream``). A ``ttl`` above
    ``max_ttl`` (the worker's ``--result-ttl``) is cut to it: Redis itself refuses an
    expire time past its range, and a reply kept longer than its id is remembered helps
    nobody (a client does not know the workers' setting, so this is no error).

    Raises:
        MalformedMessageError: The entry is not a request: no ``request`` field, not JSON,
            not an object, no ``id`` or ``model`` string, a bad ``ttl``, or a ``reply_to``
            outside the stream's reply lists (``S:reply:...``; the worker writes no other
            key a message names).
            Whether the inputs are right is for the model's decoding to say.
    """
    raw = fields.get(FIELD)
    if raw is None:
        raise MalformedMessageError(
            f"the stream entry has no {FIELD!r} field (fields: {shown(sorted(fields))}); send "
            f'{{"{FIELD}": "<JSON request>"}} (tuneserve.client.QueueClient does)'
        )
    try:
        body = json.loads(raw)
    except ValueError as exc:  # also an integer past Python's digit limit (4300 digits)
        raise MalformedMessageError(
            f"the {FIELD!r} field is not JSON ({exc}): {raw[:80]!r}; send a JSON object "
            '{"id", "model", "inputs"}'
        ) from None
    except RecursionError:
        raise MalformedMessageError(
            f"the {FIELD!r} field is JSON nested deeper than the worker parses (about 1000 "
            "levels); send inputs nested at most as deep as their shape"
        ) from None
    if not isinstance(body, dict):
        raise MalformedMessageError(
            f'the request is a JSON {type(body).__name__}, not an object; send {{"id", '
            '"model", "inputs"}'
        )
    rid, reply_to = _text(body.get("id")), _text(body.get("reply_to"))
    prefix = keys.reply("")
    if body.get("reply_to") is not None and not (reply_to or "").startswith(prefix):
        raise MalformedMessageError(
            f"reply_to is {shown(body.get('reply_to'))}; it must be a key that starts with "
            f"{prefix!r} (the worker writes no other key a message names)",
            rid,
        )
    if rid is None:
        raise MalformedMessageError(
            f"the request has no id (a non-empty string); got {shown(body.get('id'))}. Hint: "
            "tuneserve.client.QueueClient makes one per request",
            None,
            reply_to,
        )
    model = _text(body.get("model"))
    if model is None:
        raise MalformedMessageError(
            f'request {_cut(rid)} names no model: send "model": "NAME"; got '
            f"{shown(body.get('model'))}",
            rid,
            reply_to,
        )
    ttl = body.get("ttl")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1):
        raise MalformedMessageError(
            f"request {_cut(rid)}: ttl is {shown(ttl)}; send a whole number of seconds >= 1",
            rid,
            reply_to,
        )
    if ttl is not None and max_ttl is not None:
        ttl = min(ttl, max_ttl)
    payload = {k: body[k] for k in ("inputs", "version") if k in body}
    return Request(rid, model, payload, reply_to, ttl)


# Deletes a consumer from its group only if nothing is pending under its name, atomically
# (a claim between a check and a separate XGROUP DELCONSUMER would drop the claimed
# messages from the pending list for good):
#   KEYS: stream; ARGV: group, consumer. Returns 1 when deleted.
LEAVE_SCRIPT = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


# Renews (resets the idle time of) the given entries, only those still pending under this
# consumer: a plain XCLAIM with min-idle 0 would take back one another worker claimed
# meanwhile (this one's renewals lapsed), and both would run it. XCLAIM JUSTID counts no
# delivery. KEYS: stream; ARGV: group, consumer, entry ids... Returns the ids no longer
# this consumer's (claimed by another, or finished): the worker stops renewing them.
RENEW_SCRIPT = """
local call, lost = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}, {}
for i = 3, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if row and row[2] == ARGV[2] then call[#call + 1] = ARGV[i] else lost[#lost + 1] = ARGV[i] end
end
if #call > 5 then
  call[#call + 1] = 'JUSTID'
  redis.call(unpack(call))
end
return lost
"""
