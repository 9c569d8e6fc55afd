"""Membership changes, one server at a time (Raft thesis §4.1), with the known fix.

A conf change takes effect when the host applies its committed entry
(`RawNode.apply_conf_change`), as in etcd. Safety of single-server changes
relies on two rules enforced by the leader (raft.py):

- at most one conf change is pending (proposed but not applied);
- a leader proposes a conf change only after it has committed an entry of its
  own term (Ongaro's fix, raft-dev 2015: otherwise two leaders of different
  configurations can exist across a leader change).

Joint consensus is not implemented; demoting a voter (ADD_LEARNER on a voter)
is a single-step removal from the voters.

Entry encoding (data of EntryKind.CONF_CHANGE entries): version byte 1, type
byte, node id as unsigned 64-bit big-endian, then the context bytes.
"""

from __future__ import annotations

import struct

from raft.core.errors import RaftInvariantError
from raft.core.tracker import ProgressTracker
from raft.core.types import ConfChange, ConfChangeType, ConfState

_VERSION = 1
_HEADER = struct.Struct(">BBQ")


def encode_conf_change(cc: ConfChange) -> bytes:
    return _HEADER.pack(_VERSION, int(cc.type), cc.node_id) + cc.context


def decode_conf_change(data: bytes) -> ConfChange:
    if len(data) < _HEADER.size:
        raise ValueError("conf change entry too short")
    version, typ, node_id = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"unknown conf change encoding version {version}")
    return ConfChange(type=ConfChangeType(typ), node_id=node_id, context=bytes(data[_HEADER.size :]))


def voters_after(cs: ConfState, cc: ConfChange) -> set[int]:
    voters = set(cs.voters)
    if cc.type == ConfChangeType.ADD_NODE:
        voters.add(cc.node_id)
    else:
        voters.discard(cc.node_id)
    return voters


def apply(trk: ProgressTracker, cc: ConfChange, last_index: int) -> None:
    """Apply a committed conf change to the tracker (deterministic on every replica)."""
    if cc.node_id <= 0:
        raise RaftInvariantError(f"conf change for invalid node id {cc.node_id}")
    if not voters_after(trk.conf_state(), cc):
        raise RaftInvariantError(f"conf change {cc} removes all voters")
    pr = trk.progress.get(cc.node_id)
    if cc.type == ConfChangeType.ADD_NODE:
        if pr is None:
            trk.init_progress(cc.node_id, match=0, next_=max(last_index, 1), is_learner=False, active=True)
        else:
            pr.is_learner = False
    elif cc.type == ConfChangeType.ADD_LEARNER:
        if pr is None:
            trk.init_progress(cc.node_id, match=0, next_=max(last_index, 1), is_learner=True, active=True)
        else:
            pr.is_learner = True
    elif cc.type == ConfChangeType.REMOVE_NODE:
        trk.progress.pop(cc.node_id, None)
    else:  # pragma: no cover - enum is exhaustive
        raise RaftInvariantError(f"unknown conf change type {cc.type}")


def restore(trk: ProgressTracker, cs: ConfState, last_index: int) -> None:
    """Rebuild the tracker from a ConfState (bootstrap, restart, snapshot)."""
    trk.progress.clear()
    trk.reset_votes()
    for v in cs.voters:
        trk.init_progress(v, match=0, next_=last_index + 1, is_learner=False, active=False)
    for learner in cs.learners:
        if learner in trk.progress:
            raise RaftInvariantError(f"node {learner} is both voter and learner")
        trk.init_progress(learner, match=0, next_=last_index + 1, is_learner=True, active=False)
