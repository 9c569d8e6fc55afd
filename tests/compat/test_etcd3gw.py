"""The PyPI `etcd3gw` client (OpenStack's client of etcd's HTTP/JSON
gateway) against a router's gateway (--listen-client-http-urls), joined to
placement (3 placement servers, 3 store nodes: flotilla/cluster.py, so
leases work). etcd3gw finds the API path from GET /version (>= 3.4: /v3/),
reads errors by HTTP status and a watch stream chunk by chunk, so this
checks the shapes a real client depends on.

etcd3gw is in the test extra; the module skips, saying so, only if it
cannot be imported. Every wait is bounded: the watch iterator (which blocks
without a timeout) is drained by a thread into a queue read with a deadline.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from flotilla.cluster import Cluster
from tests.integration.routerproc import cluster_with_router
from flotilla.storecluster import wait_until

pytestmark = pytest.mark.integration

etcd3gw = pytest.importorskip("etcd3gw", reason="etcd3gw is not installed (it is in the test extra: pip install -e '.[test]')")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("etcd3gw")
    with cluster_with_router(Cluster(tmp, initial_shards=2), tmp, "--listen-client-http-urls", "http://127.0.0.1:0") as router:
        info = router.read_ready()
        assert info is not None
        url = urlsplit(info["gateway_urls"][0])
        cl = etcd3gw.client(host=url.hostname, port=url.port, timeout=20)
        wait_until(lambda: cl.get("warmup") == [], timeout=60, what="the gateway serving a get")
        yield cl

def test_it_discovers_the_v3_api_from_version(client: Any) -> None:
    assert client.api_path == "/v3/"
    assert client.status()["version"] == "3.5.13"
    assert client.members()


def test_put_get_prefix_and_delete(client: Any) -> None:
    assert client.put("py/a", "1") is True
    assert client.put("py/b", "2") is True
    client.put("pz", "3")
    assert client.get("py/a") == [b"1"]
    got = client.get_prefix("py/")
    assert [(v, meta["key"]) for v, meta in got] == [(b"1", b"py/a"), (b"2", b"py/b")]
    assert client.delete("py/a") is True
    assert client.get("py/a") == []
    assert client.delete("py/nothing") is False  # etcd3gw reads "deleted" absent (0) as nothing deleted
    assert client.delete_prefix("py/") is True
    assert client.get_prefix("py/") == []


def test_create_and_replace_are_txns(client: Any) -> None:
    assert client.create("{cas}k", "v1") is True
    assert client.create("{cas}k", "v2") is False  # exists: the txn's compare fails
    assert client.replace("{cas}k", "v1", "v3") is True
    assert client.replace("{cas}k", "v1", "v4") is False
    assert client.get("{cas}k") == [b"v3"]


def test_raw_transaction(client: Any) -> None:
    from etcd3gw.utils import _encode

    client.put("{tx}a", "old")
    txn = {
        "compare": [{"key": _encode("{tx}a"), "result": "EQUAL", "target": "VALUE", "value": _encode("old")}],
        "success": [{"request_put": {"key": _encode("{tx}a"), "value": _encode("new")}}],
        "failure": [],
    }
    assert client.transaction(txn)["succeeded"] is True
    assert client.get("{tx}a") == [b"new"]


def test_lease_ttl_keys_refresh_and_revoke(client: Any) -> None:
    lease = client.lease(ttl=60)
    assert lease.id > 0
    client.put("leased/k", "v", lease=lease)
    assert 0 < lease.ttl() <= 60
    assert lease.keys() == [b"leased/k"]
    assert lease.refresh() == 60
    assert lease.revoke() is True
    wait_until(lambda: client.get("leased/k") == [], timeout=30, what="the leased key deleted by the revoke")


def test_watch_sees_puts_made_while_it_is_open(client: Any) -> None:
    revision = int(client.status()["header"]["revision"])
    events, cancel = client.watch_prefix("seen/", start_revision=revision + 1)
    got: queue.Queue[Any] = queue.Queue()

    def drain() -> None:
        for ev in events:
            got.put(ev)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        client.put("seen/x", "1")
        client.delete("seen/x")
        first = got.get(timeout=20)
        second = got.get(timeout=20)
        assert (first["kv"]["key"], first["kv"]["value"]) == (b"seen/x", b"1")
        assert "type" not in first  # a PUT: etcd's gateway leaves the zero enum out
        assert second["type"] == "DELETE" and second["kv"]["key"] == b"seen/x"
    finally:
        cancel()
        t.join(timeout=10)


def test_errors_reach_the_client_by_http_status(client: Any) -> None:
    from etcd3gw import exceptions

    with pytest.raises(exceptions.Etcd3Exception) as err:
        client.post(client.get_url("/kv/put"), json={"value": "eA=="})
    assert str(err.value) == "Bad Request"  # the reason of HTTP 400 (INVALID_ARGUMENT)
    assert json.loads(err.value.detail_text) == {
        "error": "etcdserver: key is not provided",
        "message": "etcdserver: key is not provided",
        "code": 3,
    }
    # UNAVAILABLE (503) is etcd3gw's ConnectionFailedError: leases without placement would be one; here,
    # a revoked lease's keepalive is not an error (TTL 0), and an unknown lease's revoke is 404
    with pytest.raises(exceptions.Etcd3Exception) as err:
        client.post(client.get_url("/kv/lease/revoke"), json={"ID": 12345})
    assert json.loads(err.value.detail_text)["code"] == 5
