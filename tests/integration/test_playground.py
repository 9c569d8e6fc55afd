"""`flotilla playground`: one command, a whole cluster of processes, driven
with the real etcdctl; SIGINT stops it (exit 0); run again on the same data
directory, it comes back with its data.

Every wait has a deadline: the playground's stdout is read line by line
against one, etcdctl runs are bounded, `etcdctl watch` runs in the background
and its lines are read against one.
"""

from __future__ import annotations

import json
import urllib.request
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flotilla.raftcluster import REPO
from shard.slots import slot_of

pytestmark = pytest.mark.integration

ETCDCTL = shutil.which("etcdctl")
if ETCDCTL is None:
    pytest.skip("etcdctl is not installed (Debian: apt-get install etcd-client)", allow_module_level=True)

READY_TIMEOUT_S = 90


class Lines:
    """A process's stdout, line by line, read with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def next(self, timeout: float) -> str | None:
        try:
            line = self._q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s; so far: {self.seen}") from None
        if line is not None:
            self.seen.append(line)
        return line

    def rest(self, timeout: float) -> list[str]:
        """The lines left, once the process closed its stdout."""
        out: list[str] = []
        while (line := self.next(timeout)) is not None:
            out.append(line)
        return out

    def until(self, wanted: str, timeout: float) -> list[str]:
        """Lines up to and including `wanted` (the whole line)."""
        out: list[str] = []
        while True:
            line = self.next(timeout)
            if line is None:
                raise AssertionError(f"stdout ended before {wanted!r}: {self.seen}")
            out.append(line)
            if line == wanted:
                return out


class Playground:
    def __init__(self, data_dir: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flotilla", "playground", "--client-port", "0", "--data-dir", str(data_dir), "--shards", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.out = Lines(self.proc)
        lines = self.out.until("ready", READY_TIMEOUT_S)
        self.endpoint = next(line.split()[1] for line in lines if line.startswith("endpoints:"))
        self.endpoints = self.endpoint.split(",")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=60)
            self.out.rest(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            return code
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
            raise AssertionError(f"the playground did not stop on SIGINT: {self.out.seen}") from None


def _shard_leaders(dashboard_url: str) -> tuple[int, dict[int, tuple[list[list[int]], int]]]:
    """(slot count, {shard: (its slot ranges, its leader node)}) from the dashboard's state."""
    with urllib.request.urlopen(f"{dashboard_url}api/state", timeout=10) as resp:
        st = json.loads(resp.read())
    return int(st["slot_count"]), {int(sh["id"]): (sh["slots"], int(sh["leader"])) for sh in st["shards"]}


def _key_in(ranges: list[list[int]], slot_count: int) -> str:
    """A key whose slot one of the ranges holds."""
    for i in range(100_000):
        key = f"local/{i}"
        slot = slot_of(key.encode(), slot_count)
        if any(lo <= slot < hi for lo, hi in ranges):
            return key
    raise AssertionError(f"no key in slots {ranges}")


def _local_calls(metrics_url: str) -> float:
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    m = re.search(r"^flotilla_router_local_calls_total (\S+)$", body, re.M)
    assert m is not None, body[:500]
    return float(m.group(1))


class Ctl:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.env = {**os.environ, "ETCDCTL_API": "3"}

    def argv(self, *args: str) -> list[str]:
        assert ETCDCTL is not None
        return [ETCDCTL, "--endpoints", self.endpoint, "--dial-timeout", "5s", "--command-timeout", "15s", *args]

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.argv(*args), input=stdin, capture_output=True, text=True, timeout=30, env=self.env)
        if check and p.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
        return p

    def out(self, *args: str, stdin: str | None = None) -> list[str]:
        return self.run(*args, stdin=stdin).stdout.splitlines()


def test_playground_serves_etcdctl_stops_on_sigint_and_restarts_with_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    pg = Playground(data_dir)
    try:
        assert pg.out.seen[0].startswith("flotilla playground: starting 3 placement, 3 stores, 0 standalone router(s), 2 shards")
        assert len(pg.endpoints) == 3  # every store serves etcd clients
        ctl = Ctl(pg.endpoint)

        # put / get / prefix / del
        assert ctl.out("put", "greeting", "hello") == ["OK"]
        assert ctl.out("get", "greeting") == ["greeting", "hello"]

        # every process's metrics URL in playground.json, each answering /metrics
        metrics_urls = json.loads((data_dir / "playground.json").read_text())["metrics_urls"]
        assert sorted(metrics_urls) == ["p1", "p2", "p3", "s1", "s2", "s3"]
        for name, url in metrics_urls.items():
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
                body = resp.read()
            assert b"etcd_server_has_leader 1.0" in body, name
            if name.startswith("s"):  # a store serves etcd clients too
                assert b"flotilla_router_shards 2.0" in body, name
        # the web dashboard (p1's metrics listener), printed and in playground.json: its document lists the shards
        dashboard_url = json.loads((data_dir / "playground.json").read_text())["dashboard_url"]
        assert dashboard_url == f"{metrics_urls['p1']}/dashboard/" and f"dashboard: {dashboard_url}" in pg.out.seen
        with urllib.request.urlopen(f"{dashboard_url}api/state", timeout=10) as resp:
            assert len(json.loads(resp.read())["shards"]) == 2
        for k, v in (("app/a", "1"), ("app/b", "2"), ("app/c", "3")):
            ctl.run("put", k, v)
        assert ctl.out("get", "--prefix", "app/", "--keys-only") == ["app/a", "", "app/b", "", "app/c", ""]
        assert ctl.out("del", "app/c") == ["1"]

        # watch (in the background, read against a deadline), from the revision of a put made
        # before it started: history first, then a live event
        rev = json.loads(ctl.run("put", "app/w", "0", "-w", "json").stdout)["header"]["revision"]
        w = subprocess.Popen(
            ctl.argv("watch", "--prefix", "app/", "--rev", str(rev)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ctl.env
        )
        wl = Lines(w)
        try:
            assert [wl.next(20) for _ in range(3)] == ["PUT", "app/w", "0"]
            ctl.run("put", "app/w", "1")
            assert [wl.next(20) for _ in range(3)] == ["PUT", "app/w", "1"]
        finally:
            w.terminate()
            w.wait(timeout=10)
            wl.rest(10)
            assert w.stdout is not None
            w.stdout.close()

        # leases: grant, put --lease, timetolive, keep-alive --once, list, revoke (deletes the key)
        grant = ctl.out("lease", "grant", "60")
        assert grant[0].startswith("lease ") and grant[0].endswith(" granted with TTL(60s)"), grant
        lease = grant[0].split()[1]
        assert ctl.out("put", "--lease", lease, "session", "me") == ["OK"]
        ttl = ctl.out("lease", "timetolive", "--keys", lease)[0]
        assert ttl.startswith(f"lease {lease} granted with TTL(60s), remaining(") and "attached keys([session])" in ttl, ttl
        assert ctl.out("lease", "keep-alive", "--once", lease) == [f"lease {lease} keepalived with TTL(60)"]
        assert lease in ctl.out("lease", "list")
        assert ctl.out("lease", "revoke", lease) == [f"lease {lease} revoked"]
        assert ctl.out("get", "session") == []
        p = ctl.run("lease", "timetolive", lease)
        assert f"lease {lease} already expired" in p.stdout
        p = ctl.run("put", "--lease", lease, "session", "again", check=False)
        assert p.returncode != 0 and "requested lease not found" in p.stderr

        # txn
        txn = ctl.out("txn", stdin='value("greeting") = "hello"\n\nput greeting hi\n\nput greeting nope\n\n')
        assert txn == ["SUCCESS", "", "OK"]

        # every store serves etcd clients: a put for a shard the store leads is a direct call
        # into that shard (its router's local calls count it), any other is forwarded to the
        # leader's node; a linearizable get is served by the store's own replica (a follower
        # asks its leader for the read index), so it is a direct call on every store
        for _ in range(3):
            slot_count, before_map = _shard_leaders(dashboard_url)
            keys = {sid: _key_in(slots, slot_count) for sid, (slots, _) in before_map.items()}
            before = {name: _local_calls(metrics_urls[name]) for name in ("s1", "s2", "s3")}
            expected = dict.fromkeys(before, 0)
            for i, ep in enumerate(pg.endpoints):
                name, node = f"s{i + 1}", 101 + i
                for sid, (_, leader) in before_map.items():
                    assert Ctl(ep).out("put", keys[sid], name) == ["OK"]
                    assert Ctl(ep).out("get", keys[sid], "--print-value-only") == [name]
                    expected[name] += (leader == node) + 1
            if _shard_leaders(dashboard_url)[1] != before_map:
                continue  # placement moved a leader meanwhile: count again
            assert {n: _local_calls(metrics_urls[n]) - v for n, v in before.items()} == expected
            assert sum(expected.values()) == 2 + 6  # each shard's leader is one of the stores; 6 gets
            break
        else:
            raise AssertionError("the shards' leaders kept moving")

        # member list and endpoint status: the stores, each serving etcd clients
        members = sorted(ctl.out("member", "list"))
        assert len(members) == 3, members
        for i, (member, ep) in enumerate(zip(members, pg.endpoints, strict=True)):
            assert f"store{i + 1}" in member and f"http://{ep}" in member and "started" in member, members
        status = ctl.out("endpoint", "status")
        assert len(status) == 3 and all("3.5.13" in line for line in status), status
        for ep in pg.endpoints:
            assert any(ep in line for line in status), status
    finally:
        code = pg.stop()
    assert code == 0, pg.out.seen
    assert pg.out.seen[-1] == "flotilla playground: stopped"

    pg = Playground(data_dir)  # the same cluster, its data kept
    try:
        assert pg.out.seen[0].startswith("flotilla playground: restarting 3 placement, 3 stores")
        ctl = Ctl(pg.endpoint)
        assert ctl.out("get", "greeting") == ["greeting", "hi"]
        assert ctl.out("get", "--prefix", "app/") == ["app/a", "1", "app/b", "2", "app/w", "1"]
        assert ctl.out("put", "after", "restart") == ["OK"]
    finally:
        code = pg.stop()
    assert code == 0, pg.out.seen


def test_playground_refuses_a_different_shape_on_an_existing_data_dir(tmp_path: Path) -> None:
    (tmp_path / "playground.json").write_text('{"placement": 3, "stores": 3, "shards": 4, "placement_ports": [], "store_ports": [], "slots": 1024}')
    p = subprocess.run(
        [sys.executable, "-m", "flotilla", "playground", "--client-port", "0", "--data-dir", str(tmp_path), "--stores", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
    )
    assert p.returncode == 1 and "has --stores 3" in p.stderr, p.stderr
