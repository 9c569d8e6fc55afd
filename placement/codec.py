"""The versioned encoding of placement's commands and records (PURE).

One version byte, then a JSON object (keys sorted, no spaces). Never pickle.

- commands (placement's Raft log entries): an object with an ``op`` field;
- the map record (cluster, nodes, shards, the shard-id high-water mark,
  retired shards) and one record per lease, live or ending: what
  placement/machine.py keeps in RocksDB;
- a snapshot: the map record and every lease record, hex-encoded.

Bytes this version cannot decode raise `CodecError` (raft.core.errors):
every replica would fail alike, so the process stops (fail-stop) rather
than diverge.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from placement.commands import (
    AttachKeys,
    AuthChange,
    AuthOp,
    Bootstrap,
    Command,
    GrantLease,
    KeyChange,
    LeaseKeysDeleted,
    RegisterNode,
    ReportShard,
    ReportShards,
    RevokeLease,
    SetNodeState,
)
from placement.model import Epoch, Node, NodeKind, NodeState, Replica, Shard
from raft.core.errors import CodecError
from shard.slots import normalize

CODEC_VERSION = 1


# --------------------------------------------------------------- commands


def encode_command(cmd: Command) -> bytes:
    if isinstance(cmd, Bootstrap):
        o: dict[str, object] = {"op": "bootstrap", "cluster_id": cmd.cluster_id, "slot_count": cmd.slot_count,
                                "initial_shards": cmd.initial_shards, "replicas": cmd.replicas}
    elif isinstance(cmd, RegisterNode):
        o = {"op": "register_node", "node_id": cmd.node_id, "kind": int(cmd.kind), "address": cmd.address, "labels": [list(kv) for kv in cmd.labels]}
    elif isinstance(cmd, SetNodeState):
        o = {"op": "set_node_state", "node_id": cmd.node_id, "state": int(cmd.state)}
    elif isinstance(cmd, ReportShard):
        o = {"op": "report_shard", "shard": _shard_obj(cmd.shard)}
    elif isinstance(cmd, ReportShards):
        o = {"op": "report_shards", "shards": [_shard_obj(s) for s in cmd.shards]}
    elif isinstance(cmd, GrantLease):
        o = {"op": "grant_lease", "lease_id": cmd.lease_id, "ttl_s": cmd.ttl_s}
    elif isinstance(cmd, RevokeLease):
        o = {"op": "revoke_lease", "lease_id": cmd.lease_id}
    elif isinstance(cmd, AttachKeys):
        o = {"op": "attach_keys", "changes": [[c.lease_id, c.key.hex(), c.detach] for c in cmd.changes]}
    elif isinstance(cmd, LeaseKeysDeleted):
        o = {"op": "lease_keys_deleted", "lease_id": cmd.lease_id, "keys": [k.hex() for k in cmd.keys]}
    elif isinstance(cmd, AuthChange):
        o = {
            "op": "auth", "auth_op": int(cmd.op), "actor": cmd.actor, "name": cmd.name, "role": cmd.role,
            "password": cmd.password.hex(), "no_password": cmd.no_password, "perm_type": cmd.perm_type,
            "key": cmd.key.hex(), "range_end": cmd.range_end.hex(), "token": cmd.token,
            "expires_ms": cmd.expires_ms, "now_ms": cmd.now_ms, "checked_revision": cmd.checked_revision,
        }
    else:
        raise TypeError(f"not a placement command: {cmd!r}")
    return _dump(o)


def decode_command(data: bytes) -> Command:
    o = _load(data)
    try:
        op = o["op"]
        if op == "bootstrap":
            return Bootstrap(int(o["cluster_id"]), int(o["slot_count"]), int(o["initial_shards"]), int(o["replicas"]))
        if op == "register_node":
            return RegisterNode(int(o["node_id"]), NodeKind(o["kind"]), str(o["address"]), tuple((str(k), str(v)) for k, v in o["labels"]))
        if op == "set_node_state":
            return SetNodeState(int(o["node_id"]), NodeState(o["state"]))
        if op == "report_shard":
            return ReportShard(_shard_from(o["shard"]))
        if op == "report_shards":
            return ReportShards(tuple(_shard_from(s) for s in o["shards"]))
        if op == "grant_lease":
            return GrantLease(int(o["lease_id"]), int(o["ttl_s"]))
        if op == "revoke_lease":
            return RevokeLease(int(o["lease_id"]))
        if op == "attach_keys":
            return AttachKeys(tuple(KeyChange(int(lid), bytes.fromhex(k), bool(d)) for lid, k, d in o["changes"]))
        if op == "lease_keys_deleted":
            return LeaseKeysDeleted(int(o["lease_id"]), tuple(bytes.fromhex(k) for k in o["keys"]))
        if op == "auth":
            return AuthChange(
                AuthOp(o["auth_op"]), str(o["actor"]), str(o["name"]), str(o["role"]), bytes.fromhex(o["password"]),
                bool(o["no_password"]), int(o["perm_type"]), bytes.fromhex(o["key"]), bytes.fromhex(o["range_end"]),
                str(o["token"]), int(o["expires_ms"]), int(o["now_ms"]), int(o["checked_revision"]),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"malformed placement command {op!r}: {exc}") from exc
    raise CodecError(f"unknown placement command {op!r}")


# ---------------------------------------------------------------- records


@dataclass(slots=True)
class MapRecord:
    """The map part of the state (cluster, nodes, shards): one record."""

    cluster_id: int = 0
    slot_count: int = 0
    map_version: int = 0
    nodes: dict[int, Node] = field(default_factory=dict)
    shards: dict[int, Shard] = field(default_factory=dict)
    max_shard_id: int = 0
    retired: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One lease: live (its granted TTL), or ending (revoked or expired, ttl 0)
    with the keys not deleted yet."""

    lease_id: int
    ttl_s: int
    keys: frozenset[bytes]
    ending: bool


def encode_map(m: MapRecord) -> bytes:
    return _dump(
        {
            "cluster_id": m.cluster_id,
            "slot_count": m.slot_count,
            "map_version": m.map_version,
            "nodes": [_node_obj(n) for _, n in sorted(m.nodes.items())],
            "shards": [_shard_obj(s) for _, s in sorted(m.shards.items())],
            "max_shard_id": m.max_shard_id,
            "retired": sorted(m.retired),
        }
    )


def decode_map(data: bytes) -> MapRecord:
    o = _load(data)
    m = MapRecord(cluster_id=int(o["cluster_id"]), slot_count=int(o["slot_count"]), map_version=int(o["map_version"]))
    for no in o["nodes"]:
        n = _node_from(no)
        m.nodes[n.node_id] = n
    for so in o["shards"]:
        s = _shard_from(so)
        m.shards[s.shard_id] = s
    m.max_shard_id = max(int(o.get("max_shard_id", 0)), max(m.shards, default=0))
    m.retired = {int(x) for x in o.get("retired", ())}
    return m


def encode_lease(r: LeaseRecord) -> bytes:
    return _dump({"id": r.lease_id, "ttl": 0 if r.ending else r.ttl_s, "keys": sorted(k.hex() for k in r.keys), "ending": r.ending})


def decode_lease(data: bytes) -> LeaseRecord:
    lo = _load(data)
    return LeaseRecord(int(lo["id"]), int(lo["ttl"]), frozenset(bytes.fromhex(k) for k in lo["keys"]), bool(lo["ending"]))


def encode_snapshot(map_record: bytes, lease_records: Iterable[bytes], auth_record: bytes = b"") -> bytes:
    o: dict[str, object] = {"map": map_record.hex(), "leases": [r.hex() for r in lease_records]}
    if auth_record:
        o["auth"] = auth_record.hex()
    return _dump(o)


def decode_snapshot(data: bytes) -> tuple[bytes, list[bytes]]:
    """(the map record, the lease records) of a snapshot."""
    o = _load(data)
    return bytes.fromhex(o["map"]), [bytes.fromhex(r) for r in o["leases"]]


def decode_snapshot_auth(data: bytes) -> bytes:
    """The auth record of a snapshot (placement/authbook.py), empty if it has none."""
    return bytes.fromhex(str(_load(data).get("auth", "")))


# ----------------------------------------------------------------- helpers


def _dump(o: Mapping[str, object]) -> bytes:
    return bytes([CODEC_VERSION]) + json.dumps(o, sort_keys=True, separators=(",", ":")).encode()


def _load(data: bytes) -> dict:  # type: ignore[type-arg]  # a JSON object: fields checked by the readers
    if not data or data[0] != CODEC_VERSION:
        raise CodecError(f"unknown placement record version {data[:1]!r} (this build reads {CODEC_VERSION})")
    try:
        o = json.loads(data[1:])
    except ValueError as exc:
        raise CodecError(f"malformed placement record: {exc}") from exc
    if not isinstance(o, dict):
        raise CodecError("malformed placement record: not an object")
    return o


def _node_obj(n: Node) -> dict[str, object]:
    return {"id": n.node_id, "kind": int(n.kind), "address": n.address, "labels": [list(kv) for kv in n.labels], "state": int(n.state)}


def _node_from(o: Mapping[str, object]) -> Node:
    labels = o["labels"]
    assert isinstance(labels, list)
    return Node(int(o["id"]), NodeKind(o["kind"]), str(o["address"]), tuple((str(k), str(v)) for k, v in labels), NodeState(o["state"]))  # type: ignore[call-overload]


def _shard_obj(s: Shard) -> dict[str, object]:
    return {
        "id": s.shard_id,
        "slots": [list(r) for r in s.slots],
        "replicas": [[r.node_id, r.learner] for r in s.replicas],
        "epoch": [s.epoch.conf_version, s.epoch.slot_version],
        "leader": s.leader_node_id,
        "leader_term": s.leader_term,
    }


def _shard_from(o: Mapping[str, object]) -> Shard:
    slots, replicas, epoch = o["slots"], o["replicas"], o["epoch"]
    assert isinstance(slots, list) and isinstance(replicas, list) and isinstance(epoch, list)
    return Shard(
        shard_id=int(o["id"]),  # type: ignore[call-overload]
        slots=normalize((int(lo), int(hi)) for lo, hi in slots),
        replicas=tuple(Replica(int(nid), bool(le)) for nid, le in replicas),
        epoch=Epoch(int(epoch[0]), int(epoch[1])),
        leader_node_id=int(o["leader"]),  # type: ignore[call-overload]
        leader_term=int(o["leader_term"]),  # type: ignore[call-overload]
    )
