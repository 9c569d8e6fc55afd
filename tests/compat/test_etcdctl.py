"""Real `etcdctl` (Debian's etcd-client) against a router over 3 store
processes: the commands people type, and what they print. The lease commands
run against a router following placement (3 placement servers, 3 store
nodes: flotilla/cluster.py), where leases live.

Skips, saying why, when etcdctl is not installed (scripts/test.sh installs
it when it can). Every subprocess is bounded in time; `etcdctl watch` runs in
the background and its stdout is read line by line against a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import queue
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from flotilla.cluster import Cluster
from flotilla.router_main import RouterProcess
from flotilla.storecluster import StoreCluster, wait_until
from router import slots

pytestmark = pytest.mark.integration

ETCDCTL = shutil.which("etcdctl")
SHARDS = 4

if ETCDCTL is None:
    pytest.skip(
        "etcdctl is not installed (Debian: apt-get install etcd-client; scripts/test.sh does it as root)",
        allow_module_level=True,
    )


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

    def json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.run(*args, "-w", "json").stdout)


class Watcher:
    """`etcdctl watch ...` (or another long-running command) in the
    background; lines read with a deadline."""

    def __init__(self, ctl: Ctl, *args: str, command: str = "watch") -> None:
        self.proc = subprocess.Popen(ctl.argv(command, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ctl.env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read(self, n: int, timeout: float = 20) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"etcdctl watch printed only {out} within {timeout}s") from None
            if line is None:
                raise AssertionError(f"etcdctl watch exited ({self.proc.poll()}) after {out}")
            out.append(line)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctl]:
    tmp = tmp_path_factory.mktemp("etcdctl")
    stores = StoreCluster(tmp, shards=SHARDS, extra_args=["--watch-progress-ms", "200"])
    router: RouterProcess | None = None
    try:
        stores.start()
        wait_until(stores.all_shards_led, timeout=30, what="a leader for every shard")
        peers = ",".join(f"{n}={stores.nodes[n].address}" for n in stores.nodes)
        router = RouterProcess(tmp, ["-v", "--static-shards", str(SHARDS), "--store-peers", peers])
        router.start()
        c = Ctl(router.address)
        wait_until(lambda: c.run("get", "warmup", check=False).returncode == 0, timeout=30, what="etcdctl get through the router")
        yield c
    finally:
        if router is not None:
            router.stop()
            print(f"--- router log tail ---\n{router.log_tail(30)}")
        stores.stop()


def _first_event(w: Watcher, put: Callable[[], object], attempts: int = 20) -> list[str]:
    """The first event `etcdctl watch` (with no start revision) prints, putting
    again until it prints one: the watch starts in its own process, so a put
    may come before it is there. A watch that ends (canceled) fails at once."""
    for _ in range(attempts):
        put()
        try:
            return w.read(3, timeout=1)
        except AssertionError as exc:
            if "exited" in str(exc):
                raise
    raise AssertionError(f"etcdctl watch printed nothing after {attempts} puts")


def _shard(key: str, shards: int = SHARDS) -> int:
    """key's shard in a cluster of `shards` equal slot ranges (as the fixtures bootstrap them)."""
    slot = slots.slot_of(key.encode(), 1024)
    return next(i for i, r in enumerate(slots.equal_ranges(shards, 1024)) if slots.contains(r, slot))


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_get_on_a_never_written_shard_shows_a_revision(ctl: Ctl) -> None:
    """First in the module: one shard is written, not foo's. etcd's header
    revision is its current revision, never 0 after the first write;
    `etcdctl make-mirror` reads "foo" for its start revision and panics on 0."""
    fresh = "foo"
    written = next(k for k in (f"hdr/written{i}" for i in range(100)) if _shard(k) != _shard(fresh))
    put = ctl.json("put", written, "x")["header"]["revision"]
    assert put > 0
    j = ctl.json("get", fresh)
    assert "kvs" not in j and j["header"].get("revision", 0) > 0, j
    # Once its shard has closed the put's revision, the read shows the cluster's current revision, as etcd's does.
    wait_until(lambda: ctl.json("get", fresh)["header"].get("revision", 0) >= put, timeout=10, what="the cluster's revision")


ETCD_SERVER = "/usr/bin/etcd"  # Debian's etcd-server (scripts/test.sh and scripts/install_bench_deps.sh install it)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_make_mirror_into_a_local_etcd(ctl: Ctl, tmp_path: pathlib.Path) -> None:
    """`etcdctl make-mirror` from Flotilla into a real etcd: it takes its start
    revision from a get's header (and panicked on 0: "unexpected revision =
    0"), copies the prefix at that revision, then watches from it + 1."""
    if not os.access(ETCD_SERVER, os.X_OK):
        pytest.skip(f"{ETCD_SERVER} is not installed (Debian: apt-get install etcd-server; scripts/test.sh does it as root)")
    client, peer = _free_port(), _free_port()
    etcd_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    etcd_log = open(tmp_path / "etcd.log", "wb")  # noqa: SIM115 - closed after the process, below
    etcd = subprocess.Popen(
        [
            ETCD_SERVER, "--name", "mirror", "--data-dir", str(tmp_path / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"mirror={peer_url}",
        ],
        stdout=subprocess.DEVNULL, stderr=etcd_log,
    )
    dest = Ctl(f"127.0.0.1:{client}")
    mirror: Watcher | None = None
    try:
        wait_until(lambda: dest.run("endpoint", "health", check=False).returncode == 0, timeout=30, what="the local etcd healthy")
        # Second in the module: foo's shard is still never written (make-mirror's start revision comes from `get foo`).
        keys = sorted([k for k in (f"mm/{i}" for i in range(40)) if _shard(k) != _shard("foo")][:8])
        assert len({_shard(k) for k in keys}) >= 2
        for k in keys:
            ctl.out("put", k, f"v-{k}")
        mirror = Watcher(ctl, "--prefix", "mm/", f"127.0.0.1:{client}", command="make-mirror")
        expected = [x for k in keys for x in (k, f"v-{k}")]
        try:
            wait_until(lambda: dest.out("get", "mm/", "--prefix") == expected, timeout=30, what="the keys mirrored")
        except AssertionError:
            mirror.stop()
            raise AssertionError(f"make-mirror printed {list(mirror.lines.queue)}; etcd has {dest.out('get', 'mm/', '--prefix')}") from None
        # Then what it watches from the start revision + 1: a put, an overwrite, a delete.
        ctl.out("put", "mm/new", "n")
        ctl.out("put", keys[0], "changed")
        ctl.out("del", keys[1])
        expected = [x for k in sorted([*keys[2:], keys[0], "mm/new"]) for x in (k, "changed" if k == keys[0] else "n" if k == "mm/new" else f"v-{k}")]
        wait_until(lambda: dest.out("get", "mm/", "--prefix") == expected, timeout=30, what="the later writes mirrored")
        assert mirror.proc.poll() is None, mirror.read(1, timeout=1)
    finally:
        if mirror is not None:
            mirror.stop()
        etcd.terminate()
        try:
            etcd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            etcd.kill()
            etcd.wait(timeout=10)
        etcd_log.close()


def test_put_get_with_options(ctl: Ctl) -> None:
    keys = [f"app/{i:02d}" for i in range(12)]
    assert len({_shard(k) for k in keys}) >= 3
    for i, k in enumerate(keys):
        assert ctl.out("put", k, f"v{(i * 5) % 12:02d}") == ["OK"]
    assert ctl.out("get", "app/03") == ["app/03", "v03"]
    assert ctl.out("get", "app/", "--prefix", "--keys-only") == [x for k in keys for x in (k, "")]
    assert ctl.out("get", "app/", "--prefix", "--limit", "3") == ["app/00", "v00", "app/01", "v05", "app/02", "v10"]
    assert ctl.out("get", "app/", "--prefix", "--limit", "2", "--order", "DESCEND", "--keys-only") == ["app/11", "", "app/10", ""]
    by_value = ctl.out("get", "app/", "--prefix", "--sort-by", "VALUE", "--order", "ASCEND", "--print-value-only")
    assert by_value == sorted(f"v{(i * 5) % 12:02d}" for i in range(12))
    if "--count-only" in ctl.run("get", "--help").stdout:  # etcdctl 3.5+; Debian's 3.4 has no such flag
        assert ctl.json("get", "app/", "--prefix", "--count-only")["count"] == 12
    assert ctl.out("get", "app/10", "--from-key", "--keys-only")[:4] == ["app/10", "", "app/11", ""]
    j = ctl.json("get", "app/", "--prefix", "--limit", "2")
    assert [kv["key"] for kv in j["kvs"]] == [_b64("app/00"), _b64("app/01")] and j["more"] and j["count"] == 12
    rev = ctl.json("get", "app/05")["kvs"][0]["mod_revision"]
    ctl.out("put", "app/05", "changed")
    assert ctl.out("get", "app/05", "--rev", str(rev), "--print-value-only") == ["v01"]
    assert ctl.out("get", "app/05", "--print-value-only") == ["changed"]


def test_del_prefix_and_prev_kv(ctl: Ctl) -> None:
    for k in ("gone/a", "gone/b", "gone/c", "gone/d"):
        ctl.out("put", k, "x")
    assert ctl.out("del", "gone/a", "--prev-kv") == ["1", "gone/a", "x"]
    assert ctl.out("del", "gone/", "--prefix") == ["3"]
    assert ctl.out("get", "gone/", "--prefix") == []


def test_txn_interactive(ctl: Ctl) -> None:
    ctl.out("put", "{t1}/flag", "on")
    script = 'value("{t1}/flag") = "on"\n\nput {t1}/result yes\nget {t1}/flag\n\nput {t1}/result no\n\n'
    out = ctl.out("txn", stdin=script)
    assert out[0] == "SUCCESS" and "OK" in out and "{t1}/flag" in out
    assert ctl.out("get", "{t1}/result", "--print-value-only") == ["yes"]
    a, b = next((x, y) for x in ("ta", "tb", "tc") for y in ("td", "te", "tf") if _shard(x) != _shard(y))
    assert ctl.out("txn", stdin=f"\nput {a} 1\nput {b} 2\n\n\n") == ["SUCCESS", "", "OK", "", "OK"]
    assert [ctl.out("get", k, "--print-value-only") for k in (a, b)] == [["1"], ["2"]]


def test_watch_prefix_rev_prev_kv(ctl: Ctl) -> None:
    keys = [f"wt/{i}" for i in range(6)]
    assert len({_shard(k) for k in keys}) >= 2
    first = ctl.json("put", keys[0], "a")["header"]["revision"]
    ctl.out("put", keys[1], "a")
    w = Watcher(ctl, "wt/", "--prefix", "--rev", str(first), "--prev-kv")
    try:
        assert w.read(6) == ["PUT", keys[0], "a", "PUT", keys[1], "a"]
        ctl.out("put", keys[2], "b")
        ctl.out("put", keys[0], "c")
        ctl.out("del", keys[1])
        assert w.read(3) == ["PUT", keys[2], "b"]
        assert w.read(5) == ["PUT", keys[0], "a", keys[0], "c"]
        assert w.read(5) == ["DELETE", keys[1], "a", keys[1], ""]
    finally:
        w.stop()


def test_compaction(ctl: Ctl) -> None:
    r1 = ctl.json("put", "cp/k", "1")["header"]["revision"]
    r2 = ctl.json("put", "cp/k", "2")["header"]["revision"]
    assert ctl.out("compaction", str(r2)) == [f"compacted revision {r2}"]
    p = ctl.run("get", "cp/k", "--rev", str(r1), check=False)
    assert p.returncode != 0 and "required revision has been compacted" in p.stderr
    # A new watch with no start revision, on shards with no write above the
    # compaction (one key on every other shard, and a prefix): starts now and waits.
    others = [next(k for k in (f"cpw/{i}" for i in range(200)) if _shard(k) == s) for s in range(SHARDS) if s != _shard("cp/k")]
    watchers = [Watcher(ctl, k) for k in others] + [Watcher(ctl, "cpw/", "--prefix")]
    try:
        for w, k in [*zip(watchers, others), (watchers[-1], others[0])]:
            got = _first_event(w, lambda k=k: ctl.out("put", k, "after"))  # type: ignore[misc]
            assert got[0] == "PUT" and got[1] in (others if w is watchers[-1] else [k]) and got[2] == "after", got
    finally:
        for w in watchers:
            w.stop()


def test_member_list_and_endpoint_status_health(ctl: Ctl) -> None:
    members = ctl.out("member", "list")
    assert len(members) == 1 and f"http://{ctl.endpoint}" in members[0] and "started" in members[0]
    status = ctl.out("endpoint", "status")
    assert ctl.endpoint in status[0] and "3.5.13" in status[0]
    health = ctl.run("endpoint", "health")
    assert "is healthy" in health.stdout + health.stderr


def test_lease_commands_without_placement_say_so(ctl: Ctl) -> None:
    p = ctl.run("lease", "grant", "10", check=False)
    assert p.returncode != 0 and "placement" in p.stderr


PSHARDS = 2  # the shards of pctl's cluster


@pytest.fixture(scope="module")
def pctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctl]:
    """etcdctl against a router following placement's map (leases live there)."""
    tmp = tmp_path_factory.mktemp("etcdctl-placement")
    cluster = Cluster(tmp, initial_shards=PSHARDS)
    router: RouterProcess | None = None
    try:
        cluster.start()
        cluster.wait_bootstrapped()
        join = ",".join(cluster.placement.nodes[n].address for n in cluster.placement_ids)
        router = RouterProcess(tmp, ["-v", "--placement", join, "--node-id", "1001", "--name", "router-a"])
        router.start()
        c = Ctl(router.address)
        wait_until(lambda: c.run("get", "warmup", check=False).returncode == 0, timeout=30, what="etcdctl get through the router")
        yield c
    finally:
        if router is not None:
            router.stop()
            print(f"--- router log tail ---\n{router.log_tail(30)}")
        cluster.stop()


def test_lease_grant_put_timetolive_keepalive_list_revoke(pctl: Ctl) -> None:
    grant = pctl.out("lease", "grant", "60")
    assert len(grant) == 1 and grant[0].startswith("lease ") and grant[0].endswith(" granted with TTL(60s)"), grant
    lease = grant[0].split()[1]
    assert pctl.out("put", "--lease", lease, "ls/a", "1") == ["OK"]
    assert pctl.out("put", "--lease", lease, "ls/b", "2") == ["OK"]
    ttl = pctl.out("lease", "timetolive", "--keys", lease)
    assert ttl[0].startswith(f"lease {lease} granted with TTL(60s), remaining(") and "attached keys([ls/a ls/b])" in ttl[0], ttl
    assert pctl.out("lease", "keep-alive", "--once", lease) == [f"lease {lease} keepalived with TTL(60)"]
    listed = pctl.out("lease", "list")
    assert listed[0].startswith("found ") and lease in listed[1:]
    assert pctl.out("lease", "revoke", lease) == [f"lease {lease} revoked"]
    assert pctl.out("get", "--prefix", "ls/") == []
    assert pctl.out("lease", "timetolive", lease) == [f"lease {lease} already expired"]


def test_lease_errors_are_etcds(pctl: Ctl) -> None:
    p = pctl.run("lease", "revoke", "123abc", check=False)
    assert p.returncode != 0 and "requested lease not found" in p.stderr
    p = pctl.run("put", "--lease", "123abc", "k", "v", check=False)
    assert p.returncode != 0 and "requested lease not found" in p.stderr


def test_expired_lease_deletes_its_key(pctl: Ctl) -> None:
    lease = pctl.out("lease", "grant", "2")[0].split()[1]
    assert pctl.out("put", "--lease", lease, "ex/k", "v") == ["OK"]
    assert pctl.out("get", "ex/k") == ["ex/k", "v"]
    wait_until(lambda: pctl.out("get", "ex/k") == [], timeout=20, what="the key of an expired lease deleted")
    assert pctl.out("lease", "timetolive", lease) == [f"lease {lease} already expired"]


def test_member_list_through_placement_lists_the_registered_router(pctl: Ctl) -> None:
    members = pctl.out("member", "list")
    assert len(members) == 1 and members[0].startswith("3e9, started, router-a, ") and f"http://{pctl.endpoint}" in members[0]


def test_alarm_list_and_disarm(ctl: Ctl) -> None:
    """`etcdctl alarm list` shows every store node's NOSPACE alarm as etcd
    prints it, `endpoint status` lists it among its errors, a put is refused
    with etcd's text, and `etcdctl alarm disarm` clears them all (etcdctl
    has no command to raise one: the test arms them with Maintenance.Alarm)."""
    import grpc

    from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
    from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

    assert ctl.out("alarm", "list") == []
    members = (1, 2, 3)  # the module's store nodes
    with grpc.insecure_channel(ctl.endpoint) as channel:
        maint = eg.MaintenanceStub(channel)
        try:
            for m in members:
                maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.ACTIVATE, memberID=m, alarm=epb.NOSPACE), timeout=10)
            expected = [f"memberID:{m} alarm:NOSPACE " for m in members]
            assert ctl.out("alarm", "list") == expected
            status = ctl.out("endpoint", "status")[0]
            assert all(e.strip() in status for e in expected), status
            p = ctl.run("put", "alarmed", "x", check=False)
            assert p.returncode != 0 and "etcdserver: mvcc: database space exceeded" in p.stderr
            assert ctl.out("alarm", "disarm") == expected
        finally:
            maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.DEACTIVATE, memberID=0, alarm=epb.NOSPACE), timeout=10)
    assert ctl.out("alarm", "list") == []
    assert ctl.out("put", "alarmed", "x") == ["OK"]


def test_lock_runs_the_command_while_holding_the_lock(pctl: Ctl) -> None:
    """`etcdctl lock` is clientv3's Mutex: one Txn that creates the holder's
    key and reads the lock prefix's first holder, keys on different shards."""
    p = pctl.run("lock", "lk/one", "echo", "held")
    assert p.stdout.splitlines() == ["held"], p
    assert pctl.out("get", "--prefix", "lk/one/") == []  # released when the command ended


def test_two_etcdctl_lock_holders_never_overlap(pctl: Ctl) -> None:
    """Each holder prints a start and an end time (its own clock, inside the
    held section) with a pause between; the sections must not overlap."""
    section = "date +%s.%N; sleep 0.3; date +%s.%N"  # the pause is the held work, not a test wait
    procs = [
        subprocess.Popen(pctl.argv("lock", "lk/two", "--", "sh", "-c", section), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pctl.env)
        for _ in range(5)
    ]
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        start, end = (float(x) for x in out.split())
        spans.append((start, end))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, spans


def test_elect_hands_over_to_the_next_candidate_and_the_observer_sees_both(pctl: Ctl) -> None:
    """`etcdctl elect` (clientv3's Election): a candidate prints its key and
    value once elected and holds until it ends; `elect -l` observes. When
    the leader ends (SIGINT: it resigns), the waiting candidate leads."""
    observer = Watcher(pctl, "-l", "el/one", command="elect")
    first = Watcher(pctl, "el/one", "alpha", command="elect")
    second: Watcher | None = None
    try:
        key, value = first.read(2)
        assert key.startswith("el/one/") and value == "alpha"
        assert observer.read(2)[1] == "alpha"
        second = Watcher(pctl, "el/one", "beta", command="elect")
        wait_until(lambda: len(pctl.out("get", "--prefix", "--keys-only", "el/one/")) >= 3, timeout=20, what="beta queued")
        assert second.lines.empty()  # not elected while alpha leads
        first.proc.send_signal(2)  # SIGINT: etcdctl resigns and exits
        key2, value2 = second.read(2)
        assert key2.startswith("el/one/") and key2 != key and value2 == "beta"
        assert "beta" in observer.read(2)
    finally:
        for w in (first, second, observer):
            if w is not None:
                w.stop()


def test_elect_hands_over_when_the_leader_is_killed_and_its_lease_ends(pctl: Ctl) -> None:
    """A leader killed with SIGKILL cannot resign: its key stays until its
    session lease (etcdctl's 60 s) ends. The test ends it as expiry would
    (`etcdctl lease revoke` of the lease on the leader's key); the waiting
    candidate leads and the observer sees it."""
    observer = Watcher(pctl, "-l", "el/kill", command="elect")
    first = Watcher(pctl, "el/kill", "alpha", command="elect")
    second: Watcher | None = None
    try:
        key, value = first.read(2)
        assert key.startswith("el/kill/") and value == "alpha"
        assert observer.read(2) == [key, "alpha"]
        second = Watcher(pctl, "el/kill", "beta", command="elect")
        wait_until(lambda: len(pctl.out("get", "--prefix", "--keys-only", "el/kill/")) >= 3, timeout=20, what="beta queued")
        first.proc.kill()
        first.proc.wait(timeout=10)
        assert pctl.out("get", key, "--print-value-only") == ["alpha"]  # no resign: the key outlives its process
        assert second.lines.empty()  # and beta waits for it
        lease = pctl.json("get", key)["kvs"][0]["lease"]
        revoked = pctl.out("lease", "revoke", f"{lease:x}")
        assert len(revoked) == 1 and revoked[0].endswith(" revoked") and int(revoked[0].split()[1], 16) == lease, revoked
        key2, value2 = second.read(2)
        assert key2.startswith("el/kill/") and key2 != key and value2 == "beta"
        assert observer.read(2) == [key2, "beta"]
    finally:
        for w in (first, second, observer):
            if w is not None:
                w.stop()


def test_txn_interactive_over_keys_on_different_shards(pctl: Ctl) -> None:
    """`etcdctl txn` reading its compares and both branches from stdin as
    etcdctl does, over two ordinary keys on different shards: the success
    branch puts both at one revision and reads them back; a failing compare
    on one shard runs the failure branch's put on the other, and nothing of
    the success branch."""
    a = next(k for k in (f"xs/a{i}" for i in range(100)) if _shard(k, PSHARDS) == 0)
    b = next(k for k in (f"xs/b{i}" for i in range(100)) if _shard(k, PSHARDS) == 1)
    pctl.out("put", a, "1")
    pctl.out("put", b, "2")
    script = f'mod("{a}") > "0"\nvalue("{b}") = "2"\n\nput {a} 10\nput {b} 20\nget {a}\nget {b}\n\nput {a} failed\n\n'
    assert pctl.out("txn", stdin=script) == ["SUCCESS", "", "OK", "", "OK", "", a, "10", "", b, "20"]
    ja, jb = pctl.json("get", a)["kvs"][0], pctl.json("get", b)["kvs"][0]
    assert ja["mod_revision"] == jb["mod_revision"], (ja, jb)
    script = f'value("{b}") = "2"\n\nput {b} 30\n\nput {a} failed\nget {b}\n\n'
    assert pctl.out("txn", stdin=script) == ["FAILURE", "", "OK", "", b, "20"]
    assert pctl.out("get", a, "--print-value-only") == ["failed"]
    assert pctl.out("get", b, "--print-value-only") == ["20"]
