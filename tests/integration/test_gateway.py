"""etcd's HTTP/JSON gateway of a real router process (--listen-client-http-urls
http://127.0.0.1:0, the bound URL read from its ready file), joined to
placement (3 placement servers, 3 store nodes: flotilla/cluster.py, so
leases work), driven with Debian's curl as etcd's gateway docs drive it.

Skips, saying why, when curl is not installed (scripts/test.sh installs it
when it can). Every curl is bounded in time; the streamed watch runs in the
background and its lines are read against a deadline.
"""

from __future__ import annotations

import base64
import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from flotilla.cluster import Cluster
from tests.integration.routerproc import cluster_with_router
from flotilla.storecluster import wait_until
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

pytestmark = pytest.mark.integration

CURL = shutil.which("curl")
if CURL is None:
    pytest.skip("curl is not installed (Debian: apt-get install curl; scripts/test.sh does it as root)", allow_module_level=True)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


class Curl:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, str, str]:
        """(HTTP status, content type, body text)."""
        assert CURL is not None
        argv = [CURL, "-sS", "-X", method, "-w", "\n%{http_code} %{content_type}", "--max-time", "20", self.base + path]
        if body is not None:
            argv += ["-d", body if isinstance(body, str) else json.dumps(body)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        text, _, last = p.stdout.rpartition("\n")
        status, _, ctype = last.partition(" ")
        return int(status), ctype, text

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, text = self.call("POST", path, body if body is not None else {})
        return status, json.loads(text)

    def ok(self, path: str, body: Any = None) -> Any:
        status, out = self.post(path, body)
        assert status == 200, (path, status, out)
        return out


class StreamedWatch:
    """`curl -N /v3/watch -d <create_request>` in the background; lines read with a deadline."""

    def __init__(self, base: str, create: dict[str, Any]) -> None:
        assert CURL is not None
        argv = [CURL, "-sS", "-N", "-X", "POST", base + "/v3/watch", "-d", json.dumps({"create_request": create})]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self, timeout: float = 20) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"the watch stream ended (curl exited {self.proc.poll()})"
        return json.loads(line)  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._pump_thread.join(timeout=10)  # curl is gone: its stdout ends
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Env:
    def __init__(self, curl: Curl, grpc_address: str) -> None:
        self.curl = curl
        self.channel = grpc.insecure_channel(grpc_address)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("gateway")
    with cluster_with_router(Cluster(tmp, initial_shards=2), tmp, "--listen-client-http-urls", "http://127.0.0.1:0") as router:
        info = router.read_ready()
        assert info is not None
        (url,) = info["gateway_urls"]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        curl = Curl(url)
        wait_until(lambda: curl.call("POST", "/v3/kv/range", {"key": b64("warmup")})[0] == 200, timeout=60, what="the gateway serving a range")
        e = Env(curl, router.address)
        yield e
        e.channel.close()

def test_put_get_prefix_and_delete(env: Env) -> None:
    c = env.curl
    put = c.ok("/v3/kv/put", {"key": b64("gw/a"), "value": b64("1")})
    assert int(put["header"]["revision"]) > 0 and isinstance(put["header"]["revision"], str)
    c.ok("/v3/kv/put", {"key": b64("gw/b"), "value": b64("2")})
    c.ok("/v3/kv/put", {"key": b64("gx"), "value": b64("3")})
    got = c.ok("/v3/kv/range", {"key": b64("gw/a")})
    assert [(unb64(kv["key"]), unb64(kv["value"])) for kv in got["kvs"]] == [("gw/a", "1")]
    assert got["count"] == "1" and got["kvs"][0]["version"] == "1"
    prefix = c.ok("/v3/kv/range", {"key": b64("gw/"), "range_end": b64("gw0")})  # '/' + 1 == '0'
    assert [unb64(kv["key"]) for kv in prefix["kvs"]] == ["gw/a", "gw/b"]
    deleted = c.ok("/v3/kv/deleterange", {"key": b64("gw/"), "range_end": b64("gw0"), "prev_kv": True})
    assert deleted["deleted"] == "2" and sorted(unb64(kv["key"]) for kv in deleted["prev_kvs"]) == ["gw/a", "gw/b"]
    assert "kvs" not in c.ok("/v3/kv/range", {"key": b64("gw/a")})  # empty repeated fields are left out


def test_txn_compare_and_swap(env: Env) -> None:
    c = env.curl
    c.ok("/v3/kv/put", {"key": b64("{t}k"), "value": b64("old")})
    txn = {
        "compare": [{"key": b64("{t}k"), "target": "VALUE", "result": "EQUAL", "value": b64("old")}],
        "success": [{"request_put": {"key": b64("{t}k"), "value": b64("new")}}],
        "failure": [{"request_range": {"key": b64("{t}k")}}],
    }
    first = c.ok("/v3/kv/txn", txn)
    assert first["succeeded"] is True and "response_put" in first["responses"][0]
    second = c.ok("/v3/kv/txn", txn)
    assert "succeeded" not in second  # false is the default: left out, as etcd's gateway does
    assert unb64(second["responses"][0]["response_range"]["kvs"][0]["value"]) == "new"


def test_lease_grant_put_with_lease_and_revoke(env: Env) -> None:
    c = env.curl
    grant = c.ok("/v3/lease/grant", {"TTL": 60})
    lease_id = grant["ID"]
    assert grant["TTL"] == "60" and int(lease_id) > 0
    c.ok("/v3/kv/put", {"key": b64("leased"), "value": b64("v"), "lease": lease_id})
    ttl = c.ok("/v3/kv/lease/timetolive", {"ID": lease_id, "keys": True})
    assert [unb64(k) for k in ttl["keys"]] == ["leased"] and ttl["grantedTTL"] == "60"
    assert lease_id in [lease["ID"] for lease in c.ok("/v3/lease/leases", {}).get("leases", [])]
    kept = c.ok("/v3/lease/keepalive", {"ID": lease_id})  # one request in the body: one result, then the end
    assert kept["result"]["ID"] == lease_id and kept["result"]["TTL"] == "60"
    c.ok("/v3/kv/lease/revoke", {"ID": lease_id})
    wait_until(lambda: "kvs" not in c.ok("/v3/kv/range", {"key": b64("leased")}), timeout=30, what="the leased key deleted by the revoke")
    # the error case: the lease is gone, as etcd answers it
    status, body = c.post("/v3/lease/revoke", {"ID": lease_id})
    assert (status, body) == (
        404,
        {"error": "etcdserver: requested lease not found", "message": "etcdserver: requested lease not found", "code": 5},
    )


def test_watch_streams_a_put_made_while_it_is_open(env: Env) -> None:
    c = env.curl
    w = StreamedWatch(c.base, {"key": b64("watched/"), "range_end": b64("watched0"), "prev_kv": True})
    try:
        created = w.next()
        assert created["result"]["created"] is True
        c.ok("/v3/kv/put", {"key": b64("watched/x"), "value": b64("1")})
        c.ok("/v3/kv/put", {"key": b64("watched/x"), "value": b64("2")})
        seen: list[dict[str, Any]] = []
        while len(seen) < 2:
            seen.extend(w.next()["result"].get("events", []))
        assert [(unb64(e["kv"]["key"]), unb64(e["kv"]["value"])) for e in seen] == [("watched/x", "1"), ("watched/x", "2")]
        assert "type" not in seen[0]  # PUT is the zero enum: left out
        assert unb64(seen[1]["prev_kv"]["value"]) == "1"
        c.ok("/v3/kv/deleterange", {"key": b64("watched/x")})
        deleted = w.next()["result"]["events"]
        assert deleted[0]["type"] == "DELETE"
    finally:
        w.stop()


def test_health_and_version(env: Env) -> None:
    c = env.curl
    assert c.call("GET", "/health") == (200, "text/plain; charset=utf-8", '{"health":"true","reason":""}')
    status, ctype, text = c.call("GET", "/version")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(text) == {"etcdserver": "3.5.13", "etcdcluster": "3.5.0"}
    status_resp = c.ok("/v3/maintenance/status", {})
    assert status_resp["version"] == json.loads(text)["etcdserver"]  # the version Status reports
    members = c.ok("/v3/cluster/member/list", {})["members"]
    assert members and members[0]["clientURLs"]


def test_errors_have_grpc_gateways_shape_and_the_grpc_servers_codes(env: Env) -> None:
    c = env.curl
    status, ctype, text = c.call("POST", "/v3/kv/put", {"value": b64("no key")})
    assert (status, ctype) == (400, "application/json")
    assert json.loads(text) == {"error": "etcdserver: key is not provided", "message": "etcdserver: key is not provided", "code": 3}
    # Auth is served by both, alike; and an auth call that etcd refuses is refused alike
    got = eg.AuthStub(env.channel).AuthStatus(epb.AuthStatusRequest(), timeout=10)
    status, body = c.post("/v3/auth/status", {})
    assert status == 200 and body.get("enabled", False) is False and not got.enabled
    with pytest.raises(grpc.RpcError) as err:
        eg.AuthStub(env.channel).Authenticate(epb.AuthenticateRequest(name="nobody", password="x"), timeout=10)
    status, body = c.post("/v3/auth/authenticate", {"name": "nobody", "password": "x"})
    assert status == 400
    assert body == {"error": err.value.details(), "message": err.value.details(), "code": err.value.code().value[0]}  # type: ignore[attr-defined]
    assert c.call("GET", "/v3/kv/range")[:2] == (405, "text/plain; charset=utf-8")


def test_the_playground_serves_the_gateway_prints_it_and_records_it(tmp_path: Path) -> None:
    import os
    import signal
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)}
    argv = [sys.executable, "-m", "flotilla", "playground", "--client-port", "0", "--data-dir", str(tmp_path), "--shards", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    seen: list[str] = []
    try:
        while not seen or seen[-1] != "ready":
            line = lines.get(timeout=90)
            assert line is not None, f"the playground ended before ready: {seen}"
            seen.append(line)
        printed = next(line.split()[1] for line in seen if line.startswith("gateway:"))
        recorded = json.loads((tmp_path / "playground.json").read_text())["gateway_urls"]
        assert recorded == printed.split(",") and len(recorded) == 3  # one per store: each serves etcd clients
        printed_endpoints = next(line.split()[1] for line in seen if line.startswith("endpoints:"))
        assert json.loads((tmp_path / "playground.json").read_text())["endpoints"] == printed_endpoints.split(",")
        for i, url in enumerate(recorded):
            assert any(line.startswith(f"s{i + 1}: ") and url in line for line in seen)
            curl = Curl(url)
            assert curl.call("GET", "/health")[0] == 200
            curl.ok("/v3/kv/put", {"key": b64("pg"), "value": b64(str(i))})
            assert unb64(curl.ok("/v3/kv/range", {"key": b64("pg")})["kvs"][0]["value"]) == str(i)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        pumper.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
