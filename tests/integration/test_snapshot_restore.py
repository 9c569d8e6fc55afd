"""Backups, restores and migration from etcd, end to end with real processes:
`flotilla playground` clusters, Debian's etcdctl (etcd-client) and etcd
(etcd-server).

- `etcdctl snapshot save` from Flotilla writes an etcd database: `etcdctl
  snapshot status` reads it (and agrees with `flotilla snapshot status`),
  `etcdctl snapshot restore` + `etcd` serve the same keys and lease at the
  backup's revision.
- A backup taken while writers run, restored with `flotilla snapshot
  restore` and started with `flotilla playground`, holds every key exactly
  as a read at the backup's revision shows it.
- etcd -> Flotilla: a real etcd's keys (history, deletes, a txn, a lease),
  `etcdctl snapshot save`, `flotilla snapshot restore`, a playground: the
  same keys, revisions, versions and lease.
- Bad files (truncated, wrong hash, not a database) are refused and leave
  nothing behind.

Every wait has a deadline; processes are the test's own and stopped by pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from flotilla import snapshot
from flotilla.raftcluster import REPO
from router import etcdsnapshot as es

pytestmark = pytest.mark.integration

ETCDCTL = shutil.which("etcdctl")
ETCD = shutil.which("etcd")
if ETCDCTL is None:
    pytest.skip("etcdctl is not installed (Debian: apt-get install etcd-client; scripts/test.sh does it)", allow_module_level=True)
needs_etcd = pytest.mark.skipif(
    ETCD is None, reason="etcd is not installed (Debian: apt-get install etcd-server; scripts/test.sh does it)"
)

READY_TIMEOUT_S = 120


def _env() -> dict[str, str]:
    return {**os.environ, "ETCDCTL_API": "3", "PYTHONPATH": str(REPO)}


def etcdctl(endpoint: str | None, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    argv = [ETCDCTL, *(["--endpoints", endpoint, "--dial-timeout", "5s", "--command-timeout", "30s"] if endpoint else []), *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())
    if check and p.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
    return p


def flotilla(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flotilla", *args], capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO
    )


class Playground:
    """`flotilla playground --data-dir D --client-port 0`, its stdout read against deadlines."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flotilla", "playground", "--data-dir", str(data_dir), "--client-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=REPO,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()
        self.endpoint = ""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"the playground did not print ready within {READY_TIMEOUT_S}s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the playground exited ({self.proc.wait(10)}): {self.seen}")
            self.seen.append(line)
            if line.startswith("endpoints: "):
                self.endpoint = line.split()[1].split(",")[0]
            if line == "ready":
                return

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._pumper.join(timeout=30)
        if self.proc.stdout is not None and not self._pumper.is_alive():
            self.proc.stdout.close()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Etcd:
    """Debian's etcd on free loopback ports, serving data_dir."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        assert ETCD is not None
        client, peer = _free_ports(2)
        self.endpoint = f"127.0.0.1:{client}"
        self.log = log
        self._logf = open(log, "wb")
        self.proc = subprocess.Popen(
            [
                ETCD, "--data-dir", str(data_dir), "--name", "default",
                "--listen-client-urls", f"http://{self.endpoint}", "--advertise-client-urls", f"http://{self.endpoint}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            ],
            stdout=self._logf, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while etcdctl(self.endpoint, "endpoint", "health", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"etcd did not serve: {log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._logf.close()


def dump(endpoint: str, revision: int = 0) -> tuple[int, list[mvccpb.KeyValue]]:
    """(header revision, every key) of an etcd v3 endpoint, at revision (0: now)."""
    with grpc.insecure_channel(endpoint) as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(epb.RangeRequest(key=b"\x00", range_end=b"\x00", revision=revision), timeout=30)
    return r.header.revision, list(r.kvs)


def _fields(kvs: list[mvccpb.KeyValue]) -> list[tuple[bytes, bytes, int, int, int, int]]:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in kvs]


def _lease_keys(endpoint: str, lease_hex: str) -> str:
    return etcdctl(endpoint, "lease", "timetolive", lease_hex, "--keys").stdout.strip()


def _replicas_agree(endpoint: str) -> None:
    """Every shard's replicas hold the same MVCC state (flotilla ctl hashkv)."""
    p = flotilla("ctl", "--endpoints", endpoint, "hashkv", timeout=120)
    assert p.returncode == 0 and "every shard's replicas agree" in p.stdout, p.stdout + p.stderr


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    pg = Playground(tmp_path_factory.mktemp("source") / "data")
    try:
        yield pg
    finally:
        pg.stop()


def _fill(endpoint: str, prefix: str) -> str:
    """Keys over every shard, a rewritten key, a large value and a lease with a key; the lease id (hex)."""
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(40):
            kv.Put(epb.PutRequest(key=f"{prefix}/k{i:02d}".encode(), value=f"value-{i}".encode()), timeout=30)
        kv.Put(epb.PutRequest(key=f"{prefix}/k00".encode(), value=b"rewritten"), timeout=30)
        kv.Put(epb.PutRequest(key=f"{prefix}/big".encode(), value=bytes(range(256)) * 400), timeout=30)
    lease = etcdctl(endpoint, "lease", "grant", "300").stdout.split()[1]
    etcdctl(endpoint, "put", f"{prefix}/leased", "v", "--lease", lease)
    return lease


def _saved(endpoint: str, path: Path) -> es.SnapshotState:
    out = etcdctl(endpoint, "snapshot", "save", str(path)).stdout
    assert f"Snapshot saved at {path}" in out
    data = path.read_bytes()
    assert len(data) % 512 == 32 and data[-32:] == hashlib.sha256(data[:-32]).digest()
    return es.read_state(es.open_db(data))


@needs_etcd
def test_etcdctl_save_status_restore_and_etcd_serves_the_keys(source: Playground, tmp_path: Path) -> None:
    lease = _fill(source.endpoint, "a")
    path = tmp_path / "f.db"
    state = _saved(source.endpoint, path)
    _, at_r = dump(source.endpoint, state.revision)
    assert _fields(list(state.kvs)) == _fields(at_r) and len(at_r) >= 42
    status = json.loads(etcdctl(None, "snapshot", "status", str(path), "-w", "json").stdout)
    assert status["revision"] == max(kv.mod_revision for kv in at_r)
    assert status["totalKey"] == len(at_r) + len(state.leases) + 4  # meta: consistent_index, term, two compaction marks
    ours = flotilla("snapshot", "status", str(path), "-w", "json")
    assert ours.returncode == 0 and json.loads(ours.stdout) == status

    restored = tmp_path / "etcd-data"
    etcdctl(None, "snapshot", "restore", str(path), "--data-dir", str(restored))
    etcd = Etcd(restored, tmp_path / "etcd.log")
    try:
        revision, kvs = dump(etcd.endpoint)
        assert revision == state.revision
        assert _fields(kvs) == _fields(at_r)
        assert _lease_keys(etcd.endpoint, lease).endswith("attached keys([a/leased])")
        etcdctl(etcd.endpoint, "put", "after", "restore")
        assert dump(etcd.endpoint)[0] == state.revision + 1
    finally:
        etcd.stop()


def test_restore_round_trip_under_write_load(source: Playground, tmp_path: Path) -> None:
    lease = _fill(source.endpoint, "b")
    stop = threading.Event()
    writes = [0, 0]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with grpc.insecure_channel(source.endpoint) as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                for i in range(100_000):  # bounded; stopped by the event long before
                    if stop.is_set():
                        return
                    key = f"load/{n}/{i % 50:02d}".encode()
                    if i % 7 == 6:
                        kv.DeleteRange(epb.DeleteRangeRequest(key=key), timeout=10)
                    else:
                        kv.Put(epb.PutRequest(key=key, value=f"{i}".encode()), timeout=10)
                    writes[n] += 1
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while min(writes) < 20 and not errors and time.monotonic() < deadline:
            stop.wait(0.05)  # sleep-ok: waiting for the writers to be under way, against a deadline
        before = list(writes)
        state = _saved(source.endpoint, tmp_path / "f.db")
        during = list(writes)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert all(d > b for d, b in zip(during, before)), f"writers did not write during the backup: {before} -> {during}"
    _, latest = dump(source.endpoint)
    assert max(kv.mod_revision for kv in latest) > state.revision  # writes went on past R
    _, at_r = dump(source.endpoint, state.revision)
    assert _fields(list(state.kvs)) == _fields(at_r)

    data_dir = tmp_path / "restored"
    p = flotilla("snapshot", "restore", str(tmp_path / "f.db"), "--data-dir", str(data_dir))
    assert p.returncode == 0, p.stderr + p.stdout
    assert f"restored {len(at_r)} keys" in p.stdout
    pg = Playground(data_dir)
    try:
        revision, kvs = dump(pg.endpoint)
        assert _fields(kvs) == _fields(at_r)
        assert revision >= state.revision
        assert _lease_keys(pg.endpoint, lease).endswith("attached keys([b/leased])")
        _replicas_agree(pg.endpoint)
        with grpc.insecure_channel(pg.endpoint) as ch:
            put = rpc_pb2_grpc.KVStub(ch).Put(epb.PutRequest(key=b"after", value=b"restore"), timeout=30)
        assert put.header.revision > max(kv.mod_revision for kv in at_r)
        with pytest.raises(grpc.RpcError) as info:
            dump(pg.endpoint, state.revision - 1)
        assert "compacted" in (info.value.details() or "")  # type: ignore[attr-defined]
    finally:
        pg.stop()


@needs_etcd
def test_migration_from_etcd(tmp_path: Path) -> None:
    etcd = Etcd(tmp_path / "etcd-data", tmp_path / "etcd.log")
    try:
        ep = etcd.endpoint
        with grpc.insecure_channel(ep) as ch:
            for i in range(30):
                rpc_pb2_grpc.KVStub(ch).Put(epb.PutRequest(key=f"m/{i:02d}".encode(), value=f"v{i}".encode()), timeout=30)
        etcdctl(ep, "put", "m/00", "again")  # version 2
        etcdctl(ep, "put", "m/00", "and again")  # version 3
        etcdctl(ep, "del", "m/01")  # a tombstone
        etcdctl(ep, "put", "m/02", "deleted")
        etcdctl(ep, "del", "m/02")
        etcdctl(ep, "put", "m/02", "re-created")  # a new incarnation: version 1, a later create revision
        with grpc.insecure_channel(ep) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            kv.Txn(
                epb.TxnRequest(success=[epb.RequestOp(request_put=epb.PutRequest(key=b"m/t%d" % i, value=b"t")) for i in range(3)]),
                timeout=30,
            )  # three keys at one revision (sub-revisions 0, 1, 2)
        lease = etcdctl(ep, "lease", "grant", "600").stdout.split()[1]
        etcdctl(ep, "put", "m/leased", "v", "--lease", lease)
        revision, expected = dump(ep)
        snap = tmp_path / "etcd.db"
        etcdctl(ep, "snapshot", "save", str(snap))
    finally:
        etcd.stop()

    st = flotilla("snapshot", "status", str(snap), "-w", "json")
    assert st.returncode == 0 and json.loads(st.stdout) == json.loads(etcdctl(None, "snapshot", "status", str(snap), "-w", "json").stdout)
    data_dir = tmp_path / "flotilla-data"
    p = flotilla("snapshot", "restore", str(snap), "--data-dir", str(data_dir))
    assert p.returncode == 0, p.stderr + p.stdout
    assert f"revision {revision}" in p.stdout
    pg = Playground(data_dir)
    try:
        _, kvs = dump(pg.endpoint)
        assert _fields(kvs) == _fields(expected)
        by_key = {kv.key: kv for kv in kvs}
        assert by_key[b"m/00"].version == 3 and b"m/01" not in by_key
        assert by_key[b"m/02"].create_revision > by_key[b"m/03"].create_revision
        assert len({by_key[b"m/t%d" % i].mod_revision for i in range(3)}) == 1
        assert _lease_keys(pg.endpoint, lease).endswith("attached keys([m/leased])")
        _replicas_agree(pg.endpoint)
        with grpc.insecure_channel(pg.endpoint) as ch:
            put = rpc_pb2_grpc.KVStub(ch).Put(epb.PutRequest(key=b"m/new", value=b"x"), timeout=30)
        assert put.header.revision > revision
    finally:
        pg.stop()


def test_bad_files_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    good = es.snapshot_bytes(900, [mvccpb.KeyValue(key=b"k%03d" % i, value=b"v" * 200, create_revision=10 + i, mod_revision=10 + i, version=1) for i in range(100)])
    cases = {
        "truncated.db": (good[: len(good) // 2], "SHA-256 mismatch|truncated"),
        "cut-page.db": (good[: len(good) - 32 - 4096], "truncated"),
        "flipped.db": (good[:9000] + bytes([good[9000] ^ 0x40]) + good[9001:], "SHA-256 mismatch"),
        "text.db": (b"this is not a database\n" * 300, "not a bbolt database"),
        "empty.db": (b"", "not a bbolt database"),
    }
    for name, (data, why) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        target = tmp_path / f"data-{name}"
        p = flotilla("snapshot", "restore", str(path), "--data-dir", str(target), timeout=60)
        assert p.returncode == 1 and p.stderr.startswith("Error: "), (name, p.stderr, p.stdout)
        assert re.search(why, p.stderr), (name, p.stderr)
        assert not target.exists()
        with pytest.raises(snapshot.SourceError, match=why):
            snapshot.run_status(str(path), "json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)  # no data or work directory left anywhere
    missing = flotilla("snapshot", "restore", str(tmp_path / "nope.db"), "--data-dir", str(tmp_path / "x"), timeout=60)
    assert missing.returncode == 1 and "cannot read" in missing.stderr and not (tmp_path / "x").exists()
    # A data directory that is not empty is never written to.
    (tmp_path / "ok.db").write_bytes(good)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "precious").write_text("keep")
    p = flotilla("snapshot", "restore", str(tmp_path / "ok.db"), "--data-dir", str(busy), timeout=60)
    assert p.returncode == 1 and "not empty" in p.stderr
    assert [q.name for q in busy.iterdir()] == ["precious"]
