"""router/gateway/server.py in one process: HttpGateway on 127.0.0.1 over
stand-in servicers (the router's own ones are exercised in
tests/integration/test_gateway.py), driven by an aiohttp client. Errors are
raised the way the router's servicers raise them (router.etcd_errors'
abort_with on the context), so the mapping under test is the real one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import pytest

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from router.etcd_errors import EtcdError, abort_with
from router.gateway import GatewayContext, HttpGateway, parse_listen_url


class Kv(rpc_pb2_grpc.KVServicer):
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.contexts: list[Any] = []
        self.range_error: EtcdError | None = None

    async def Put(self, request: epb.PutRequest, context: Any) -> epb.PutResponse:  # noqa: N802
        self.contexts.append(context)
        if not request.key:
            await abort_with(context, EtcdError("empty_key"))
        self.data[request.key] = request.value
        out = epb.PutResponse()
        out.header.revision = len(self.data) + 1
        return out

    async def Range(self, request: epb.RangeRequest, context: Any) -> epb.RangeResponse:  # noqa: N802
        self.contexts.append(context)
        if self.range_error is not None:
            await abort_with(context, self.range_error)
        out = epb.RangeResponse()
        for k, v in sorted(self.data.items()):
            if k == request.key:
                out.kvs.add(key=k, value=v, create_revision=2, mod_revision=2, version=1)
        out.count = len(out.kvs)
        return out

    async def Compact(self, request: epb.CompactionRequest, context: Any) -> epb.CompactionResponse:  # noqa: N802
        raise RuntimeError("boom")


class Watch(rpc_pb2_grpc.WatchServicer):
    """Like the router's WatchSession: ends when its request stream ends."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def Watch(self, request_iterator: AsyncIterator[epb.WatchRequest], context: Any) -> AsyncIterator[epb.WatchResponse]:  # noqa: N802
        try:
            async for req in request_iterator:
                assert req.WhichOneof("request_union") == "create_request"
                yield epb.WatchResponse(created=True)
                key = await self.events.get()
                resp = epb.WatchResponse()
                resp.events.add().kv.key = key
                yield resp
        finally:
            self.closed.set()


class Lease(rpc_pb2_grpc.LeaseServicer):
    async def LeaseKeepAlive(  # noqa: N802
        self, request_iterator: AsyncIterator[epb.LeaseKeepAliveRequest], context: Any
    ) -> AsyncIterator[epb.LeaseKeepAliveResponse]:
        async for req in request_iterator:
            yield epb.LeaseKeepAliveResponse(ID=req.ID, TTL=60)

    async def LeaseRevoke(self, request: epb.LeaseRevokeRequest, context: Any) -> epb.LeaseRevokeResponse:  # noqa: N802
        await abort_with(context, EtcdError("lease_not_found"))
        raise AssertionError


class Maintenance(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self) -> None:
        self.alarms: list[int] = []

    async def Alarm(self, request: epb.AlarmRequest, context: Any) -> epb.AlarmResponse:  # noqa: N802
        out = epb.AlarmResponse()
        for a in self.alarms:
            out.alarms.add(memberID=101, alarm=a)
        return out

    async def Snapshot(self, request: epb.SnapshotRequest, context: Any) -> AsyncIterator[epb.SnapshotResponse]:  # noqa: N802
        await abort_with(context, EtcdError("no_leader"))
        yield epb.SnapshotResponse()  # pragma: no cover


class Env:
    def __init__(self, gw: HttpGateway, url: str, session: aiohttp.ClientSession) -> None:
        self.gw = gw
        self.url = url
        self.http = session
        self.kv: Kv = gw._servicers["etcdserverpb.KV"]
        self.watch: Watch = gw._servicers["etcdserverpb.Watch"]
        self.maint: Maintenance = gw._servicers["etcdserverpb.Maintenance"]

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body or {})
        async with self.http.post(self.url + path, data=data, **kw) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text), r
            except ValueError:
                return r.status, text, r


async def with_gateway(test: Callable[[Env], Awaitable[None]]) -> None:
    servicers = {
        "etcdserverpb.KV": Kv(),
        "etcdserverpb.Watch": Watch(),
        "etcdserverpb.Lease": Lease(),
        "etcdserverpb.Maintenance": Maintenance(),
    }
    gw = HttpGateway(servicers, server_version="3.5.13", request_timeout_s=2.0, shutdown_s=0.1)
    urls = await gw.start(["http://127.0.0.1:0"])
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            await test(Env(gw, urls[0], session))
    finally:
        await gw.stop()


async def test_start_reports_the_bound_port_and_refuses_https_without_tls() -> None:
    gw = HttpGateway({}, server_version="3.5.13")
    urls = await gw.start(["http://127.0.0.1:0", "http://127.0.0.1:0"])
    try:
        assert len(urls) == 2 and all(u.startswith("http://127.0.0.1:") and not u.endswith(":0") for u in urls)
    finally:
        await gw.stop()
    with pytest.raises(ValueError, match="TLS"):
        await HttpGateway({}, server_version="3.5.13").start(["https://127.0.0.1:0"])
    for bad in ("127.0.0.1:2379", "http://127.0.0.1", "unix:///x", "http://127.0.0.1:1/v3"):
        with pytest.raises(ValueError):
            parse_listen_url(bad)


async def test_put_then_range_in_etcds_json() -> None:
    async def t(env: Env) -> None:
        status, body, r = await env.post("/v3/kv/put", {"key": "Zm9v", "value": "YmFy"})
        assert status == 200 and r.headers["Content-Type"] == "application/json"
        assert body == {"header": {"revision": "2"}}
        status, body, _ = await env.post("/v3/kv/range", {"key": "Zm9v"})
        assert status == 200
        assert body == {
            "kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "2", "version": "1", "value": "YmFy"}],
            "count": "1",
        }
        status, body, _ = await env.post("/v3beta/kv/range", {"key": "Zm9v"})  # etcd rewrites /v3beta/ to /v3/
        assert status == 200 and body["count"] == "1"

    await with_gateway(t)


async def test_servicer_errors_come_back_in_grpc_gateways_shape_and_status() -> None:
    async def t(env: Env) -> None:
        status, body, r = await env.post("/v3/kv/put", {"value": "YmFy"})
        assert status == 400 and r.headers["Content-Type"] == "application/json"
        assert body == {"error": "etcdserver: key is not provided", "message": "etcdserver: key is not provided", "code": 3}
        status, body, _ = await env.post("/v3/kv/lease/revoke", {"ID": "1234"})
        assert (status, body["code"], body["error"]) == (404, 5, "etcdserver: requested lease not found")
        env.kv.range_error = EtcdError("no_leader")
        status, body, _ = await env.post("/v3/kv/range", {"key": "Zm9v"})
        assert (status, body["code"], body["message"]) == (503, 14, "etcdserver: no leader")
        status, body, _ = await env.post("/v3/kv/compaction", {"revision": "1"})  # the servicer raised
        assert (status, body["code"]) == (500, 2) and "boom" in body["error"]

    await with_gateway(t)


async def test_a_service_the_router_lacks_answers_as_its_grpc_server_does() -> None:
    async def t(env: Env) -> None:
        status, body, _ = await env.post("/v3/auth/status", {})
        assert (status, body) == (501, {"error": "Method not found!", "message": "Method not found!", "code": 12})
        # A servicer that leaves a method to the generated default: set_code(UNIMPLEMENTED) and raise
        status, body, _ = await env.post("/v3/kv/deleterange", {"key": "Zm9v"})
        assert (status, body["code"], body["error"]) == (501, 12, "Method not implemented!")

    await with_gateway(t)


async def test_bad_bodies_methods_and_paths() -> None:
    async def t(env: Env) -> None:
        status, body, _ = await env.post("/v3/kv/range", b'{"key": 5}')
        assert status == 400 and body["code"] == 3
        status, body, _ = await env.post("/v3/kv/range", b"")  # an empty body is the empty request
        assert status == 200
        async with env.http.get(env.url + "/v3/kv/range") as r:
            assert (r.status, await r.text()) == (405, "Method Not Allowed\n")
        status, body, _ = await env.post("/v3/kv/nothing", {})
        assert (status, body) == (404, "Not Found\n")
        async with env.http.get(env.url + "/nothing") as r:
            assert (r.status, await r.text()) == (404, "404 page not found\n")
        status, body, _ = await env.post("/v3/kv/range", {"key": "Zm9v"}, headers={"Grpc-Timeout": "10X"})
        assert (status, body["code"], body["error"]) == (400, 3, "invalid grpc-timeout: 10X")

    await with_gateway(t)


async def test_metadata_and_deadline_reach_the_servicer() -> None:
    async def t(env: Env) -> None:
        headers = {"Grpc-Metadata-Max-Staleness-Ms": "250", "Grpc-Timeout": "3S"}
        status, _, _ = await env.post("/v3/kv/range", {"key": "Zm9v"}, headers=headers)
        assert status == 200
        ctx: GatewayContext = env.kv.contexts[-1]
        assert ("max-staleness-ms", "250") in ctx.invocation_metadata()
        left = ctx.time_remaining()
        assert left is not None and 0 < left <= 3
        await env.post("/v3/kv/range", {"key": "Zm9v"})
        assert env.kv.contexts[-1].time_remaining() is None  # the servicer's own default applies, as over gRPC

    await with_gateway(t)


async def test_cors_headers_and_options() -> None:
    async def t(env: Env) -> None:
        async with env.http.options(env.url + "/v3/kv/range") as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        _, _, r = await env.post("/v3/kv/range", {"key": "Zm9v"})
        assert r.headers["Access-Control-Allow-Headers"] == "accept, content-type, authorization"

    await with_gateway(t)


async def test_watch_streams_a_result_per_response_and_stays_open_after_the_body() -> None:
    async def t(env: Env) -> None:
        async with env.http.post(env.url + "/v3/watch", data=json.dumps({"create_request": {"key": "Zm9v"}})) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            first = await asyncio.wait_for(r.content.readline(), 10)
            assert json.loads(first) == {"result": {"created": True}}
            # The body has ended: the stand-in (like WatchSession) would stop if its request stream ended.
            env.watch.events.put_nowait(b"foo")
            second = await asyncio.wait_for(r.content.readline(), 10)
            assert json.loads(second) == {"result": {"events": [{"kv": {"key": "Zm9v"}}]}}
            assert not env.watch.closed.is_set()
        # the client went away: the servicer's stream is closed
        await asyncio.wait_for(env.watch.closed.wait(), 10)

    await with_gateway(t)


async def test_keepalive_answers_each_request_of_the_body_then_ends() -> None:
    async def t(env: Env) -> None:
        status, body, _ = await env.post("/v3/lease/keepalive", {"ID": "7"})
        assert (status, body) == (200, {"result": {"ID": "7", "TTL": "60"}})  # one object: json-parseable whole
        async with env.http.post(env.url + "/v3/lease/keepalive", data=b'{"ID": 1}\n{"ID": 2}') as r:
            lines = (await r.read()).splitlines()
        assert [json.loads(x)["result"]["ID"] for x in lines] == ["1", "2"]

    await with_gateway(t)


async def test_a_stream_that_fails_before_its_first_response_gets_the_error_status_and_chunk() -> None:
    async def t(env: Env) -> None:
        async with env.http.post(env.url + "/v3/maintenance/snapshot", data=b"{}") as r:
            assert r.status == 503
            assert json.loads(await r.read()) == {
                "error": {"grpc_code": 14, "http_code": 503, "message": "etcdserver: no leader", "http_status": "Service Unavailable"}
            }
        status, body, _ = await env.post("/v3/watch", b'{"create_request": {"key": 5}}')
        assert (status, body["code"]) == (500, 2)  # etcd's streaming handlers: the decoder's error as UNKNOWN

    await with_gateway(t)


async def test_version_and_health() -> None:
    async def t(env: Env) -> None:
        async with env.http.get(env.url + "/version") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert await r.read() == b'{"etcdserver":"3.5.13","etcdcluster":"3.5.0"}'
        async with env.http.get(env.url + "/health") as r:
            assert (r.status, await r.read()) == (200, b'{"health":"true","reason":""}')
        env.maint.alarms = [epb.NOSPACE]
        async with env.http.get(env.url + "/health") as r:
            assert (r.status, await r.read()) == (503, b'{"health":"false","reason":"ALARM NOSPACE"}\n')
        async with env.http.get(env.url + "/health?exclude=NOSPACE") as r:
            assert r.status == 200
        env.maint.alarms = []
        env.kv.range_error = EtcdError("timeout")
        async with env.http.get(env.url + "/health?serializable=true") as r:
            assert (r.status, await r.read()) == (503, b'{"health":"false","reason":"RANGE ERROR:etcdserver: request timed out"}\n')
        assert env.kv.contexts[-1] is not None
        async with env.http.post(env.url + "/health") as r:
            assert (r.status, r.headers["Allow"]) == (405, "GET")

    await with_gateway(t)


def test_grpc_status_codes_become_their_numbers() -> None:
    async def t() -> None:
        ctx = GatewayContext()
        with pytest.raises(Exception) as err:
            await ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "x")
        assert (err.value.code, err.value.details) == (9, "x")  # type: ignore[attr-defined]

    asyncio.run(t())
