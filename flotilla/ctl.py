"""`flotilla ctl --endpoints <endpoints>`: administer a cluster (wiring only).

--endpoints names placement servers or routers (their etcd client port, e.g.
127.0.0.1:2379), in any mix: a router answers Discovery.Placement with the
placement servers it follows (proto/flotillapb/discovery.proto), an endpoint
that does not serve Discovery is taken for a placement server.

    status                        an overview: nodes up, suspect and down, shards without a
                                  leader or under-replicated, operators running; exit status 1
                                  when something needs attention
    nodes                         the node registry
    shards                        id, slots, replicas, leader, epoch
    operators                     running and recently ended operators
    split SHARD [--at SLOT]       split a shard (default: at its middle slot)
    merge TARGET SOURCE           merge shard SOURCE into shard TARGET (SOURCE's replicas move
                                  onto TARGET's nodes first if they differ)
    move SHARD FROM TO            move a replica between store nodes
    transfer-leader SHARD NODE    move a shard's leadership
    drain NODE [--undo]           move every replica and leader off a node
    cancel OPERATOR               cancel a running operator (a learner it added is removed)
    hashkv [--revision R]         every replica's hash of every shard (StoreAdmin.HashKV), at one
                                  revision per shard; a replica that differs from its leader is
                                  flagged MISMATCH and the exit status is 1

Human tables by default, `-o json` for scripts (before or after the
command). Calls go to the placement
leader (followed from any endpoint). Exit status 1 with the server's
message when a command is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc.aio
from google.protobuf import json_format

from flotillapb import discovery_pb2 as dpb
from flotillapb import discovery_pb2_grpc
from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotilla.procs import add_peer_tls_arguments, configure_peer_tls
from rpc import tls
from rpc.placementclient import PlacementClient, PlacementUnavailable, parse_endpoints


class _SubParser(argparse.ArgumentParser):
    """A command's parser: it takes `-o/--output` too, so `-o json` may come
    after the command (the value given there wins; absent, the one before
    the command stays)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS, help="table (default) or json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoints",
        required=True,
        help="placement servers or routers (their etcd client port), host:port[,host:port...]",
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    add_peer_tls_arguments(p, server=False)  # a cluster with peer TLS: the CA, and a certificate it accepts
    sub = p.add_subparsers(dest="ctl_command", required=True, parser_class=_SubParser)
    sub.add_parser("status", help="overview: nodes up/suspect/down, shards without a leader or under-replicated, operators running")
    sub.add_parser("nodes", help="list nodes")
    sub.add_parser("shards", help="list shards")
    sub.add_parser("operators", help="list operators")
    s = sub.add_parser("split", help="split a shard")
    s.add_argument("shard", type=int)
    s.add_argument("--at", type=int, default=0, help="first slot of the new shard (default: the middle)")
    s = sub.add_parser("merge", help="merge shard SOURCE into shard TARGET")
    s.add_argument("target", type=int, help="the shard that stays (and takes the other's slots)")
    s.add_argument("source", type=int, help="the shard that leaves the map")
    s = sub.add_parser("move", help="move a replica")
    s.add_argument("shard", type=int)
    s.add_argument("from_node", type=int)
    s.add_argument("to_node", type=int)
    s = sub.add_parser("transfer-leader", help="transfer a shard's leadership")
    s.add_argument("shard", type=int)
    s.add_argument("node", type=int)
    s = sub.add_parser("drain", help="drain a node")
    s.add_argument("node", type=int)
    s.add_argument("--undo", action="store_true", help="mark the node up again")
    s = sub.add_parser("cancel", help="cancel an operator")
    s.add_argument("operator", type=int)
    s = sub.add_parser("hashkv", help="compare the replicas of every shard by their MVCC hash")
    s.add_argument("--revision", type=int, default=0, help="revision to hash at (default: each shard leader's newest)")


def _slots(d: Any) -> str:
    return ",".join(f"{r.start}-{r.end - 1}" for r in d.slots)


def _replicas(d: Any) -> str:
    return ",".join(f"{r.node_id}{'(L)' if r.learner else ''}" for r in d.replicas)


def _steps(op: ppb.OperatorInfo) -> str:
    out = []
    for i, s in enumerate(op.steps):
        kind = ppb.StepKind.Name(s.kind).lower().replace("_", "-")
        if s.kind == ppb.SPLIT:
            arg = f"{s.new_shard_id}@{s.at_slot}"
        elif s.kind in (ppb.PREPARE_MERGE, ppb.COMMIT_MERGE):
            arg = str(s.other_shard_id)
        else:
            arg = str(s.node_id)
        mark = "*" if i == op.step_index and op.state == "running" else ""
        out.append(f"{mark}{kind}({arg})")
    return " ".join(out)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _shard_figures(st: ppb.ShardStats | None) -> tuple[str, str, str, str]:
    """Size, keys, reads/s and writes/s of a shard's last leader heartbeat
    ("-" when placement has none, e.g. a follower answered)."""
    if st is None:
        return ("-", "-", "-", "-")
    return (str(st.size_bytes), str(st.key_count), f"{st.read_rate:.1f}", f"{st.write_rate:.1f}")


async def _replica_hash(address: str, shard_id: int, revision: int, deadline: float) -> spb.ShardHashKVResponse:
    """One replica's HashKV, retried while it has not applied up to revision yet."""
    loop = asyncio.get_running_loop()
    async with tls.peer_aio_channel(address) as channel:
        stub = store_pb2_grpc.StoreAdminStub(channel)
        while True:
            left = deadline - loop.time()
            a = await stub.HashKV(spb.ShardHashKVRequest(shard_id=shard_id, revision=revision), timeout=max(0.1, left))
            err = a.header.error
            behind = err.HasField("routing") and err.routing.HasField("stale_read_not_ready")
            if not behind or loop.time() >= deadline:
                return a
            await asyncio.sleep(0.05)  # sleep-ok: wait for the replica to apply up to revision, within the deadline


async def hashkv(m: ppb.ClusterMap, revision: int, timeout_s: float) -> tuple[list[dict[str, object]], list[int]]:
    """A row per replica of every shard, and the shards whose replicas differ.
    The leader (else the first replica) is hashed first, at `revision` (0:
    its newest); the others at the revision it hashed."""
    addresses = {n.node_id: n.address for n in m.nodes}
    loop = asyncio.get_running_loop()
    rows: list[dict[str, object]] = []
    mismatched: list[int] = []
    for s in sorted(m.shards, key=lambda s: s.descriptor.shard_id):
        d = s.descriptor
        ids = [r.node_id for r in d.replicas]
        first = d.leader_node_id if d.leader_node_id in ids else ids[0]
        order = [first, *(n for n in ids if n != first)]
        rev = revision
        answers: dict[int, object] = {}
        for nid in order:
            address = next((r.address for r in d.replicas if r.node_id == nid and r.address), addresses.get(nid, ""))
            try:
                a = await _replica_hash(address, d.shard_id, rev, loop.time() + timeout_s)
            except grpc.aio.AioRpcError as exc:
                answers[nid] = f"unreachable: {exc.code().name}"
                continue
            if a.header.HasField("error"):
                answers[nid] = f"error: {a.header.error}".strip().replace("\n", " ")
                continue
            rev = rev or a.hash_revision
            answers[nid] = a
        got = {n: (a.hash, a.compact_revision) for n, a in answers.items() if isinstance(a, spb.ShardHashKVResponse)}
        if len(set(got.values())) > 1:
            mismatched.append(d.shard_id)
        reference = got.get(order[0])  # the leader's, when it answered
        for nid in order:
            answer = answers[nid]
            row: dict[str, object] = {"shard": d.shard_id, "node": nid, "leader": nid == d.leader_node_id}
            if isinstance(answer, spb.ShardHashKVResponse):
                row.update(
                    revision=answer.hash_revision, compact_revision=answer.compact_revision, versions=answer.versions, hash=answer.hash
                )
                row["mismatch"] = d.shard_id in mismatched and got[nid] != reference
            else:
                row["error"] = answer
            rows.append(row)
    return rows, mismatched


def _hashkv_table(rows: list[dict[str, object]], mismatched: list[int]) -> str:
    body = table(
        ("SHARD", "NODE", "ROLE", "REVISION", "COMPACT", "VERSIONS", "HASH", "NOTE"),
        [
            (r["shard"], r["node"], "leader" if r["leader"] else "follower", r.get("revision", "-"), r.get("compact_revision", "-"),
             r.get("versions", "-"), f"{r['hash']:08x}" if "hash" in r else "-",
             "MISMATCH" if r.get("mismatch") else ("mismatch in shard" if r["shard"] in mismatched else r.get("error", "")))
            for r in rows
        ],
    )
    verdict = f"replicas differ in shard(s) {', '.join(map(str, mismatched))}" if mismatched else "every shard's replicas agree"
    return f"{body}\n{verdict}"


class NoPlacement(Exception):
    """A router endpoint follows no placement (a static map): nothing to administer."""


async def placement_endpoints(endpoints: Sequence[str], timeout_s: float) -> list[str]:
    """The placement servers behind `endpoints`: a router's (Discovery.Placement)
    in its place, any other endpoint kept as it is (a placement server answers
    UNIMPLEMENTED; one that does not answer is left for the placement client to
    try and report)."""

    async def ask(address: str) -> list[str]:
        async with tls.peer_aio_channel(address) as channel:
            stub = discovery_pb2_grpc.DiscoveryStub(channel)
            try:
                resp: dpb.PlacementEndpointsResponse = await stub.Placement(dpb.PlacementEndpointsRequest(), timeout=timeout_s)
            except grpc.aio.AioRpcError:
                return [address]
        if not resp.endpoints:
            raise NoPlacement(f"{address} is a {resp.role or 'router'} that follows no placement servers (a static map)")
        return list(resp.endpoints)

    found = await asyncio.gather(*(ask(a) for a in endpoints))
    return list(dict.fromkeys(a for got in found for a in got))


def status_report(resp: ppb.GetMapResponse, ops: Sequence[ppb.OperatorInfo]) -> tuple[dict[str, object], str]:
    """`ctl status`: (the JSON answer, the text) from the map and the operators."""
    m = resp.map
    suspects = set(resp.suspect_node_ids)
    state = {n.node_id: n.state for n in m.nodes}
    nodes: dict[str, list[int]] = {"up": [], "suspect": [], "down": [], "draining": [], "removed": []}
    for n in sorted(m.nodes, key=lambda n: n.node_id):
        if n.kind != ppb.STORE and n.kind != ppb.ROUTER:
            continue
        name = "suspect" if n.node_id in suspects else ppb.NodeState.Name(n.state).lower()
        nodes.setdefault(name, []).append(n.node_id)
    routers = [n.node_id for n in m.nodes if n.kind == ppb.ROUTER]
    target = max((sum(not r.learner for r in s.descriptor.replicas) for s in m.shards), default=0)
    leaderless: list[int] = []
    under: list[dict[str, object]] = []
    for s in sorted(m.shards, key=lambda s: s.descriptor.shard_id):
        d = s.descriptor
        ids = [r.node_id for r in d.replicas]
        if not d.leader_node_id or d.leader_node_id not in ids or state.get(d.leader_node_id) == ppb.DOWN:
            leaderless.append(d.shard_id)
        healthy = [r.node_id for r in d.replicas if not r.learner and state.get(r.node_id) == ppb.UP and r.node_id not in suspects]
        if len(healthy) < target:
            under.append({"shard": d.shard_id, "healthy_voters": len(healthy), "replicas": ids})
    running = [o for o in ops if o.state == "running"]
    problems = bool(leaderless or under or nodes["down"] or nodes["suspect"])
    answer: dict[str, object] = {
        "cluster_id": m.cluster_id,
        "map_version": m.map_version,
        "nodes": nodes,
        "routers": routers,
        "shards": len(m.shards),
        "replicas_per_shard": target,
        "shards_without_leader": leaderless,
        "under_replicated_shards": under,
        "operators_running": [json_format.MessageToDict(o) for o in running],
        "healthy": not problems,
    }

    def ids(xs: Sequence[object]) -> str:
        return ",".join(map(str, xs)) if xs else "-"

    stores = [n for n in m.nodes if n.kind == ppb.STORE]
    lines = [
        f"cluster {m.cluster_id:x}, map version {m.map_version}" if m.cluster_id else "cluster not bootstrapped yet",
        f"stores: {len(stores)}: up {ids([n for n in nodes['up'] if n not in routers])}, suspect {ids(nodes['suspect'])}, "
        f"down {ids([n for n in nodes['down'] if n not in routers])}, draining {ids(nodes['draining'])}",
        f"routers: {len(routers)}: up {ids([n for n in nodes['up'] if n in routers])}, down {ids([n for n in nodes['down'] if n in routers])}",
        f"shards: {len(m.shards)} ({target} replicas each): without a leader {ids(leaderless)}, "
        f"under-replicated {ids([u['shard'] for u in under])}",
        f"operators running: {len(running)}" + "".join(f"\n  {o.id} {o.kind} shard {o.shard_id}: {_steps(o)}" for o in running),
        "healthy" if not problems else "needs attention",
    ]
    return answer, "\n".join(lines)


async def run(args: argparse.Namespace) -> tuple[object, str]:
    """(the JSON-able answer, the table) of one ctl command."""
    endpoints = await placement_endpoints(parse_endpoints(args.endpoints), min(args.timeout, 3.0))
    client = PlacementClient(endpoints, timeout_s=args.timeout)
    try:
        cmd = args.ctl_command
        if cmd == "status":
            # ListOperators first: only the leader answers it, and the client then prefers the
            # leader, whose GetMap carries what only it knows (the suspect nodes).
            ops = (await client.call("ListOperators", ppb.ListOperatorsRequest())).operators
            resp = await client.call("GetMap", ppb.GetMapRequest(linearizable=True))
            return status_report(resp, ops)
        if cmd in ("nodes", "shards"):
            resp = await client.call("GetMap", ppb.GetMapRequest(linearizable=True))
            m = resp.map
            stats = {st.shard_id: st for st in resp.shard_stats}
            if cmd == "nodes":
                rows = [
                    (n.node_id, ppb.NodeKind.Name(n.kind).lower(), n.address, ppb.NodeState.Name(n.state).lower(),
                     ",".join(f"{lb.key}={lb.value}" for lb in n.labels) or "-",
                     sum(any(r.node_id == n.node_id for r in s.descriptor.replicas) for s in m.shards),
                     sum(s.descriptor.leader_node_id == n.node_id for s in m.shards))
                    for n in m.nodes
                ]
                return [json_format.MessageToDict(n) for n in m.nodes], table(("ID", "KIND", "ADDRESS", "STATE", "LABELS", "REPLICAS", "LEADERS"), rows)
            rows = [
                (s.descriptor.shard_id, _slots(s.descriptor), _replicas(s.descriptor), s.descriptor.leader_node_id or "-",
                 f"{s.descriptor.epoch.conf_version}/{s.descriptor.epoch.slot_version}",
                 *_shard_figures(stats.get(s.descriptor.shard_id)))
                for s in m.shards
            ]
            answer = [
                {**json_format.MessageToDict(s), "stats": json_format.MessageToDict(stats[s.descriptor.shard_id])}
                if s.descriptor.shard_id in stats
                else json_format.MessageToDict(s)
                for s in m.shards
            ]
            return answer, table(("SHARD", "SLOTS", "REPLICAS", "LEADER", "EPOCH", "SIZE", "KEYS", "READS/S", "WRITES/S"), rows)
        if cmd == "hashkv":
            m = (await client.call("GetMap", ppb.GetMapRequest(linearizable=True))).map
            replica_rows, mismatched = await hashkv(m, args.revision, args.timeout)
            return {"replicas": replica_rows, "mismatched_shards": mismatched}, _hashkv_table(replica_rows, mismatched)
        if cmd == "operators":
            ops = (await client.call("ListOperators", ppb.ListOperatorsRequest())).operators
            rows = [(o.id, o.kind, o.shard_id, o.state, f"{o.age_s:.1f}s", _steps(o), o.note) for o in ops]
            return [json_format.MessageToDict(o) for o in ops], table(("ID", "KIND", "SHARD", "STATE", "AGE", "STEPS", "NOTE"), rows)
        if cmd == "drain":
            resp = await client.call("Drain", ppb.DrainRequest(node_id=args.node, undo=args.undo))
            state = ppb.NodeState.Name(resp.state).lower()
            return {"node_id": args.node, "state": state}, f"node {args.node} is {state}"
        if cmd == "cancel":
            resp = await client.call("CancelOperator", ppb.CancelOperatorRequest(id=args.operator))
            text = f"operator {args.operator} cancelled"
            if resp.HasField("rollback"):
                text += f"; operator {resp.rollback.id} removes the learner it added: {_steps(resp.rollback)}"
            return json_format.MessageToDict(resp), text
        if cmd == "split":
            resp = await client.call("Split", ppb.SplitRequest(shard_id=args.shard, at_slot=args.at))
        elif cmd == "merge":
            resp = await client.call("Merge", ppb.MergeRequest(shard_id=args.target, other_shard_id=args.source))
        elif cmd == "move":
            resp = await client.call("Move", ppb.MoveRequest(shard_id=args.shard, from_node=args.from_node, to_node=args.to_node))
        elif cmd == "transfer-leader":
            resp = await client.call("TransferLeader", ppb.TransferLeaderRequest(shard_id=args.shard, node_id=args.node))
        else:
            raise ValueError(f"unknown ctl command {cmd!r}")
        op = resp.operator
        return json_format.MessageToDict(op), f"operator {op.id} ({op.kind}) started on shard {op.shard_id}: {_steps(op)}"
    finally:
        await client.close()


def main(args: argparse.Namespace) -> int:
    configure_peer_tls(args, what="flotilla ctl")
    try:
        data, text = asyncio.run(run(args))
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.details()} ({exc.code().name})", file=sys.stderr)
        return 1
    except (PlacementUnavailable, NoPlacement) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, sort_keys=True) if args.output == "json" else text)
    if isinstance(data, dict) and data.get("mismatched_shards"):
        return 1  # hashkv: replicas differ
    if args.ctl_command == "status" and isinstance(data, dict) and not data.get("healthy"):
        return 1  # status: something needs attention
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="flotilla ctl", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
