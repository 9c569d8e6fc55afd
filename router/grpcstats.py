"""RPCs handled by the router's client port, by type, service, method and
status code: what go-grpc-prometheus counts as `grpc_server_handled_total`
in etcd (flotilla/metrics.py reads `handled` when Prometheus scrapes).

Each method's handler is wrapped once, not per call, and counts the call
once it ends: OK when the handler returned without setting a code, the code
it aborted with or set, CANCELLED when the client went away, UNKNOWN when it
raised anything else (as gRPC then answers), each by grpc-go's name (OK,
InvalidArgument, Unavailable, ...) as etcd's label shows it. Two ways in:

- ``HandledCounter.counted(service, handlers)`` at registration
  (router/grpc_handlers.py ``add_servicer(..., handled=counter)``): no
  interceptor at all, so grpc.aio finds each call's handler directly;
- as a grpc.aio server interceptor (``interceptors=[counter]``): the wrapped
  handler is made on a method's first call and kept, so a call costs the
  interceptor's lookup only (it used to build a new handler, a closure and
  an ``inspect`` check on every call: about a tenth of the router's CPU per
  put). A method already counted at registration is passed through.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import grpc.aio

Key = tuple[str, str, str, str]
"""(grpc_type, grpc_service, grpc_method, grpc_code), go-grpc-prometheus's labels."""


def split_method(full: str) -> tuple[str, str]:
    """'/etcdserverpb.KV/Range' -> ('etcdserverpb.KV', 'Range')."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


GO_NAMES = {
    c: "".join(w.capitalize() for w in c.name.split("_")) if c != grpc.StatusCode.OK else "OK" for c in grpc.StatusCode
} | {grpc.StatusCode.CANCELLED: "Canceled"}
"""grpc-go's names of the codes (codes.Code.String()), the grpc_code label's values: OK, InvalidArgument, ..."""


def _code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:  # type: ignore[type-arg]
    code = context.code()
    if isinstance(code, int) and not isinstance(code, grpc.StatusCode):  # set as a number
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if isinstance(code, grpc.StatusCode):
        return GO_NAMES[code]
    if exc is None:
        return "OK"
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):  # the client went away
        return GO_NAMES[grpc.StatusCode.CANCELLED]
    return GO_NAMES[grpc.StatusCode.UNKNOWN]


_TYPES = {(False, False): "unary", (True, False): "client_stream", (False, True): "server_stream", (True, True): "bidi_stream"}


class HandledCounter(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.handled: collections.Counter[Key] = collections.Counter()
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        """full method name -> its counting handler (the interceptor's, made on first call)"""
        self._registered: set[str] = set()
        """full method names counted by their registered handler (counted()): the interceptor passes them through"""

    # -- at registration ----------------------------------------------------------------
    def counted(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> dict[str, grpc.RpcMethodHandler]:
        """`handlers` (method -> handler, one service's table) each counting its calls."""
        out = {}
        for method, h in handlers.items():
            out[method] = self._wrap(h, service, method)
            self._registered.add(f"/{service}/{method}")
        return out

    # -- as an interceptor -------------------------------------------------------------
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        full = details.method
        wrapped = self._wrapped.get(full)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None or full in self._registered:
            return handler
        service, method = split_method(full)
        wrapped = self._wrapped[full] = self._wrap(handler, service, method)
        return wrapped

    # -- wrapping ----------------------------------------------------------------------
    def _wrap(self, handler: grpc.RpcMethodHandler, service: str, method: str) -> grpc.RpcMethodHandler:
        labels = (_TYPES[(bool(handler.request_streaming), bool(handler.response_streaming))], service, method)
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, labels), des, ser)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary, labels), des, ser)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream, labels), des, ser)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream, labels), des, ser)
        return handler

    def _count(self, labels: tuple[str, str, str], context: grpc.aio.ServicerContext, exc: BaseException | None) -> None:  # type: ignore[type-arg]
        self.handled[(*labels, _code(context, exc))] += 1

    def _unary(self, behavior: Callable[..., Any], labels: tuple[str, str, str]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(behavior):
            return behavior  # a synchronous handler (none on the router): not counted
        handled = self.handled
        ok = (*labels, "OK")

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            try:
                resp = await behavior(request, context)
            except BaseException as exc:
                self._count(labels, context, exc)
                raise
            if context.code() is None:
                handled[ok] += 1
            else:
                self._count(labels, context, None)
            return resp

        return handle

    def _stream(self, behavior: Callable[..., Any], labels: tuple[str, str, str]) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(behavior):
            return self._unary(behavior, labels)  # a coroutine writing with context.write()

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:  # type: ignore[type-arg]
            try:
                async for resp in behavior(request, context):
                    yield resp
            except BaseException as exc:
                self._count(labels, context, exc)
                raise
            self._count(labels, context, None)

        return handle
