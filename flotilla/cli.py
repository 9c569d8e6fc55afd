"""The `flotilla` command. Wiring only: each subcommand builds its objects here.

Subcommands so far:

    flotilla [-v] demo [--seed N]   three Raft nodes in one process (no I/O, no sleeps)
    flotilla [-v] raftnode ...      one process hosting many Raft groups (flotilla/raftnode.py)
    flotilla [-v] server --store .. a server: --placement, --store, --router roles (flotilla/server.py)
    flotilla playground [...]       a whole local cluster of processes (flotilla/playground.py)
    flotilla bench-raft SCENARIO    runtime figures on 3 local processes (flotilla/benchraft.py)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import random
import sys
from collections.abc import Callable, Sequence

from raft.core import (
    Config,
    ConfState,
    EntryKind,
    MemoryStorage,
    Message,
    RawNode,
    StateRole,
)
from rpc import polling

DEMO_NODE_IDS = (1, 2, 3)
MAX_TICKS = 1_000
"""Ticks the demo waits for any one thing (an election, a commit) before giving up."""
MAX_ROUNDS_PER_SETTLE = 10_000


class DemoStalled(Exception):
    """The demo cluster did not reach the state it waited for."""


class DemoCluster:
    """Three RawNodes over MemoryStorage, driven by a deterministic host loop.

    The network is an in-order FIFO that loses nothing, except messages to or
    from a stopped node. Stopped nodes are neither ticked nor driven.
    """

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        logger = logging.getLogger("flotilla.demo")
        conf_state = ConfState(voters=DEMO_NODE_IDS)
        self.storages = {nid: MemoryStorage(conf_state=conf_state) for nid in DEMO_NODE_IDS}
        # One RNG per node, derived from the seed: identical election timeouts
        # would make every election a split vote.
        self.nodes = {
            nid: RawNode(
                Config(id=nid),
                self.storages[nid],
                rng=random.Random(rng.getrandbits(64)),
                logger=logger,
            )
            for nid in DEMO_NODE_IDS
        }
        self.applied: dict[int, list[str]] = {nid: [] for nid in DEMO_NODE_IDS}
        self.stopped: set[int] = set()
        self._in_flight: list[Message] = []

    def live(self) -> list[int]:
        return [nid for nid in DEMO_NODE_IDS if nid not in self.stopped]

    def leader(self) -> int | None:
        """The live leader with the highest term, if any."""
        leaders = [nid for nid in self.live() if self.nodes[nid].status().soft_state.role == StateRole.LEADER]
        return max(leaders, key=lambda nid: self.nodes[nid].status().hard_state.term, default=None)

    def _handle_ready(self, nid: int) -> None:
        node, storage = self.nodes[nid], self.storages[nid]
        rd = node.ready()
        if rd.soft_state is not None and rd.soft_state.role == StateRole.LEADER:
            print(f"term {node.status().hard_state.term}: node {nid} became leader")
        self._in_flight.extend(rd.messages)
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        self._in_flight.extend(rd.messages_after_persist)
        for entry in rd.committed_entries:
            if entry.kind == EntryKind.NORMAL and entry.data:
                self.applied[nid].append(entry.data.decode())
        node.advance(rd)

    def settle(self) -> None:
        """Handle every Ready and deliver every message until the cluster is quiet."""
        for _ in range(MAX_ROUNDS_PER_SETTLE):
            busy = [nid for nid in self.live() if self.nodes[nid].has_ready()]
            for nid in busy:
                self._handle_ready(nid)
            if not busy and not self._in_flight:
                return
            messages, self._in_flight = self._in_flight, []
            for msg in messages:
                if msg.to not in self.stopped and msg.from_ not in self.stopped:
                    self.nodes[msg.to].step(msg)
        raise DemoStalled(f"messages still flowing after {MAX_ROUNDS_PER_SETTLE} rounds")

    def run_until(self, done: Callable[[], bool], what: str) -> None:
        for _ in range(MAX_TICKS):
            self.settle()
            if done():
                return
            for nid in self.live():
                self.nodes[nid].tick()
        raise DemoStalled(f"{what}: not within {MAX_TICKS} ticks")

    def propose_and_commit(self, values: Sequence[str]) -> None:
        leader = self.leader()
        if leader is None:
            raise DemoStalled("no leader to propose to")
        for value in values:
            self.nodes[leader].propose(value.encode())
            print(f"node {leader} proposed {value}")
        expected = self.applied[leader] + list(values)
        live = self.live()
        self.run_until(lambda: all(self.applied[nid] == expected for nid in live), "commit")
        print(f"committed on nodes {', '.join(map(str, live))}: {' '.join(values)}")


def run_demo(seed: int) -> int:
    print(f"flotilla demo: Raft nodes {', '.join(map(str, DEMO_NODE_IDS))} in one process, seed={seed}")
    cluster = DemoCluster(seed)
    cluster.run_until(lambda: cluster.leader() is not None, "first election")
    cluster.propose_and_commit(["x=1", "x=2", "x=3"])

    first = cluster.leader()
    if first is None:
        raise DemoStalled("the leader was lost without a fault")
    cluster.stopped.add(first)
    print(f"node {first} stopped: no messages to or from it")
    cluster.run_until(lambda: cluster.leader() is not None, "election after the leader stopped")
    cluster.propose_and_commit(["y=4", "y=5"])

    cluster.stopped.discard(first)
    print(f"node {first} restarted")
    cluster.run_until(lambda: len({tuple(log) for log in cluster.applied.values()}) == 1, "catch-up")

    print("final logs:")
    for nid in DEMO_NODE_IDS:
        print(f"  node {nid}: {' '.join(cluster.applied[nid])}")
    print(f"all {len(DEMO_NODE_IDS)} nodes applied the same {len(cluster.applied[first])} entries")
    return 0


# Subcommands implemented in their own module, each with add_arguments(parser)
# and main(args) -> exit code: name -> (module, help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "playground": ("flotilla.playground", "a whole local cluster: placement, stores and an etcd router on 127.0.0.1"),
    "server": ("flotilla.server", "a Flotilla server process (roles: --placement, --store, --router)"),
    "ctl": ("flotilla.ctl", "administer a cluster through placement: nodes, shards, operators"),
    "bench": ("flotilla.bench", "load etcd v3 endpoints (Flotilla or etcd); --compare-etcd; failover"),
    "campaign": ("flotilla.campaign.__main__", "fault campaigns: real cluster, clients, nemeses, checkers; prints a summary"),
    "raftnode": ("flotilla.raftnode", "a process hosting many Raft groups of registers (runtime tests and benchmarks)"),
    "bench-raft": ("flotilla.benchraft", "figures of the multi-group Raft runtime on 3 local processes"),
    "snapshot": ("flotilla.snapshot", "backup files: status; restore into a new cluster's data directory (Flotilla's or etcd's)"),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flotilla", description="Flotilla: a sharded, etcd-compatible key-value store.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show INFO log lines (e.g. the Raft core's)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="three Raft nodes in one process: elect, replicate, lose the leader, recover")
    demo.add_argument("--seed", type=int, default=1, help="seed of the nodes' random election timeouts (default 1)")
    for name, (module, help_text) in SUBCOMMANDS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    return parser


SERVING = frozenset({"server", "raftnode"})
"""Commands that run a server process: they take rpc/polling.py's gRPC engine."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if next((a for a in argv if not a.startswith("-")), None) in SERVING:
        polling.use_server_polling()  # before _build_parser imports grpc
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.command == "demo":
        try:
            return run_demo(args.seed)
        except DemoStalled as exc:
            print(f"demo failed: {exc}")
            return 1
    if args.command in SUBCOMMANDS:
        result: int = importlib.import_module(SUBCOMMANDS[args.command][0]).main(args)
        return result
    raise AssertionError(f"unhandled command {args.command!r}")
