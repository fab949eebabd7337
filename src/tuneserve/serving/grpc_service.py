"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), served from
the same process, event loop and :class:`~.state.ServerState` as REST: the same models,
batchers, hot reload, canary and shadow, API keys and metrics (API label ``grpc``).

``tuneserve serve --grpc-port 8001`` starts it beside the HTTP server (with ``--workers N``
every worker binds the port with ``SO_REUSEPORT`` and the kernel spreads connections).

* Health and server metadata are open; model metadata, readiness and inference need the
  ``predict`` scope; the repository extension (index, load, unload) needs ``admin``. The key
  comes in the call's metadata: ``authorization: Bearer KEY`` (or ``x-api-key``).
* Errors map to gRPC status codes by the HTTP status REST gives the same error
  (:func:`.errors.status_of`), with the same message: bad input ``INVALID_ARGUMENT``, an
  unknown model or version ``NOT_FOUND``, no or an unknown key ``UNAUTHENTICATED``, a key
  without the scope ``PERMISSION_DENIED``, a full queue ``RESOURCE_EXHAUSTED``, a request
  over its time ``DEADLINE_EXCEEDED``. A message over ``--max-body-mb`` is refused by gRPC
  itself with ``RESOURCE_EXHAUSTED``. Only the server's own faults are ``INTERNAL``.
* The time a request may take is the server's ``--timeout`` or the client's deadline,
  whichever ends first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from . import auth
from .batcher import QueueFullError
from .errors import status_of
from .grpc_codec import metadata_response, request_from_proto, response_to_proto
from .infer import SERVER_METADATA, infer_tensors, model_metadata
from .proto import grpc_predict_v2_pb2 as pb
from .proto import grpc_predict_v2_pb2_grpc as pb_grpc
from .state import ServerState

__all__ = ["InferenceService", "code_of", "start_grpc"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The gRPC status of each HTTP status REST answers the same error with.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status of an error: REST's HTTP status for it, translated."""
    if isinstance(exc, QueueFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return _CODES.get(status_of(exc), grpc.StatusCode.INTERNAL)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The servicer: each method reads the shared :class:`ServerState`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.repository = state.repository

    async def _call(
        self,
        context: aio.ServicerContext[Any, Any],
        scope: str | None,
        work: Callable[[], Awaitable[T]],
    ) -> T:
        """Check the key for ``scope``, run ``work``, and turn any error into a status."""
        try:
            if scope is not None and self.state.keys:
                self._check_key(context, scope)
            return await work()
        except _Refused as exc:
            await context.abort(_CODES[exc.status], str(exc))
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:  # the text says which limit (ServerState.predict)
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "timed out")
        except Exception as exc:
            code = code_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("gRPC call failed")
                await context.abort(
                    code, f"internal server error ({type(exc).__name__}); the server log has it"
                )
            await context.abort(code, str(exc))
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def _check_key(self, context: aio.ServicerContext[Any, Any], scope: str) -> None:
        metadata = {
            k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)
        }
        status = auth.check(self.state.keys, auth.presented_key(metadata), scope)
        if status == 401:
            raise _Refused(401, "an API key is needed: send the metadata authorization: Bearer KEY")
        if status == 403:
            raise _Refused(403, f"this API key lacks the {scope!r} scope")

    # ---- health and metadata ---------------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self.repository.current))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**SERVER_METADATA)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            self.repository.get(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=True)

        return await self._call(context, "predict", work)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            model = self.repository.get(request.name, request.version or None)
            versions = sorted(self.repository.versions.get(model.name, {}))
            return metadata_response(model_metadata(model, versions))

        return await self._call(context, "predict", work)

    # ---- inference -------------------------------------------------------------------

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        async def work() -> pb.ModelInferResponse:
            name = request.model_name
            model = self.state.route(name, request.model_version or None)
            parsed = request_from_proto(request, self.state.check_items)
            remaining = context.time_remaining()
            tensors = await infer_tensors(self.state, name, model, parsed, "grpc", remaining)
            return response_to_proto(name, model.version, parsed, tensors)

        return await self._call(context, "predict", work)

    # ---- the repository extension ----------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RepositoryIndexResponse:
        async def work() -> pb.RepositoryIndexResponse:
            repository = self.repository
            response = pb.RepositoryIndexResponse()
            for name in sorted(repository.specs):
                ready = name in repository.current
                if request.ready and not ready:
                    continue
                response.models.add(
                    name=name,
                    version=repository.current.get(name, ""),
                    state="READY" if ready else "UNAVAILABLE",
                    reason=repository.errors.get(name) or "",
                )
            return response

        return await self._call(context, "admin", work)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RepositoryModelLoadResponse:
        async def work() -> pb.RepositoryModelLoadResponse:
            name = request.name or request.model_name  # Triton's field, else KServe's
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.repository.load, name)
            self.state.metrics.show_loaded(self.repository)
            return pb.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

        return await self._call(context, "admin", work)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RepositoryModelUnloadResponse:
        async def work() -> pb.RepositoryModelUnloadResponse:
            name = request.name or request.model_name
            self.repository.unload(name)
            self.state.metrics.show_loaded(self.repository)
            return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)

        return await self._call(context, "admin", work)


async def start_grpc(state: ServerState, host: str, port: int) -> aio.Server:
    """Start the gRPC server on ``host:port`` in the running event loop. A message over the
    body limit is refused (``RESOURCE_EXHAUSTED``); answers are bounded by ``--max-items``,
    not by that limit."""
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", state.limits.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.add_insecure_port(address)
    await server.start()
    return server
