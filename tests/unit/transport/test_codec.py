"""raft/transport/codec.py: core Message <-> protobuf, batches with coalesced
heartbeats, snapshot chunks. Round trips are property-tested over arbitrary
messages of every type."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotillapb import raft_pb2 as pb
from raft.core.types import (
    LOCAL_MESSAGES,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from raft.transport.codec import (
    CodecError,
    SnapshotAssembler,
    SnapshotChunker,
    decode_batch,
    encode_batch,
    is_compact_heartbeat,
    message_from_pb,
    message_to_pb,
)

PROPERTY = settings(max_examples=300, deadline=None, database=None)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=1000)
ints = st.one_of(small, u64)  # mostly small, like real ids and indexes
blobs = st.binary(max_size=40)

entries = st.builds(Entry, term=ints, index=ints, kind=st.sampled_from(EntryKind), data=blobs)
conf_states = st.builds(
    ConfState, voters=st.lists(ints, max_size=5).map(tuple), learners=st.lists(ints, max_size=3).map(tuple)
)
snapshot_headers = st.builds(
    Snapshot, metadata=st.builds(SnapshotMetadata, index=ints, term=ints, conf_state=conf_states), data=st.just(b"")
)


def messages_of(types: st.SearchStrategy[MessageType]) -> st.SearchStrategy[Message]:
    return st.builds(
        Message,
        type=types,
        to=ints,
        from_=ints,
        term=ints,
        log_term=ints,
        index=ints,
        entries=st.lists(entries, max_size=4).map(tuple),
        commit=ints,
        snapshot=st.none() | snapshot_headers,
        reject=st.booleans(),
        reject_hint=ints,
        context=blobs,
    )


# Heartbeats as the core makes them (compact), alongside arbitrary messages.
plain_heartbeats = st.builds(
    Message,
    type=st.sampled_from([MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP]),
    to=ints,
    from_=ints,
    term=ints,
    commit=ints,
    context=st.one_of(st.just(b""), blobs),
)
WIRE_TYPES = sorted(set(MessageType) - LOCAL_MESSAGES)
any_messages = messages_of(st.sampled_from(MessageType)) | plain_heartbeats
wire_messages = messages_of(st.sampled_from(WIRE_TYPES)) | plain_heartbeats
batches = st.lists(st.tuples(ints, wire_messages), max_size=30)


def reparse(m: pb.MessageBatch) -> pb.MessageBatch:
    return pb.MessageBatch.FromString(m.SerializeToString())


# -- single messages ---------------------------------------------------------------


def test_wire_enums_match_the_core() -> None:
    assert {v.number: v.name for v in pb.MessageType.DESCRIPTOR.values} == {
        t.value: f"MSG_{t.name}" for t in MessageType
    }
    assert {v.number: v.name for v in pb.EntryKind.DESCRIPTOR.values} == {
        k.value: f"ENTRY_{k.name}" for k in EntryKind
    }


@PROPERTY
@given(any_messages)
def test_message_round_trip(msg: Message) -> None:
    wire = pb.Message.FromString(message_to_pb(msg).SerializeToString())
    assert message_from_pb(wire) == msg


def test_snapshot_presence_survives_even_when_empty() -> None:
    msg = Message(type=MessageType.SNAP, snapshot=Snapshot())
    wire = pb.Message.FromString(message_to_pb(msg).SerializeToString())
    assert wire.HasField("snapshot")
    assert message_from_pb(wire) == msg
    assert message_from_pb(pb.Message(type=pb.MSG_APP)).snapshot is None


def test_snapshot_data_is_not_part_of_a_wire_message() -> None:
    msg = Message(type=MessageType.SNAP, snapshot=Snapshot(SnapshotMetadata(index=5, term=2), data=b"x" * 100))
    assert message_from_pb(message_to_pb(msg)) == dataclasses.replace(
        msg, snapshot=Snapshot(SnapshotMetadata(index=5, term=2))
    )


@pytest.mark.parametrize(
    "wire",
    [
        pb.Message(type=99),
        pb.Message(type=pb.MSG_APP, entries=[pb.Entry(term=1, index=1, kind=7)]),
    ],
    ids=["unknown-type", "unknown-entry-kind"],
)
def test_unknown_enum_values_are_codec_errors(wire: pb.Message) -> None:
    with pytest.raises(CodecError):
        message_from_pb(pb.Message.FromString(wire.SerializeToString()))


# -- batches -----------------------------------------------------------------------


@PROPERTY
@given(st.tuples(ints, ints), batches)
def test_batch_round_trip_is_exact(nodes: tuple[int, int], items: list[tuple[int, Message]]) -> None:
    batch = reparse(encode_batch(nodes[0], nodes[1], items))
    assert (batch.from_node, batch.to_node) == nodes
    assert decode_batch(batch) == items
    assert len(batch.heartbeats) == sum(is_compact_heartbeat(m) for _, m in items)


def test_heartbeats_of_500_groups_are_compact_records() -> None:
    items = [
        (gid, Message(type=MessageType.HEARTBEAT, to=2, from_=1, term=7, commit=100_000 + gid)) for gid in range(1, 501)
    ]
    batch = encode_batch(1, 2, items)
    assert len(batch.heartbeats) == 500
    assert len(batch.messages) == 0
    assert list(batch.runs) == []
    # ~14 bytes a heartbeat (about 20 as a full GroupMessage), in one batch.
    assert batch.ByteSize() < 500 * 16
    full = pb.MessageBatch(messages=[pb.GroupMessage(group_id=g, msg=message_to_pb(m)) for g, m in items])
    assert batch.ByteSize() < 0.8 * full.ByteSize()
    assert decode_batch(reparse(batch)) == items


def test_order_across_messages_and_heartbeats_is_kept() -> None:
    app = Message(type=MessageType.APP, to=2, from_=1, term=3, index=4, log_term=3, commit=4)
    hb = Message(type=MessageType.HEARTBEAT, to=2, from_=1, term=3, commit=4)
    resp = Message(type=MessageType.HEARTBEAT_RESP, to=2, from_=1, term=3)
    common = [(1, app), (2, app), (1, hb), (3, resp)]
    batch = encode_batch(1, 2, common)
    assert list(batch.runs) == []  # messages then heartbeats: the free case
    assert decode_batch(reparse(batch)) == common
    mixed = [(1, hb), (1, app), (2, resp), (2, hb), (3, app)]
    batch = encode_batch(1, 2, mixed)
    assert list(batch.runs) == [0, 1, 1, 2, 1]
    assert decode_batch(reparse(batch)) == mixed


def test_heartbeat_with_other_fields_travels_whole() -> None:
    odd = Message(type=MessageType.HEARTBEAT_RESP, to=1, from_=2, term=3, reject=True)
    batch = encode_batch(2, 1, [(9, odd)])
    assert len(batch.messages) == 1 and len(batch.heartbeats) == 0
    assert decode_batch(reparse(batch)) == [(9, odd)]


def test_empty_batch() -> None:
    assert decode_batch(reparse(encode_batch(1, 2, []))) == []


@pytest.mark.parametrize("mtype", sorted(LOCAL_MESSAGES))
def test_local_messages_never_go_on_the_wire(mtype: MessageType) -> None:
    with pytest.raises(CodecError):
        encode_batch(1, 2, [(1, Message(type=mtype))])
    forged = pb.MessageBatch(messages=[pb.GroupMessage(group_id=1, msg=pb.Message(type=int(mtype)))])
    with pytest.raises(CodecError):
        decode_batch(forged)


def test_snapshot_data_is_refused_in_a_batch() -> None:
    snap = Message(type=MessageType.SNAP, snapshot=Snapshot(SnapshotMetadata(index=1, term=1), data=b"data"))
    with pytest.raises(CodecError):
        encode_batch(1, 2, [(1, snap)])


@pytest.mark.parametrize(
    "runs",
    [[2], [0, 2], [1, 1, 1], [0, 0, 0, 1], [5, 5]],
    ids=["too-many-messages", "too-many-heartbeats", "overrun", "uncovered", "way-off"],
)
def test_inconsistent_runs_are_codec_errors(runs: list[int]) -> None:
    batch = pb.MessageBatch(
        messages=[pb.GroupMessage(group_id=1, msg=pb.Message(type=pb.MSG_APP))],
        heartbeats=[pb.Heartbeat(group_id=1)],
        runs=runs,
    )
    with pytest.raises(CodecError):
        decode_batch(batch)


# -- snapshot chunks ---------------------------------------------------------------

SNAP = Message(
    type=MessageType.SNAP,
    to=2,
    from_=1,
    term=4,
    snapshot=Snapshot(SnapshotMetadata(index=40, term=4, conf_state=ConfState(voters=(1, 2, 3)))),
)


def chunk_all(data: bytes, pieces: list[int], chunk_size: int) -> list[pb.SnapshotChunk]:
    chunker = SnapshotChunker(1, 2, 77, SNAP, chunk_size=chunk_size)
    out: list[pb.SnapshotChunk] = []
    pos = 0
    for n in pieces:
        out += chunker.add(data[pos : pos + n])
        pos += n
    out += chunker.add(data[pos:])
    out.append(chunker.finish())
    assert chunker.total_bytes == len(data)
    return out


@PROPERTY
@given(
    st.binary(max_size=3000),
    st.lists(st.integers(min_value=0, max_value=700), max_size=8),
    st.integers(min_value=1, max_value=1024),
)
def test_snapshot_chunks_round_trip(data: bytes, pieces: list[int], chunk_size: int) -> None:
    chunks = [pb.SnapshotChunk.FromString(c.SerializeToString()) for c in chunk_all(data, pieces, chunk_size)]
    assert [c.HasField("header") for c in chunks] == [True] + [False] * (len(chunks) - 1)
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(0 < len(c.data) <= chunk_size for c in chunks) or (data == b"" and len(chunks) == 1)
    assert len(chunks) == max(1, -(-len(data) // chunk_size))  # full chunks only
    asm = SnapshotAssembler(node_id=2, max_bytes=1 << 20)
    assert [asm.add(c) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    from_node, group_id, msg = asm.result()
    assert (from_node, group_id) == (1, 77)
    assert SNAP.snapshot is not None
    assert msg == dataclasses.replace(SNAP, snapshot=dataclasses.replace(SNAP.snapshot, data=data))


def test_chunker_refuses_non_snapshot_messages() -> None:
    with pytest.raises(CodecError):
        SnapshotChunker(1, 2, 3, Message(type=MessageType.APP))


def _chunks(data: bytes = b"abcdefgh", chunk_size: int = 3) -> list[pb.SnapshotChunk]:
    return chunk_all(data, [], chunk_size)


def _without_header(c: pb.SnapshotChunk) -> pb.SnapshotChunk:
    c = pb.SnapshotChunk.FromString(c.SerializeToString())
    c.ClearField("header")
    return c


@pytest.mark.parametrize(
    "mangle",
    [
        lambda cs: [_without_header(cs[0])] + cs[1:],
        lambda cs: [cs[0], cs[2]],
        lambda cs: [pb.SnapshotChunk(to_node=5, header=cs[0].header, last=True)],
        lambda cs: cs + [cs[-1]],
        lambda cs: [cs[0], pb.SnapshotChunk(from_node=1, to_node=2, group_id=78, offset=3, data=b"def")],
        lambda cs: [pb.SnapshotChunk(to_node=2, header=pb.Message(type=pb.MSG_APP), last=True)],
        lambda cs: _chunks(b"x" * 200, 64),
    ],
    ids=["no-header", "gap", "wrong-node", "after-last", "other-group", "not-a-snapshot", "too-big"],
)
def test_assembler_rejects_bad_streams(mangle: object) -> None:
    assert callable(mangle)
    asm = SnapshotAssembler(node_id=2, max_bytes=100)
    with pytest.raises(CodecError):
        for c in mangle(_chunks()):
            asm.add(c)


def test_assembler_result_needs_the_last_chunk() -> None:
    asm = SnapshotAssembler(node_id=2, max_bytes=100)
    asm.add(_chunks()[0])
    with pytest.raises(CodecError):
        asm.result()
