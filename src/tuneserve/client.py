"""Submit inference requests to the workers of a Redis Stream (``tuneserve worker``) and get
each answer as a :class:`concurrent.futures.Future`.

>>> with QueueClient("redis://127.0.0.1:6379/0", model="reviews") as client:
...     answer = client.submit(["great food"]).result(timeout=30)
>>> answer["predictions"][0]["label"]

The answer is what ``POST /v1/models/{name}/predict`` returns: ``{"model", "version",
"predictions"}``. Each client has one reply list (``STREAM:reply:{client id}``), read by one
background thread that resolves the futures by request id. Never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tuneserve.exceptions import (
    InvalidInputError,
    NotFoundError,
    TuneserveError,
    UnavailableError,
)
from tuneserve.queueing.connection import REDIS_DOWN, connect_sync
from tuneserve.queueing.protocol import DEFAULT_STREAM, Keys, encode_request
from tuneserve.redact import mask_url

__all__ = ["QueueClient", "QueueFuture"]

log = logging.getLogger(__name__)

#: The error a worker's error result raises, by the status it records (as HTTP would answer).
_ERRORS: dict[int, type[TuneserveError]] = {400: InvalidInputError, 404: NotFoundError}


class QueueFuture(Future[dict[str, Any]]):
    """The answer to one queued request; ``request_id`` names it in the results stream."""

    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id


@dataclass
class _Waiting:
    future: QueueFuture
    model: str
    deadline: float


class QueueClient:
    """Submits requests to ``stream`` at the Redis at ``url``.

    Args:
        url: ``redis://HOST:PORT/DB``.
        stream: The request stream the workers read.
        model: The model requests go to unless :meth:`submit` names another.
        timeout: Seconds a future waits for its answer before it fails with
            :class:`TimeoutError` (the request itself stays queued: a worker still answers
            it, into the results stream).

    Raises:
        InvalidInputError: ``url`` is not a Redis URL.
        UnavailableError: Redis cannot be reached.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        model: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url, self.stream, self.model, self.timeout = url, stream, model, timeout
        self.keys = Keys(stream)
        self.id = uuid.uuid4().hex
        self.reply_key = self.keys.reply(self.id)
        self._redis = connect_sync(url)
        self._waiting: dict[str, _Waiting] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_replies, daemon=True, name="replies")
        self._reader.start()

    def submit(
        self,
        inputs: list[Any],
        model: str | None = None,
        version: str | None = None,
        *,
        request_id: str | None = None,
    ) -> QueueFuture:
        """Queue one request; its future resolves to the ``/v1`` answer, or raises the
        worker's error (:class:`InvalidInputError` for bad inputs, :class:`NotFoundError`
        for an unknown model or version, :class:`UnavailableError` when the workers gave up
        on it) or :class:`TimeoutError`. ``request_id`` (default: a new uuid4 hex) makes a
        resubmit of the same request idempotent: a worker runs an id once, and a resubmit
        of an id already answered (within ``--result-ttl``) gets the recorded answer.

        Raises:
            InvalidInputError: Bad ``inputs``, no model, or ``request_id`` already waiting
                for its answer in this client.
        """
        (future,) = self._queue([(inputs, request_id)], model, version)
        return future

    def submit_many(
        self, batches: list[list[Any]], model: str | None = None, version: str | None = None
    ) -> list[QueueFuture]:
        """One request per list of inputs, queued in one round trip."""
        return self._queue([(inputs, None) for inputs in batches], model, version)

    def _queue(
        self, requests: list[tuple[list[Any], str | None]], model: str | None, version: str | None
    ) -> list[QueueFuture]:
        name = model or self.model
        if not name:
            raise InvalidInputError(
                "name the model: QueueClient(url, model=NAME) or submit(model=)"
            )
        pipe = self._redis.pipeline(transaction=False)
        futures = []
        deadline = time.monotonic() + self.timeout
        for inputs, request_id in requests:
            if not isinstance(inputs, list) or not inputs:
                raise InvalidInputError(
                    f"inputs must be a non-empty list (one item per prediction); got "
                    f"{type(inputs).__name__} {str(inputs)[:40]!r}"
                )
            rid, fields = encode_request(
                name,
                inputs,
                request_id=request_id,
                version=version,
                reply_to=self.reply_key,
                ttl=max(int(self.timeout) * 2, 60),
            )
            pipe.xadd(self.stream, fields)  # type: ignore[arg-type]
            futures.append(QueueFuture(rid))
        ids = [future.request_id for future in futures]
        with self._lock:
            twice = sorted({r for r in ids if ids.count(r) > 1 or r in self._waiting})
            if twice:  # a second future of one id would orphan the first
                raise InvalidInputError(
                    f"request id {twice[0]!r} is already waiting for its answer in this "
                    "client; wait for that future (a resubmit after it ended gets the "
                    "recorded answer)"
                )
            for future in futures:
                self._waiting[future.request_id] = _Waiting(future, name, deadline)
        try:
            added = pipe.execute(raise_on_error=False)
        except Exception as exc:  # Redis away, or an error no reply can follow
            with self._lock:
                for future in futures:
                    self._waiting.pop(future.request_id, None)
            raise UnavailableError(
                f"could not queue the request at {mask_url(self.url)} ({exc}); is Redis up?"
            ) from None
        for future, entry in zip(futures, added, strict=True):
            if isinstance(entry, Exception):  # refused (OOM, the stream's key a string...)
                with self._lock:
                    self._waiting.pop(future.request_id, None)
                problem = f"could not queue request {future.request_id} on {self.stream!r}"
                _settle(future, error=UnavailableError(f"{problem}: {entry}"))
        return futures

    def close(self) -> None:
        """Stop reading replies; futures still waiting fail with :class:`TimeoutError`."""
        self._closed.set()
        self._reader.join(timeout=5)
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for rid, w in waiting.items():
            _settle(w.future, error=TimeoutError(f"the client closed before request {rid} ended"))
        with contextlib.suppress(*REDIS_DOWN):  # the list expires on its own
            self._redis.delete(self.reply_key)
        self._redis.close()

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- the reply thread -------------------------------------------------------------

    def _read_replies(self) -> None:
        delay = 0.1
        while not self._closed.is_set():
            try:
                popped: Any = self._redis.blpop([self.reply_key], timeout=0.5)
                delay = 0.1
            except REDIS_DOWN:  # futures wait for Redis (or their deadline)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                popped = None
            except Exception:  # the key is no list (someone else wrote it), or worse
                if delay == 0.1:  # once per run of failures, then quiet, with the back-off
                    log.exception("reading the replies at %s failed; retrying", self.reply_key)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                popped = None
            # The one thread every future waits on must never end early: no error in
            # resolving (a future cancelled by its caller, say) reaches this loop.
            try:
                if popped is not None:
                    self._resolve(popped[1])
                self._expire()
            except Exception:
                log.exception("the reply thread of %s met an error; it carries on", self.reply_key)

    def _resolve(self, raw: str) -> None:
        try:
            reply = json.loads(raw)
            rid = str(reply.get("id"))
        except (ValueError, TypeError, AttributeError):  # not a worker's reply
            log.warning("ignored a reply that is not a worker's: %.80r", raw)
            return
        with self._lock:
            waiting = self._waiting.pop(rid, None)
        if waiting is None or waiting.future.done():  # timed out, or cancelled by its caller
            return
        try:  # the entry is out of _waiting now: whatever the reply holds, settle the future
            body = reply.get("body") or {}
            if reply.get("ok"):
                _settle(waiting.future, dict(body))
                return
            message = str(body.get("error", "the worker recorded an error without a message"))
            error = _ERRORS.get(int(body.get("status", 503)), UnavailableError)
        except (ValueError, TypeError, AttributeError) as exc:
            _settle(
                waiting.future,
                error=UnavailableError(
                    f"the reply to request {rid} cannot be read ({type(exc).__name__}: "
                    f"{exc}): {raw[:80]!r}"
                ),
            )
            return
        _settle(waiting.future, error=error(message))

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [rid for rid, w in self._waiting.items() if w.deadline <= now]
            expired = [(rid, self._waiting.pop(rid)) for rid in late]
        for rid, w in expired:
            _settle(
                w.future,
                error=TimeoutError(
                    f"no answer to request {rid} within {self.timeout} s; is a worker for model "
                    f"{w.model!r} reading stream {self.stream!r}? Hint: tuneserve worker "
                    f"--model {w.model} --queue {mask_url(self.url)} --stream {self.stream}"
                ),
            )


def _settle(
    future: Future[dict[str, Any]],
    result: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> None:
    """Resolve ``future`` unless its caller cancelled it first (no InvalidStateError)."""
    if not future.set_running_or_notify_cancel():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or {})
