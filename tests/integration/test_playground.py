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
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flotilla.raftcluster import REPO

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
        assert pg.out.seen[0].startswith("flotilla playground: starting 3 placement, 3 stores, 1 router(s), 2 shards")
        ctl = Ctl(pg.endpoint)

        # put / get / prefix / del
        assert ctl.out("put", "greeting", "hello") == ["OK"]
        assert ctl.out("get", "greeting") == ["greeting", "hello"]

        # every process's metrics URL in playground.json, each answering /metrics
        metrics_urls = json.loads((data_dir / "playground.json").read_text())["metrics_urls"]
        assert sorted(metrics_urls) == ["p1", "p2", "p3", "r1", "s1", "s2", "s3"]
        for name, url in metrics_urls.items():
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
                body = resp.read()
            assert (b"flotilla_router_shards" if name.startswith("r") else b"etcd_server_has_leader 1.0") in body, name
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

        # member list and endpoint status: the routers
        members = ctl.out("member", "list")
        assert len(members) == 1 and "router1" in members[0] and f"http://{pg.endpoint}" in members[0] and "started" in members[0]
        status = ctl.out("endpoint", "status")
        assert pg.endpoint in status[0] and "3.5.13" in status[0]
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
