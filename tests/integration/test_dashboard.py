"""The web dashboard (issue #19), looked at in headless Chromium as a person
would, and checked against the cluster.

One `flotilla playground` for the module (3 placement servers, 3 stores, a
router, 4 shards); its dashboard_url (playground.json) is opened in one
Chromium kept open on it, driven over the DevTools protocol
(tests/integration/chromium.py): the page refreshes itself, and the tests
read what it shows while the cluster changes under it:

- the shards, their slots and their leaders, as placement's map has them;
- an operator started with `flotilla ctl transfer-leader`, with its
  progress, until it succeeded and the shard's new leader shows, without
  reloading the page;
- the heat map's hottest write rows naming the shard a burst of puts went to;
- a follower placement server's dashboard (`chromium --dump-dom`): the
  leader's document, fetched from the leader.

Skips, saying why, when chromium is not installed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import grpc
import pytest

from flotilla.procs import wait_until
from flotilla.raftcluster import REPO
from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from shard.slots import slot_of
from tests.integration.chromium import CHROMIUM, MISSING, Browser, Page, dump_dom

pytestmark = pytest.mark.integration

if CHROMIUM is None:
    pytest.skip(MISSING, allow_module_level=True)

READY_TIMEOUT_S = 90

SHARDS_JS = """JSON.stringify({
  updated: Number(document.getElementById('status').dataset.updated || 0),
  status: document.getElementById('status').dataset.state,
  shards: [...document.querySelectorAll('#shards tbody tr')].map(tr => ({
    id: Number(tr.dataset.shard), leader: Number(tr.dataset.leader), cells: [...tr.cells].map(td => td.innerText.trim())})),
})"""

OPERATOR_JS = """(() => {
  const tr = document.querySelector('#operators tr[data-operator="%d"]');
  return tr ? JSON.stringify({kind: tr.dataset.kind, shard: Number(tr.dataset.shard), state: tr.dataset.state,
    progress: tr.dataset.progress, bar: [tr.querySelector('progress').value, tr.querySelector('progress').max],
    cells: [...tr.cells].map(td => td.innerText.trim())}) : null;
})()"""

HOTTEST_JS = """JSON.stringify({
  samples: Number(document.getElementById('heat-writes').dataset.samples || 0),
  rows: Number(document.getElementById('heat-writes').dataset.rows || 0),
  writes: [...document.querySelectorAll('#hottest li[data-metric="writes"]')].map(li => ({
    shards: li.dataset.shards.split(',').filter(Boolean).map(Number), slots: li.dataset.slots, rate: Number(li.dataset.rate), text: li.innerText})),
})"""


class _Lines:
    """The playground's stdout, line by line, read against a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._q.put(line.rstrip("\n"))
            self._q.put(None)

        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()

    def until(self, wanted: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {wanted!r} within {timeout}s; so far: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the playground's stdout ended before {wanted!r}: {self.seen}")
            self.seen.append(line)
            if line == wanted:
                return self.seen


@dataclass
class Env:
    tmp: Path
    proc: subprocess.Popen[str]
    lines: _Lines
    shape: dict[str, Any]
    browser: Browser
    endpoint: str

    @property
    def dashboard_url(self) -> str:
        return str(self.shape["dashboard_url"])

    def placement_map(self) -> ppb.ClusterMap:
        """Placement's map, linearizable, from any placement server."""
        last: Exception | None = None
        for port in self.shape["placement_ports"]:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                try:
                    resp = placement_pb2_grpc.PlacementStub(ch).GetMap(ppb.GetMapRequest(linearizable=True), timeout=10)
                    return resp.map
                except grpc.RpcError as exc:
                    last = exc
        raise AssertionError(f"no placement server answered GetMap: {last}")

    def state(self, name: str) -> dict[str, Any]:
        """The dashboard's JSON document as placement server `name` (p1, p2, ...) serves it."""
        with urllib.request.urlopen(f"{self.shape['metrics_urls'][name]}/dashboard/api/state", timeout=10) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("dashboard")
    data_dir = tmp / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotilla", "playground", "--client-port", "0", "--data-dir", str(data_dir), "--shards", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)},
    )
    lines = _Lines(proc)
    browser = None
    try:
        seen = lines.until("ready", READY_TIMEOUT_S)
        shape = json.loads((data_dir / "playground.json").read_text())
        # The playground prints the dashboard's URL and records it in playground.json.
        assert f"dashboard: {shape['dashboard_url']}" in seen, seen
        assert shape["dashboard_url"] == f"{shape['metrics_urls']['p1']}/dashboard/"
        endpoint = next(line.split()[1] for line in seen if line.startswith("endpoints:")).split(",")[0]
        browser = Browser(shape["dashboard_url"], tmp / "chromium")
        yield Env(tmp, proc, lines, shape, browser, endpoint)
    finally:
        if browser is not None:
            browser.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        lines.pump.join(timeout=10)  # it reads to the end of the closed pipe
        assert proc.stdout is not None
        proc.stdout.close()


def _shown(value: str | None) -> dict[str, Any]:
    assert value is not None
    out: dict[str, Any] = json.loads(value)
    return out


def _slots_text(d: Any) -> str:
    return ", ".join(f"{r.start}–{r.end - 1}" for r in d.slots)


async def test_the_page_shows_placements_shards_and_leaders(env: Env) -> None:
    async with Page.connect(env.browser.page_ws_url()) as page:
        try:
            # Leader balancing may still move leaders just after the bootstrap: the page and a fresh
            # map must come to agree.
            want: dict[int, Any] = {}
            m = ppb.ClusterMap()

            def agrees(v: str | None) -> bool:
                nonlocal m, want
                m = env.placement_map()
                want = {s.descriptor.shard_id: s.descriptor for s in m.shards}
                if v is None:
                    return False
                got = json.loads(v)["shards"]
                return {s["id"]: s["leader"] for s in got} == {sid: d.leader_node_id for sid, d in want.items()}

            shown = _shown(await page.wait_for(SHARDS_JS, agrees, timeout_s=20, what="the map's shards and leaders"))
            assert len(want) == 4
            assert shown["status"] == "live"
            for row in shown["shards"]:
                d = want[row["id"]]
                # What a person reads in the row: id, slots, the replicas (leader starred), the leader.
                assert row["cells"][0] == str(d.shard_id)
                assert row["cells"][1].startswith(_slots_text(d)), row["cells"]
                assert row["cells"][2].split() == [f"{r.node_id}{'★' if r.node_id == d.leader_node_id else ''}" for r in d.replicas]
                assert row["cells"][3] == str(d.leader_node_id)
            # Nodes: every store with its replica and leader counts, as the map has them.
            nodes = json.loads(await page.eval(
                "JSON.stringify([...document.querySelectorAll('#nodes tbody tr')].map(tr => [Number(tr.dataset.node), tr.dataset.state, "
                "Number(tr.dataset.replicas), Number(tr.dataset.leaders)]))"
            ))
            stores = {n.node_id for n in m.nodes if n.kind == ppb.STORE}
            for nid, state, replicas, leaders in nodes:
                if nid in stores:
                    assert state == "up"
                    assert replicas == sum(any(r.node_id == nid for r in d.replicas) for d in want.values())
                    assert leaders == sum(d.leader_node_id == nid for d in want.values())
            assert stores <= {n[0] for n in nodes}
        except BaseException:
            await page.screenshot(env.tmp / "shards.png")
            raise


async def test_an_operator_from_ctl_shows_with_its_progress_and_the_new_leader_follows(env: Env) -> None:
    async with Page.connect(env.browser.page_ws_url()) as page:
        try:
            # From the node leading the most shards to the voter leading the fewest: the counts keep
            # their shape (4 shards on 3 stores: 2, 1, 1), so leader balancing leaves the result be.
            m = env.placement_map()
            counts: dict[int, int] = {n.node_id: 0 for n in m.nodes if n.kind == ppb.STORE}
            for s in m.shards:
                counts[s.descriptor.leader_node_id] += 1
            giver = max(counts, key=lambda n: (counts[n], -n))
            d = min((s.descriptor for s in m.shards if s.descriptor.leader_node_id == giver), key=lambda d: d.shard_id)
            target = min((r.node_id for r in d.replicas if r.node_id != giver and not r.learner), key=lambda n: (counts[n], n))
            before = _shown(await page.eval(SHARDS_JS))["updated"]
            out = subprocess.run(
                [sys.executable, "-m", "flotilla", "ctl", "--endpoints", env.endpoint, "transfer-leader", str(d.shard_id), str(target), "-o", "json"],
                capture_output=True, text=True, timeout=60, check=False,
            )
            assert out.returncode == 0, out.stderr
            op_id = int(json.loads(out.stdout)["id"])

            # The page, never reloaded, shows the operator: running with its step to do, or already done.
            seen: list[tuple[str, str]] = []

            def done(v: str | None) -> bool:
                if v is None:
                    return False
                o = json.loads(v)
                seen.append((o["state"], o["progress"]))
                return bool(o["state"] == "success")

            o = _shown(await page.wait_for(OPERATOR_JS % op_id, done, timeout_s=30, what=f"operator {op_id} succeeded"))
            assert o["kind"] == "transfer-leader" and o["shard"] == d.shard_id
            assert o["progress"] == "1/1" and o["bar"] == [1, 1]
            assert o["cells"][:4] == [str(op_id), "transfer-leader", str(d.shard_id), "success"]
            assert o["cells"][5] == f"transfer-leader({target})"
            assert set(seen) <= {("running", "0/1"), ("success", "1/1")}, seen
            # As ctl reports it.
            ops = subprocess.run(
                [sys.executable, "-m", "flotilla", "ctl", "--endpoints", env.endpoint, "operators", "-o", "json"],
                capture_output=True, text=True, timeout=60, check=False,
            )
            assert ops.returncode == 0, ops.stderr
            ctl_op = next(x for x in json.loads(ops.stdout) if int(x["id"]) == op_id)
            assert (ctl_op["state"], ctl_op.get("stepIndex", 0), len(ctl_op["steps"])) == ("success", 1, 1)

            # The shard's new leader shows in its row, as placement's map has it.
            def moved(v: str | None) -> bool:
                return v is not None and any(s["id"] == d.shard_id and s["leader"] == target for s in json.loads(v)["shards"])

            shown = _shown(await page.wait_for(SHARDS_JS, moved, timeout_s=20, what=f"shard {d.shard_id} led by {target}"))
            assert shown["updated"] > before  # refreshed by itself
            row = next(s for s in shown["shards"] if s["id"] == d.shard_id)
            assert row["cells"][3] == str(target)
            wait_until(
                lambda: next(s.descriptor.leader_node_id for s in env.placement_map().shards if s.descriptor.shard_id == d.shard_id) == target,
                timeout=10, what="the map's leader",
            )
        except BaseException:
            await page.screenshot(env.tmp / "operator.png")
            raise


async def test_the_heat_map_shows_where_the_writes_go(env: Env) -> None:
    m = env.placement_map()
    key = b"dashboard/hot"
    slot = slot_of(key, int(env.shape["slots"]))
    shard = next(s.descriptor.shard_id for s in m.shards if any(r.start <= slot < r.end for r in s.descriptor.slots))
    async with Page.connect(env.browser.page_ws_url()) as page:
        try:
            stop = threading.Event()

            def writer() -> None:
                with grpc.insecure_channel(env.endpoint) as ch:
                    kv = rpc_pb2_grpc.KVStub(ch)
                    for i in range(3000):  # bounded: stopped as soon as the page shows it
                        if stop.is_set():
                            return
                        kv.Put(epb.PutRequest(key=key, value=str(i).encode()), timeout=10)

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            try:
                def hot(v: str | None) -> bool:
                    return v is not None and bool(json.loads(v)["writes"]) and json.loads(v)["writes"][0]["shards"] == [shard]

                shown = _shown(await page.wait_for(HOTTEST_JS, hot, timeout_s=30, what=f"shard {shard} hottest for writes"))
            finally:
                stop.set()
                t.join(timeout=30)
            assert shown["samples"] > 0 and shown["rows"] == 256
            top = shown["writes"][0]
            lo, hi = (int(x) for x in top["slots"].split("-"))
            assert top["rate"] > 0 and f"shard {shard}" in top["text"]
            owned = next(s.descriptor.slots for s in m.shards if s.descriptor.shard_id == shard)
            assert any(r.start <= lo and hi < r.end for r in owned), (top, owned)
            await page.screenshot(env.tmp / "heat.png")
        except BaseException:
            await page.screenshot(env.tmp / "heat.png")
            raise


class _Rows(HTMLParser):
    """The shard rows and the header of a dumped dashboard."""

    def __init__(self) -> None:
        super().__init__()
        self.shards: dict[int, int] = {}
        self._in_placement = False
        self.placement = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-shard") and a.get("data-leader") is not None:
            self.shards[int(a["data-shard"] or 0)] = int(a["data-leader"] or 0)
        self._in_placement = a.get("id") == "placement"

    def handle_data(self, data: str) -> None:
        if self._in_placement:
            self.placement += data


def test_a_follower_serves_the_leaders_dashboard(env: Env) -> None:
    leader = env.state("p1")["leader_id"]
    follower = next(f"p{i}" for i in (1, 2, 3) if i != leader)
    doc = env.state(follower)
    assert doc["from_leader"] is True and doc["served_by"] == leader and doc["proxied_by"] == int(follower[1:])
    assert "warning" not in doc
    html = dump_dom(f"{env.shape['metrics_urls'][follower]}/dashboard/", env.tmp / "dump-profile")
    rows = _Rows()
    rows.feed(html)
    m = env.placement_map()
    assert rows.shards == {s.descriptor.shard_id: s.descriptor.leader_node_id for s in m.shards}
    assert f"served by {follower[1:]}, from the leader" in rows.placement, rows.placement
