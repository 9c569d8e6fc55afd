"""Registering the generated etcd servicers so that a request the router
cannot decode is answered as etcd (grpc-go) answers it.

grpcio's server turns a request deserializer's exception into UNKNOWN
"Unexpected DecodeError"; grpc-go's server answers
``status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)``.
``add_servicer`` runs a generated ``add_*Servicer_to_server`` against a
stand-in server to take its method table, then registers every method with a
request deserializer that turns ``google.protobuf.message.DecodeError`` into
an ``Undecodable`` sentinel, and a behavior that answers the sentinel with
INTERNAL ``unmarshal_error_text(err)`` before the servicer sees it:

    add_servicer(server, rpc_pb2_grpc.add_KVServicer_to_server, KvServicer(...))

Unary requests are checked before the servicer is called; a request stream
is checked message by message as the servicer reads it, and the RPC is
aborted at the first message that does not decode.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from router.grpcstats import HandledCounter

UNMARSHAL_PREFIX = "grpc: error unmarshalling request"


def unmarshal_error_text(err: BaseException) -> str:
    return f"{UNMARSHAL_PREFIX}: {err}"


class Undecodable:
    """What a checked request deserializer returns for bytes it cannot decode."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Undecodable({self.error!r})"


def checked_deserializer(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def checked(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as err:
            return Undecodable(err)

    return checked


class _Aborted:
    """The AbortError of a request stream's undecodable message, so the
    handler's own task can raise it even if the stream was read elsewhere."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


async def _abort(context: grpc.aio.ServicerContext, bad: Undecodable) -> None:
    await context.abort(grpc.StatusCode.INTERNAL, unmarshal_error_text(bad.error))


def _refuse_sync(context: Any, bad: Undecodable) -> None:
    # A sync stream reader runs in a worker thread, where context.abort cannot be awaited: the code is
    # INTERNAL, but grpcio prefixes the text with "Unexpected <class 'RuntimeError'>: ". The router has none.
    context.set_code(grpc.StatusCode.INTERNAL)
    context.set_details(unmarshal_error_text(bad.error))
    raise RuntimeError(unmarshal_error_text(bad.error))


def _unary_request(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def agen(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _abort(context, request)
            inner = behavior(request, context)
            try:
                async for item in inner:
                    yield item
            finally:
                await inner.aclose()

        return agen
    if inspect.iscoroutinefunction(behavior):

        async def coro(request: Any, context: Any) -> Any:
            if isinstance(request, Undecodable):
                await _abort(context, request)
            return await behavior(request, context)

        return coro

    # A sync behavior: in the router only a generated UNIMPLEMENTED default (set_code and raise), so it
    # runs inline on the event loop, where an undecodable request can be aborted with grpc-go's text.
    async def sync_coro(request: Any, context: Any) -> Any:
        if isinstance(request, Undecodable):
            await _abort(context, request)
        return behavior(request, context)

    async def sync_agen(request: Any, context: Any) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await _abort(context, request)
        for item in behavior(request, context):
            yield item

    return sync_agen if streaming else sync_coro


async def _checked_stream(requests: AsyncIterator[Any], context: Any, aborted: _Aborted) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            try:
                await _abort(context, request)
            except BaseException as err:  # the AbortError: kept for the handler's task
                aborted.error = err
                raise
        yield request


def _checked_sync_stream(requests: Iterator[Any], context: Any) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Undecodable):
            _refuse_sync(context, request)
        yield request


def _stream_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def agen(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            aborted = _Aborted()
            inner = behavior(_checked_stream(requests, context, aborted), context)
            try:
                async for item in inner:
                    if aborted.error is not None:
                        break
                    yield item
            except Exception:
                if aborted.error is None:
                    raise
            finally:
                await inner.aclose()
            if aborted.error is not None:
                raise aborted.error

        return agen
    if inspect.iscoroutinefunction(behavior):

        async def coro(requests: AsyncIterator[Any], context: Any) -> Any:
            aborted = _Aborted()
            try:
                result = await behavior(_checked_stream(requests, context, aborted), context)
            except Exception:
                if aborted.error is None:
                    raise
                result = None
            if aborted.error is not None:
                raise aborted.error
            return result

        return coro

    def sync(requests: Iterator[Any], context: Any) -> Any:
        return behavior(_checked_sync_stream(requests, context), context)

    return sync


def checked_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` with a request deserializer that never raises DecodeError and
    a behavior that answers an undecodable request as grpc-go does."""
    if handler.request_deserializer is None:
        return handler
    des = checked_deserializer(handler.request_deserializer)
    ser = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_stream_request(handler.stream_stream), des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_stream_request(handler.stream_unary), des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_unary_request(handler.unary_stream, True), des, ser)
    return grpc.unary_unary_rpc_method_handler(_unary_request(handler.unary_unary, False), des, ser)


class _MethodTable:
    """A stand-in server for a generated add_*Servicer_to_server: keeps its method table."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, Mapping[str, grpc.RpcMethodHandler]]] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same methods arrive through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self.tables.append((service, handlers))


def method_table(add_to_server: Callable[[Any, Any], None], servicer: Any) -> list[tuple[str, dict[str, grpc.RpcMethodHandler]]]:
    """The (service, {method: handler}) tables a generated add_*Servicer_to_server registers."""
    capture = _MethodTable()
    add_to_server(servicer, capture)
    if not capture.tables:
        raise TypeError(f"{getattr(add_to_server, '__name__', add_to_server)} registered no method table")
    return [(service, dict(handlers)) for service, handlers in capture.tables]


def add_servicer(server: Any, add_to_server: Callable[[Any, Any], None], servicer: Any, *, handled: HandledCounter | None = None) -> None:
    """Register `servicer` on `server` as `add_to_server` would, every method
    checked, and with `handled` every call counted (grpc_server_handled_total)
    without a server interceptor."""
    for service, handlers in method_table(add_to_server, servicer):
        checked = {name: checked_handler(h) for name, h in handlers.items()}
        if handled is not None:
            checked = handled.counted(service, checked)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, checked),))
        server.add_registered_method_handlers(service, checked)
