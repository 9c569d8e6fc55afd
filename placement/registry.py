"""The node registry part of the placement state (PURE): registration,
node states (up, down, draining, removed) and down detection.

Functions over the state's ``nodes`` dict; the caller (placement/state.py)
bumps the map version when one returns a changed node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from placement.commands import RegisterNode, RejectCode, Rejected, SetNodeState
from placement.model import Node, NodeState


def register(nodes: dict[int, Node], cmd: RegisterNode) -> tuple[int, Node | None]:
    """(the node's id, the node if the registry changed). Node id 0: the
    next free id. Registering again with the same fields changes nothing."""
    nid = cmd.node_id or (max(nodes, default=0) + 1)
    labels = tuple(sorted(dict(cmd.labels).items()))
    node = Node(nid, cmd.kind, cmd.address, labels, NodeState.UP)
    if nodes.get(nid) == node:
        return nid, None
    nodes[nid] = node
    return nid, node


def set_state(nodes: dict[int, Node], cmd: SetNodeState) -> Rejected | tuple[NodeState, Node | None]:
    """(the node's state now, the node if it changed), or Rejected for an unknown node."""
    node = nodes.get(cmd.node_id)
    if node is None:
        return Rejected(RejectCode.NODE_NOT_FOUND, f"node {cmd.node_id} is not registered")
    if node.state == cmd.state:
        return node.state, None
    node = dataclasses.replace(node, state=cmd.state)
    nodes[cmd.node_id] = node
    return node.state, node


def nodes_to_mark_down(
    nodes: Mapping[int, Node], last_heard: Mapping[int, float], now: float, down_after_s: float, default_heard: float
) -> list[int]:
    """Up nodes unheard for longer than down_after_s (a node never heard
    counts as heard at default_heard: when this leader took over)."""
    return [
        nid
        for nid, n in sorted(nodes.items())
        if n.state == NodeState.UP and now - last_heard.get(nid, default_heard) > down_after_s
    ]
