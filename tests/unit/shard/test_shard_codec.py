"""The log-entry encoding of commands and the dedup table's outcomes: every
request and response round-trips (property test over nested txns), and any
malformed payload raises CodecError, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shard import codec
from shard.errors import ERRORS_BY_CODE, DuplicateKey, SlotNotOwned
from shard.types import (
    AckResponse,
    ClosedTs,
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    SortOrder,
    SortTarget,
    Split,
    TxnRequest,
    TxnResponse,
)

B = st.binary(max_size=6)
I64 = st.integers(-(1 << 63), (1 << 63) - 1)
U64 = st.integers(0, (1 << 64) - 1)

PUTS = st.builds(PutRequest, B, B, I64, st.booleans(), st.booleans(), st.booleans())
DELETES = st.builds(DeleteRangeRequest, B, B, st.booleans())
RANGES = st.builds(
    RangeRequest, B, B, I64, I64, st.sampled_from(SortOrder), st.sampled_from(SortTarget),
    st.booleans(), st.booleans(), st.booleans(), I64, I64, I64, I64,
)


@st.composite
def compares(draw):
    target = draw(st.sampled_from(CompareTarget))
    operand = draw(B) if target == CompareTarget.VALUE else draw(I64)
    return Compare(draw(B), target, draw(st.sampled_from(CompareResult)), operand, draw(B))


OPS = st.recursive(
    st.one_of(PUTS, DELETES, RANGES),
    lambda inner: st.builds(
        TxnRequest,
        st.lists(compares(), max_size=3).map(tuple),
        st.lists(inner, max_size=3).map(tuple),
        st.lists(inner, max_size=3).map(tuple),
    ),
    max_leaves=12,
)
TXNS = st.builds(TxnRequest, st.lists(compares(), max_size=3).map(tuple), st.lists(OPS, max_size=4).map(tuple), st.lists(OPS, max_size=4).map(tuple))
REQUESTS = st.one_of(
    PUTS,
    DELETES,
    TXNS,
    st.builds(CompactionRequest, I64, st.booleans()),
    st.builds(ClosedTs, U64),
    st.builds(Split, U64, st.lists(st.tuples(st.integers(0, 65536), st.integers(0, 65536)), max_size=3).map(tuple)),
)
COMMANDS = st.builds(Command, REQUESTS, U64, U64, U64, U64)


@settings(max_examples=300)
@given(cmd=COMMANDS)
def test_command_roundtrip(cmd):
    assert codec.decode_command(codec.encode_command(cmd)) == cmd


KVS = st.builds(KeyValue, B, I64, I64, I64, B, I64)
RESPONSE_OPS = st.recursive(
    st.one_of(
        st.builds(PutResponse, I64, st.none() | KVS),
        st.builds(DeleteRangeResponse, I64, I64, st.lists(KVS, max_size=2).map(tuple)),
        st.builds(RangeResponse, I64, st.lists(KVS, max_size=2).map(tuple), st.booleans(), I64),
    ),
    lambda inner: st.builds(TxnResponse, I64, st.booleans(), st.lists(inner, max_size=3).map(tuple)),
    max_leaves=10,
)
OUTCOMES = st.one_of(
    RESPONSE_OPS,
    st.builds(CompactionResponse, I64),
    st.builds(AckResponse, I64),
    st.sampled_from(sorted(ERRORS_BY_CODE)).map(lambda c: ERRORS_BY_CODE[c]()),
)


@settings(max_examples=300)
@given(outcome=OUTCOMES)
def test_outcome_roundtrip(outcome):
    assert codec.decode_outcome(codec.encode_outcome(outcome)) == outcome


def test_error_outcome_keeps_class_and_message():
    err = codec.decode_outcome(codec.encode_outcome(SlotNotOwned("key b'x' is in slot 3")))
    assert type(err) is SlotNotOwned and err.message == "key b'x' is in slot 3"
    err = codec.decode_outcome(codec.encode_outcome(DuplicateKey()))
    assert type(err) is DuplicateKey and str(err) == "etcdserver: duplicate key given in txn request"


def test_encoding_is_stable():
    # The log outlives the code: this exact encoding must keep decoding.
    cmd = Command(PutRequest(b"k", b"v", 7, prev_kv=True), router_id=1, seq=2, stamp=3, closed_ts=4)
    raw = bytes.fromhex(
        "0101" "0000000000000001" "0000000000000002" "0000000000000003" "0000000000000004"
        "000000016b" "0000000176" "0000000000000007" "01"
    )
    assert codec.encode_command(cmd) == raw
    assert codec.decode_command(raw) == cmd


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01",
        b"\x02" + b"\x00" * 40,  # unknown version
        b"\x01\x63" + b"\x00" * 32,  # unknown kind
        b"\x01\x07" + b"\x00" * 32,  # a bare RangeRequest is not a command
        codec.encode_command(Command(PutRequest(b"k")))[:-1],  # cut short
        codec.encode_command(Command(PutRequest(b"k"))) + b"\x00",  # trailing bytes
        codec.encode_command(Command(ClosedTs(1)))[:34] + b"\xff\xff\xff\xff",
    ],
)
def test_bad_commands(raw):
    with pytest.raises(codec.CodecError):
        codec.decode_command(raw)


@settings(max_examples=500)
@given(raw=st.binary(max_size=80))
def test_garbage_raises_only_codec_error(raw):
    for decode in (codec.decode_command, codec.decode_outcome):
        try:
            decode(raw)
        except codec.CodecError:
            pass


@given(cmd=COMMANDS, cut=st.integers(0, 200))
def test_truncated_commands_raise_codec_error(cmd, cut):
    raw = codec.encode_command(cmd)
    if cut < len(raw):
        with pytest.raises(codec.CodecError):
            codec.decode_command(raw[:cut])


def test_type_errors_on_encode():
    with pytest.raises(TypeError):
        codec.encode_command(Command(RangeRequest(b"k")))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.encode_command(Command(TxnRequest((Compare(b"k", CompareTarget.VALUE, CompareResult.EQUAL, 1),))))
    with pytest.raises(TypeError):
        codec.encode_command(Command(TxnRequest((Compare(b"k", CompareTarget.MOD, CompareResult.EQUAL, b"x"),))))


def test_bad_outcomes():
    good = codec.encode_outcome(DuplicateKey())
    for raw in (b"", b"\x02\x00", good[:-1], good + b"\x00", b"\x01\x01\x63" + b"\x00" * 4, b"\x01\x01\x06\x00\x00\x00\x01\xff", b"\x01\x00\x63" + b"\x00" * 8):
        with pytest.raises(codec.CodecError):
            codec.decode_outcome(raw)
