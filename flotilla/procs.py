"""Processes of Flotilla, from both sides: the harnesses that start real
`python -m flotilla ...` children, and the process mains those children run.

Harness side: `wait_until(predicate, timeout)` is the only way a harness
waits (no sleeps); a `ManagedProcess` is one child that binds port 0 and
reports its port through --ready-file, with its output appended to a log
file; a `ProcessGroup` is the node-id-keyed set of them a cluster harness
keeps. Every kill or signal goes to a pid the harness started itself.

Server side (flotilla/raftnode.py, server.py, placement_main.py,
router_main.py): the arguments every node process takes, the ready file
written once serving, the gRPC server options, and the loop that serves
until SIGTERM or SIGINT (or until what it runs fails: fail-stop).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from rocksdict import Rdict

from raft.storage.rocks import RocksLogStore, open_db
from rpc import tls

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]

__all__ = [
    "GRPC_SERVER_OPTIONS",
    "MAX_MESSAGE_BYTES",
    "REPO",
    "ManagedProcess",
    "ProcessExited",
    "ProcessGroup",
    "add_node_arguments",
    "add_peer_tls_arguments",
    "add_raft_arguments",
    "announce_ready",
    "child_env",
    "configure_peer_tls",
    "flotilla_argv",
    "grpc_server",
    "log_tail",
    "open_raft_storage",
    "parse_id_addresses",
    "seeded_rng",
    "trim_malloc",
    "tune_gc",
    "serve_until_signalled",
    "stop_all",
    "wait_until",
    "write_ready_file",
]


# -- waiting ------------------------------------------------------------------------------


class ProcessExited(AssertionError):
    """A child ended while the harness waited for it: a wait fails at once."""


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    fail_on: tuple[type[BaseException], ...] = (ProcessExited,),
) -> T:
    """Poll predicate until it returns a truthy value or the deadline passes;
    on timeout fail with the last value (or exception) observed. An exception
    of `fail_on` (by default a child that exited) ends the wait at once."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except fail_on:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last observed: {last!r}")
        time.sleep(interval)  # sleep-ok: polling interval of a deadline-bounded wait, not synchronization


# -- children -----------------------------------------------------------------------------


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment (read now: a caller may have just set a
    variable), plus extra, with the repository first on PYTHONPATH."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return env


def flotilla_argv(*args: str, module: str = "flotilla", verbose: bool = True) -> list[str]:
    """`python -m <module> [-v] args...` with this interpreter."""
    return [sys.executable, "-m", module, *(["-v"] if verbose else []), *args]


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ("" before it exists)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@dataclass(kw_only=True)
class ManagedProcess:
    """One child process started by this one: its output appended to
    log_path, its port reported in ready_file (JSON with "port"; default:
    log_path with the suffix .ready). Every signal goes to its own pid."""

    log_path: Path
    ready_file: Path | None = None
    name: str = "process"
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    channel: grpc.Channel | None = None

    def __post_init__(self) -> None:
        if self.ready_file is None:
            self.ready_file = self.log_path.with_suffix(".ready")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def spawn(self, argv: list[str], *, cwd: Path, env: Mapping[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
        """Start argv (its ready file removed first); env is added to this
        process's environment (child_env); popen: more Popen arguments."""
        assert self.ready_file is not None
        self.ready_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=child_env(env), cwd=str(cwd), **popen)
        return self.proc

    def read_ready(self) -> dict[str, Any] | None:
        """The ready file once written, else None; ProcessExited if the process ended."""
        assert self.proc is not None and self.ready_file is not None
        if self.proc.poll() is not None:
            raise ProcessExited(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        return json.loads(self.ready_file.read_text()) if self.ready_file.exists() else None

    def await_ready(self, *, timeout: float = 60, what: str = "") -> dict[str, Any]:
        """Wait for the ready file; sets and returns its port's info."""
        info = wait_until(self.read_ready, timeout=timeout, what=what or f"{self.name} ready")
        assert info is not None  # wait_until returns only a truthy value
        self.port = int(info["port"])
        return info

    def connect(self) -> grpc.Channel:
        """A fresh channel to the reported port (the previous one closed)."""
        self.close_channel()
        self.channel = tls.peer_channel(self.address)
        return self.channel

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def send_signal(self, sig: int) -> None:
        """Signal the pid without waiting (SIGSTOP/SIGCONT pauses)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """Signal the pid and wait for it to end."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)

    def terminate(self) -> None:
        """SIGTERM if it runs (stop_all signals every process first, then waits)."""
        if self.alive:
            self.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout: float = 15) -> None:
        """Wait for the end; SIGKILL after timeout."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15) -> None:
        stop_all([self], timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


def stop_all(procs: Iterable[ManagedProcess], timeout: float = 15) -> None:
    """Close their channels, SIGTERM every running one, then wait for each
    (SIGKILL after timeout): they shut down in parallel."""
    procs = list(procs)
    for p in procs:
        p.close_channel()
        p.terminate()
    for p in procs:
        if p.alive:
            p.wait_or_kill(timeout)


class ProcessGroup:
    """What a cluster harness does to its processes by node id; the harness
    (a dataclass) has `nodes: dict[int, <a ManagedProcess>]`."""

    nodes: Mapping[int, ManagedProcess]

    def live(self) -> list[int]:
        return [nid for nid, n in self.nodes.items() if n.alive]

    def kill(self, nid: int, sig: int = signal.SIGKILL) -> None:
        self.nodes[nid].kill(sig)

    def kill_signal(self, nid: int, sig: int) -> None:
        """Send a signal without waiting for an exit (SIGSTOP/SIGCONT pauses)."""
        self.nodes[nid].send_signal(sig)

    def stop(self) -> None:
        stop_all(self.nodes.values())

    def log_tail(self, nid: int, lines: int = 40) -> str:
        return self.nodes[nid].log_tail(lines)


# -- the process mains --------------------------------------------------------------------

MAX_MESSAGE_BYTES = 64 << 20
GRPC_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def grpc_server() -> grpc.aio.Server:
    """The gRPC server of a node process (messages up to MAX_MESSAGE_BYTES)."""
    return grpc.aio.server(options=GRPC_SERVER_OPTIONS)


def add_node_arguments(p: argparse.ArgumentParser, *, required: bool = True, required_help: str = "") -> None:
    """--node-id, --data-dir, --listen, --ready-file. Not required: defaults
    0 and "" (the process checks them when its role needs them)."""
    if required:
        p.add_argument("--node-id", type=int, required=True)
        p.add_argument("--data-dir", required=True)
    else:
        p.add_argument("--node-id", type=int, default=0, help=required_help)
        p.add_argument("--data-dir", default="", help=required_help)
    p.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free port, reported)")
    p.add_argument("--ready-file", help='write {"port":..,"pid":..,"node_id":..} here once serving')


def add_peer_tls_arguments(p: argparse.ArgumentParser, *, server: bool = True) -> None:
    """etcd's peer TLS flags: mutual TLS on this process's internal port and
    on its channels to other Flotilla processes (rpc/tls.py). server=False
    (a tool that only calls): no --peer-client-cert-auth."""
    p.add_argument("--peer-cert-file", default="", help="certificate of this process's internal port and of its calls to peers")
    p.add_argument("--peer-key-file", default="", help="its key")
    p.add_argument("--peer-trusted-ca-file", default="", help="CA that signs the peers' certificates (trusted both ways)")
    if server:
        p.add_argument(
            "--peer-client-cert-auth", action="store_true", help="the internal port requires a client certificate signed by that CA"
        )


def peer_tls_config(args: argparse.Namespace) -> tls.TlsConfig:
    return tls.TlsConfig(
        cert_file=getattr(args, "peer_cert_file", "") or "",
        key_file=getattr(args, "peer_key_file", "") or "",
        trusted_ca_file=getattr(args, "peer_trusted_ca_file", "") or "",
        client_cert_auth=bool(getattr(args, "peer_client_cert_auth", False)),
    )


def configure_peer_tls(args: argparse.Namespace, *, what: str = "flotilla") -> tls.Tls:
    """This process's peer TLS from its --peer-* flags (plaintext without
    them); exits saying why when they cannot work."""
    try:
        return tls.configure_peer(peer_tls_config(args))
    except tls.TlsError as exc:
        raise SystemExit(f"{what}: {exc}") from None


def add_raft_arguments(p: argparse.ArgumentParser, *, compaction_margin: bool = True) -> None:
    """--tick-ms, --election-ticks, --snapshot-entries[, --compaction-margin], --seed."""
    p.add_argument("--tick-ms", type=int, default=100)
    p.add_argument("--election-ticks", type=int, default=10)
    p.add_argument("--snapshot-entries", type=int, default=10_000)
    if compaction_margin:
        p.add_argument("--compaction-margin", type=int, default=1_000, help="entries kept behind a snapshot for slow followers")
    p.add_argument("--seed", type=int, default=None)


def parse_id_addresses(text: str, *, complaint: str) -> dict[int, str]:
    """`1=127.0.0.1:7001,2=127.0.0.1:7002` -> {1: "127.0.0.1:7001", 2: ...};
    a malformed item exits with `<complaint>, got '<item>'`."""
    out: dict[int, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        nid, sep, address = item.partition("=")
        if not sep or not nid.isdigit() or not address:
            raise SystemExit(f"{complaint}, got {item!r}")
        out[int(nid)] = address
    return out


def open_raft_storage(data_dir: str) -> tuple[Path, Rdict, RocksLogStore]:
    """The data directory (created if new), its RocksDB and the Raft log store
    recovered from it."""
    sys.setswitchinterval(0.001)  # let the sync thread get the GIL back quickly (raft/storage/rocks.py)
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    db = open_db(path / "db")
    store = RocksLogStore(db, keep_snapshot_data=True)
    store.recover()
    return path, db, store


def seeded_rng(seed: int | None) -> tuple[int, random.Random]:
    """The seed (given, else a fresh random one, to be logged) and its Random."""
    if seed is None:
        seed = random.SystemRandom().getrandbits(64)
    return seed, random.Random(seed)


def write_ready_file(path: str | None, info: Mapping[str, Any]) -> None:
    """Write info as JSON to path (if given) atomically: a reader never sees half of it."""
    if path:
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(dict(info)))
        tmp.replace(path)


def announce_ready(path: str | None, info: Mapping[str, Any], line: str) -> None:
    """The ready file, then the `ready port=...` line on stdout."""
    write_ready_file(path, info)
    print(line, flush=True)


async def serve_until_signalled(
    run: Awaitable[None] | None = None, *, before_cancel: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Run `run` (if any) until SIGTERM or SIGINT; if it ends first, re-raise
    what ended it (fail-stop). On the way out, await before_cancel() (e.g.
    stop the gRPC server while the host still runs), then cancel run."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_task = asyncio.ensure_future(stop.wait())
    run_task = asyncio.ensure_future(run) if run is not None else None
    try:
        done, _ = await asyncio.wait({t for t in (run_task, stop_task) if t is not None}, return_when=asyncio.FIRST_COMPLETED)
        if run_task is not None and run_task in done:
            run_task.result()  # fail-stop: re-raise what ended it
    finally:
        if before_cancel is not None:
            await before_cancel()
        tasks = [t for t in (run_task, stop_task) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def crash_hook_from_env() -> Callable[[str], None] | None:
    """The fault-injection hook of a server process: FLOTILLA_CRASH_AT=<point>:<n>
    ends the process (exit 137, no cleanup, as a kill -9 would) the n-th time
    its GroupHost passes <point>: before_persist, after_persist (the log
    entries and hard state are one WriteBatch, so these are also before/after
    the hard-state save), before_apply, after_apply, snapshot_save (a snapshot
    written or handed to the transport), before_snapshot_apply,
    after_snapshot_apply, split_apply (a split entry applied and on disk, the
    new shard not yet opened: shard/node/split.py)."""
    spec = os.environ.get("FLOTILLA_CRASH_AT")
    if not spec:
        return None
    point, _, n = spec.partition(":")
    remaining = [int(n or "1")]

    def hook(where: str) -> None:
        if where == point:
            remaining[0] -= 1
            if remaining[0] <= 0:
                sys.stderr.write(f"FLOTILLA_CRASH_AT: exiting at {where}\n")
                sys.stderr.flush()
                os._exit(137)

    return hook


GC_GEN0_THRESHOLD = 50_000
"""Allocations (net, of objects the collector tracks) between two young
collections. CPython's default, 700, runs one every few requests on a
serving process (each request makes futures, tasks, coroutines, dicts);
most of them are young garbage that reference counting frees anyway."""


MALLOC_TRIM_INTERVAL_S = 30.0


async def trim_malloc(interval_s: float = MALLOC_TRIM_INTERVAL_S) -> None:
    """Run until cancelled: every interval_s, hand the pages glibc's malloc
    holds free back to the OS (malloc_trim(0)). A store's startup (1,000
    groups electing, messages by the thousand) frees much of what it
    allocated, and glibc keeps it in its arenas: at 300 shards 5 MiB of a
    store's RSS was free memory (flotilla/memtrace.py's dump; issue #20). A
    call takes a few milliseconds, in a worker thread (ctypes lets go of the
    GIL), so the event loop goes on serving meanwhile; nothing but the RSS
    changes. Does nothing without glibc."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(trim, 0)


def tune_gc(gen0_threshold: int = GC_GEN0_THRESHOLD) -> None:
    """Call once a server process has started (its modules imported, its
    long-lived objects made): collect, then freeze what survived into the
    permanent generation (gc.freeze: no collection walks it again), and
    raise the young generation's threshold. Cycles are still collected,
    only less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
