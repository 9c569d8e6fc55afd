"""The runtime's envelope around proposal payloads, so the proposer can be
answered with the result of applying its own entry.

    B version=1 | Q node_id | Q seq | payload

A conf change carries the same header (without payload) in its context.
Entries are replicated as they are, so the envelope is part of the log format.
"""

from __future__ import annotations

import struct

_HEADER = struct.Struct(">BQQ")
VERSION = 1
HEADER_SIZE = _HEADER.size


def wrap(node_id: int, seq: int, payload: bytes) -> bytes:
    return _HEADER.pack(VERSION, node_id, seq) + payload


def unwrap(data: bytes) -> tuple[int, int, bytes]:
    if len(data) < HEADER_SIZE:
        raise ValueError("entry shorter than the proposal envelope")
    version, node_id, seq = _HEADER.unpack_from(data)
    if version != VERSION:
        raise ValueError(f"unknown proposal envelope version {version}")
    return node_id, seq, data[HEADER_SIZE:]
