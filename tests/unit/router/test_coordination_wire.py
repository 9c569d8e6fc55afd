"""The Lock and Election services are wire-compatible with etcd 3.5's
v3lockpb and v3electionpb: gRPC method paths come from the package and
service names, and messages from field numbers and types (as etcd's
v3lock.proto and v3election.proto define them)."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from flotillapb.etcd.v3electionpb import v3election_pb2 as elpb
from flotillapb.etcd.v3lockpb import v3lock_pb2 as lkpb


def _fields(msg: type) -> dict[str, tuple[int, int]]:
    return {f.name: (f.number, f.type) for f in msg.DESCRIPTOR.fields}  # type: ignore[attr-defined]


def test_lock_service_paths_and_messages() -> None:
    svc = lkpb.DESCRIPTOR.services_by_name["Lock"]
    assert svc.full_name == "v3lockpb.Lock"
    assert [m.name for m in svc.methods] == ["Lock", "Unlock"]
    assert _fields(lkpb.LockRequest) == {"name": (1, F.TYPE_BYTES), "lease": (2, F.TYPE_INT64)}
    assert _fields(lkpb.LockResponse) == {"header": (1, F.TYPE_MESSAGE), "key": (2, F.TYPE_BYTES)}
    assert _fields(lkpb.UnlockRequest) == {"key": (1, F.TYPE_BYTES)}


def test_election_service_paths_and_messages() -> None:
    svc = elpb.DESCRIPTOR.services_by_name["Election"]
    assert svc.full_name == "v3electionpb.Election"
    assert [(m.name, m.server_streaming) for m in svc.methods] == [
        ("Campaign", False), ("Proclaim", False), ("Leader", False), ("Observe", True), ("Resign", False),
    ]
    assert _fields(elpb.CampaignRequest) == {"name": (1, F.TYPE_BYTES), "lease": (2, F.TYPE_INT64), "value": (3, F.TYPE_BYTES)}
    assert _fields(elpb.LeaderKey) == {
        "name": (1, F.TYPE_BYTES), "key": (2, F.TYPE_BYTES), "rev": (3, F.TYPE_INT64), "lease": (4, F.TYPE_INT64),
    }
    assert _fields(elpb.LeaderResponse) == {"header": (1, F.TYPE_MESSAGE), "kv": (2, F.TYPE_MESSAGE)}
    assert _fields(elpb.ProclaimRequest) == {"leader": (1, F.TYPE_MESSAGE), "value": (2, F.TYPE_BYTES)}
    assert _fields(elpb.ResignRequest) == {"leader": (1, F.TYPE_MESSAGE)}
    assert elpb.LeaderResponse.DESCRIPTOR.fields_by_name["kv"].message_type.full_name == "mvccpb.KeyValue"
