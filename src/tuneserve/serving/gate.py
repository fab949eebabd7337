"""What every HTTP request meets first: the body size limit (413) and API keys (401/403);
every response gets an ``X-Tuneserve-Worker`` header naming the process that answered.

The body limit holds twice: a ``Content-Length`` over it is refused before the body is
read, and a body without one (chunked) is counted as it streams in and refused the moment
it passes the limit (:class:`BodyTooLargeError`, 413), so no request body over the limit
is ever held in memory.

A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps each request in
extra tasks and streams, which cost more than the model itself on small models.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneserve.exceptions import InvalidInputError

from . import auth

Refusal = tuple[int, str, dict[str, str] | None]


class BodyTooLargeError(InvalidInputError):
    """A request body passed the size limit while it streamed in (HTTP 413)."""


class Gate:
    def __init__(
        self, app: ASGIApp, *, keys: dict[str, str], max_body_bytes: int, worker: str
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.worker = (b"x-tuneserve-worker", worker.encode())

    def refusal(self, method: str, path: str, headers: dict[str, str]) -> Refusal | None:
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return (
                413,
                f"request body of {length} bytes is over the limit of {self.max_body_bytes}; "
                "send fewer inputs per request",
                None,
            )
        scope = auth.needed_scope(method, path) if self.keys else None
        if scope is None:
            return None
        status = auth.check(self.keys, auth.presented_key(headers), scope)
        if status == 401:
            return (
                401,
                "an API key is needed: send Authorization: Bearer KEY (or X-API-Key)",
                {"WWW-Authenticate": "Bearer"},
            )
        if status == 403:
            return 403, f"this API key lacks the {scope!r} scope", None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.worker]}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refused = self.refusal(scope["method"], scope["path"], headers)
        if refused is None:
            await self.app(scope, self._counted(receive), send_named)
            return
        status, message, extra = refused
        response: Any = JSONResponse({"error": message}, status_code=status, headers=extra)
        await response(scope, receive, send_named)

    def _counted(self, receive: Receive) -> Receive:
        """``receive`` that counts body bytes and raises :class:`BodyTooLargeError` past
        the limit, before the app can keep them."""
        seen = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(
                        f"request body is over the limit of {limit} bytes ({seen} bytes "
                        "received so far, sent without a Content-Length); send fewer inputs "
                        "per request"
                    )
            return message

        return counted
