"""etcd's HTTP/JSON gateway on aiohttp, in the router's event loop.

``HttpGateway`` serves router/gateway/codec.py's routes by calling the very
servicer objects the router registers on its gRPC server (KvServicer,
WatchServicer, LeaseServicer, ClusterServicer, MaintenanceServicer,
LockServicer, ElectionServicer), in
process, with a ``GatewayContext`` in place of grpc.aio's ServicerContext:
what a servicer aborts with (``context.abort(code, details)``) is what the
HTTP client gets, in grpc-gateway's JSON shape, so gRPC and HTTP answer with
the same codes and texts. A service the router does not serve (Auth)
answers UNIMPLEMENTED "Method not found!", as its gRPC server does.

    gw = HttpGateway({"etcdserverpb.KV": kv_servicer, ...}, server_version="3.5.13")
    urls = await gw.start(["http://127.0.0.1:0"])   # the bound URLs, port 0 resolved
    ...
    await gw.stop()

Streams: Watch and LeaseKeepAlive read their requests from the body as it
arrives (JSON objects one after another). etcd's Watch server keeps serving
after the client's half-close (its recvLoop returns nil on EOF), while the
router's WatchSession ends with its request stream, so for Watch the
gateway holds the request stream open until the HTTP client goes away (the
handler is cancelled on disconnect). LeaseKeepAlive ends with the body, as
etcd's does: one request in the body, one response out.

TLS: ``ssl_context`` serves https:// URLs (etcd serves the gateway over TLS
when its client URLs are https); the router passes its client certificate's
context (rpc/tls.py, re-read on change); an https:// URL without one is
refused.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

import grpc
from aiohttp import web
from google.protobuf.message import Message

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router.gateway import codec
from router.gateway.codec import Route

log = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_S = 0.5
BODY_CHUNK_BYTES = 64 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024  # above etcd's request limit (1.5 MiB), so the servicer answers "too large"

_CORS = {
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}


class GatewayAbort(Exception):
    """What a servicer aborted the call with (its gRPC code number and details)."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _code_number(code: Any) -> int:
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return int(code)


class GatewayContext:
    """The part of grpc.aio.ServicerContext the router's servicers use."""

    def __init__(self, metadata: Sequence[tuple[str, str]] = (), timeout_s: float | None = None) -> None:
        self._metadata = tuple(metadata)
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout_s is None else loop.time() + timeout_s
        self._code: int | None = None
        self._details = ""

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise GatewayAbort(_code_number(code), details)

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_code(self, code: Any) -> None:
        self._code = _code_number(code)

    def set_details(self, details: str) -> None:
        self._details = details

    def abort_of_unimplemented_default(self) -> GatewayAbort:
        """A generated servicer default (set_code, set_details, raise NotImplementedError) as an abort."""
        return GatewayAbort(self._code if self._code is not None else codec.UNKNOWN, self._details)

    def peer(self) -> str:
        return "gateway"


def _unexpected(exc: BaseException) -> GatewayAbort:
    # grpcio's answer for an exception a handler lets out: UNKNOWN "Unexpected <class>: <text>"
    return GatewayAbort(codec.UNKNOWN, f"Unexpected {type(exc)}: {exc}")


def parse_listen_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s)://host:port URL (port 0: any free port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: want http://host:port or https://host:port")
    if not parts.hostname or parts.port is None:
        raise ValueError(f"{url!r}: want a host and a port (0: any free port)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{url!r}: no path or query, only scheme://host:port")
    return parts.scheme, parts.hostname, parts.port


class HttpGateway:
    def __init__(
        self,
        servicers: Mapping[str, Any],
        *,
        server_version: str,
        request_timeout_s: float = 7.0,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_s: float = DEFAULT_SHUTDOWN_S,
    ) -> None:
        self._servicers = dict(servicers)
        self._server_version = server_version
        self._timeout_s = request_timeout_s
        self._ssl = ssl_context
        self._shutdown_s = shutdown_s
        self._runner: web.AppRunner | None = None
        self.urls: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_cors])
        app.router.add_route("*", "/health", self._health)
        app.router.add_route("*", "/version", self._version)
        app.router.add_route("*", "/{path:v3(beta)?/.*}", self._v3)
        app.router.add_route("*", "/{path:.*}", _not_found)
        return app

    async def start(self, urls: Iterable[str]) -> list[str]:
        """Listen on every URL; the bound URLs (port 0 resolved)."""
        listen = [parse_listen_url(u) for u in urls]
        for scheme, _, _ in listen:
            if scheme == "https" and self._ssl is None:
                raise ValueError("https:// gateway URLs need TLS, which Flotilla does not configure yet (use http://)")
        runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=self._shutdown_s)
        await runner.setup()
        self._runner = runner
        try:
            for scheme, host, port in listen:
                sock = _bind(host, port)
                try:
                    site = web.SockSite(runner, sock, ssl_context=self._ssl if scheme == "https" else None)
                    await site.start()
                except BaseException:
                    sock.close()
                    raise
                bound = sock.getsockname()[1]
                shown = f"[{host}]" if ":" in host else host
                self.urls.append(f"{scheme}://{shown}:{bound}")
        except BaseException:
            await self.stop()
            raise
        log.info("serving etcd's HTTP/JSON gateway on %s", ", ".join(self.urls))
        return list(self.urls)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- /health and /version -------------------------------------------------------------------
    async def _version(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return _method_not_allowed("GET")
        return web.Response(body=codec.version_body(self._server_version), content_type=codec.JSON_CONTENT_TYPE)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return _method_not_allowed("GET")
        excluded = [v for v in request.query.getall("exclude", []) if v]
        healthy, body = await self.health(excluded, serializable=request.query.get("serializable") == "true")
        if healthy:
            return web.Response(body=body, content_type="text/plain", charset="utf-8")
        return _text_error(body.decode(), 503)

    async def health(self, excluded: Iterable[str] = (), *, serializable: bool = False) -> tuple[bool, bytes]:
        """etcd's /health check through the servicers: the alarms, then a Range
        (codec.health). (healthy, body). Also the metrics listener's /health."""
        alarms: list[int] = []
        try:
            got = await self.call("etcdserverpb.Maintenance", "Alarm", epb.AlarmRequest(action=epb.AlarmRequest.GET))
            alarms = [a.alarm for a in got.alarms]
        except GatewayAbort as exc:
            log.debug("/health: alarms not read: %s", exc.details)
        range_error: str | None = None
        try:
            req = epb.RangeRequest(key=b"\0", range_end=b"\0", limit=1, keys_only=True, serializable=serializable)
            await self.call("etcdserverpb.KV", "Range", req)
        except GatewayAbort as exc:
            range_error = exc.details
        return codec.health(alarms, excluded, range_error)

    # -- calls ----------------------------------------------------------------------------------
    async def call(self, service: str, method: str, request: Message, context: GatewayContext | None = None) -> Any:
        """One unary call of a servicer, as its gRPC server would make it; raises GatewayAbort."""
        ctx = context or GatewayContext()
        handler = self._handler(service, method)
        try:
            if inspect.iscoroutinefunction(handler):
                return await handler(request, ctx)
            return handler(request, ctx)  # a generated default: set_code, set_details, raise
        except GatewayAbort:
            raise
        except NotImplementedError:
            raise ctx.abort_of_unimplemented_default() from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("gateway: %s/%s failed", service, method)
            raise _unexpected(exc) from exc

    def _handler(self, service: str, method: str) -> Callable[..., Any]:
        servicer = self._servicers.get(service)
        if servicer is None:
            raise GatewayAbort(codec.UNIMPLEMENTED, codec.GRPC_METHOD_NOT_FOUND)
        return getattr(servicer, method)  # type: ignore[no-any-return]

    def _context(self, request: web.Request) -> GatewayContext:
        timeout_s = None
        if "Grpc-Timeout" in request.headers:
            timeout_s = codec.grpc_timeout_s(request.headers["Grpc-Timeout"])
        return GatewayContext(tuple(codec.metadata_of(request.headers.items())), timeout_s)

    async def _v3(self, request: web.Request) -> web.StreamResponse:
        path = codec.route_path(request.path)
        route = codec.ROUTES.get(path)
        if route is None:
            return _text_error("Not Found", 404)
        if request.method != "POST":
            return _text_error("Method Not Allowed", 405)
        try:
            ctx = self._context(request)
        except codec.DecodeError as exc:
            return _error(codec.INVALID_ARGUMENT, str(exc))
        if route.service not in self._servicers:
            return _error(codec.UNIMPLEMENTED, codec.GRPC_METHOD_NOT_FOUND)
        if route.streaming:
            return await self._stream(request, route, ctx)
        try:
            message = codec.decode_request(await request.read(), route.request_type)
        except codec.DecodeError as exc:
            return _error(codec.INVALID_ARGUMENT, str(exc))
        try:
            response = await self.call(route.service, route.method, message, ctx)
        except GatewayAbort as exc:
            return _error(exc.code, exc.details)
        return web.Response(body=codec.encode_message(response), content_type=codec.JSON_CONTENT_TYPE)

    async def _stream(self, request: web.Request, route: Route, ctx: GatewayContext) -> web.StreamResponse:
        handler = self._handler(route.service, route.method)
        if route.client_streaming:
            body = _BodyRequests(request, route.request_type)
            try:
                first = await body.first()
            except codec.DecodeError as exc:
                return _error(codec.UNKNOWN, str(exc))  # etcd's streaming handlers return the decoder's error as is
            requests: Any = body.requests(first, hold_open=route.method == "Watch")
        else:
            try:
                requests = codec.decode_request(await request.read(), route.request_type)
            except codec.DecodeError as exc:
                return _error(codec.INVALID_ARGUMENT, str(exc))
        out = web.StreamResponse(headers={"Content-Type": codec.JSON_CONTENT_TYPE})
        out.enable_chunked_encoding()
        responses: Any = None
        try:
            responses = handler(requests, ctx)
            async for response in responses:
                if not out.prepared:
                    await out.prepare(request)
                await out.write(codec.stream_result(response))  # one chunk per response (clients split on them)
        except GatewayAbort as exc:
            await self._end_with_error(request, out, exc)
        except NotImplementedError:
            await self._end_with_error(request, out, ctx.abort_of_unimplemented_default())
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("gateway: %s/%s failed", route.service, route.method)
            await self._end_with_error(request, out, _unexpected(exc))
        finally:
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()
        if not out.prepared:
            await out.prepare(request)
        await out.write_eof()
        return out

    @staticmethod
    async def _end_with_error(request: web.Request, out: web.StreamResponse, exc: GatewayAbort) -> None:
        if not out.prepared:
            out.set_status(codec.http_status(exc.code))
            await out.prepare(request)
        await out.write(codec.stream_error(exc.code, exc.details))


class _BodyRequests:
    """A streaming call's requests, decoded from the body as it arrives."""

    def __init__(self, request: web.Request, request_type: type[Message]) -> None:
        self._content = request.content
        self._type = request_type
        self._values = codec.JsonValueStream()
        self._ready: list[Any] = []
        self._eof = False

    async def _next(self) -> Message | None:
        while not self._ready:
            if self._eof:
                return None
            chunk = await self._content.readany()
            if not chunk:
                self._eof = True
                self._ready.extend(self._values.close())
            else:
                self._ready.extend(self._values.feed(chunk))
        return codec.decode_value(self._ready.pop(0), self._type)

    async def first(self) -> Message | None:
        return await self._next()

    async def requests(self, first: Message | None, *, hold_open: bool) -> AsyncIterator[Message]:
        if first is not None:
            yield first
            while True:
                try:
                    message = await self._next()
                except codec.DecodeError as exc:
                    log.debug("gateway: a streamed request did not decode (%s): the request stream ends", exc)
                    message = None
                if message is None:
                    break
                yield message
        if hold_open:
            await asyncio.Event().wait()  # until the client goes away (the handler is cancelled)


@web.middleware
async def _cors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """etcd's accessController: CORS headers (its default --cors is "*"); OPTIONS answers 200."""
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=200)
    else:
        response = await handler(request)
    if not response.prepared:
        response.headers.update(_CORS)
    return response


def _error(code: int, message: str) -> web.Response:
    return web.Response(status=codec.http_status(code), body=codec.error_body(code, message), content_type=codec.JSON_CONTENT_TYPE)


def _text_error(text: str, status: int) -> web.Response:
    """Go's http.Error: the text and a newline, as text/plain."""
    return web.Response(
        status=status,
        text=text + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _method_not_allowed(allow: str) -> web.Response:
    r = _text_error("Method Not Allowed", 405)
    r.headers["Allow"] = allow
    return r


async def _not_found(request: web.Request) -> web.StreamResponse:
    return _text_error("404 page not found", 404)  # Go's http.NotFound


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"gateway: cannot listen on {host}:{port}: {exc}") from exc
    return sock
