"""`flotilla ctl --endpoints <placement>`: administer a cluster (wiring only).

    nodes                         the node registry
    shards                        id, slots, replicas, leader, epoch
    operators                     running and recently ended operators
    split SHARD [--at SLOT]       split a shard (default: at its middle slot)
    move SHARD FROM TO            move a replica between store nodes
    transfer-leader SHARD NODE    move a shard's leadership
    drain NODE [--undo]           move every replica and leader off a node
    cancel OPERATOR               cancel a running operator (a learner it added is removed)

Human tables by default, `-o json` for scripts. Calls go to the placement
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

from flotillapb import placement_pb2 as ppb
from placement.client import PlacementClient, PlacementUnavailable, parse_endpoints


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoints", required=True, help="placement servers, host:port[,host:port...]")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    sub = p.add_subparsers(dest="ctl_command", required=True)
    sub.add_parser("nodes", help="list nodes")
    sub.add_parser("shards", help="list shards")
    sub.add_parser("operators", help="list operators")
    s = sub.add_parser("split", help="split a shard")
    s.add_argument("shard", type=int)
    s.add_argument("--at", type=int, default=0, help="first slot of the new shard (default: the middle)")
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


def _slots(d: Any) -> str:
    return ",".join(f"{r.start}-{r.end - 1}" for r in d.slots)


def _replicas(d: Any) -> str:
    return ",".join(f"{r.node_id}{'(L)' if r.learner else ''}" for r in d.replicas)


def _steps(op: ppb.OperatorInfo) -> str:
    out = []
    for i, s in enumerate(op.steps):
        kind = ppb.StepKind.Name(s.kind).lower().replace("_", "-")
        arg = f"{s.new_shard_id}@{s.at_slot}" if s.kind == ppb.SPLIT else str(s.node_id)
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


async def run(args: argparse.Namespace) -> tuple[object, str]:
    """(the JSON-able answer, the table) of one ctl command."""
    client = PlacementClient(parse_endpoints(args.endpoints), timeout_s=args.timeout)
    try:
        cmd = args.ctl_command
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
    try:
        data, text = asyncio.run(run(args))
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.details()} ({exc.code().name})", file=sys.stderr)
        return 1
    except PlacementUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, sort_keys=True) if args.output == "json" else text)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="flotilla ctl", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
