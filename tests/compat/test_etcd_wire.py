"""Our etcd protos put etcd 3.5's bytes on the wire.

etcdctl and the etcd client libraries know nothing of Flotilla: they send
bytes to gRPC paths such as `/etcdserverpb.KV/Range`. What has to match is
therefore exactly what this file pins, from etcd's API reference
(api/etcdserverpb/rpc.proto, api/mvccpb/kv.proto, api/authpb/auth.proto):

- each message's field names, numbers, types and repeatedness, the enum
  values, and which fields share a oneof;
- the package, service and method names (they make the gRPC path) and which
  side of each method streams;
- the bytes themselves, for a few messages encoded by hand from the protobuf
  encoding rules (https://protobuf.dev/programming-guides/encoding/).

A real etcdctl, when one is on PATH, talks to a throwaway in-process server
built from the generated stubs (skipped otherwise).

Note: the generated modules register `etcdserverpb.*` in protobuf's default
descriptor pool. Another copy of etcd's protos imported into the same
process (the `etcd3` or `aetcd` client packages ship one) collides with it;
run such a client in a subprocess.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import descriptor as _descriptor

from flotillapb.etcd.authpb import auth_pb2
from flotillapb.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from flotillapb.etcd.mvccpb import kv_pb2

FD = _descriptor.FieldDescriptor

_SCALAR_NAMES = {
    FD.TYPE_BYTES: "bytes",
    FD.TYPE_STRING: "string",
    FD.TYPE_BOOL: "bool",
    FD.TYPE_INT64: "int64",
    FD.TYPE_UINT64: "uint64",
    FD.TYPE_UINT32: "uint32",
    FD.TYPE_INT32: "int32",
}

_MESSAGE_TYPES: dict[str, _descriptor.Descriptor] = {}
for _file in (rpc_pb2.DESCRIPTOR, kv_pb2.DESCRIPTOR, auth_pb2.DESCRIPTOR):
    _stack = list(_file.message_types_by_name.values())
    while _stack:
        _msg = _stack.pop()
        _MESSAGE_TYPES[_msg.full_name] = _msg
        _stack.extend(_msg.nested_types)


def _describe(field: _descriptor.FieldDescriptor) -> str:
    """`int64`, `repeated bytes`, `mvccpb.KeyValue`, `etcdserverpb.RangeRequest.SortOrder`, ..."""
    if field.type == FD.TYPE_MESSAGE:
        kind = field.message_type.full_name
    elif field.type == FD.TYPE_ENUM:
        kind = field.enum_type.full_name
    else:
        kind = _SCALAR_NAMES[field.type]
    return f"repeated {kind}" if field.is_repeated else kind


# ----------------------------------------------------------------- fields

# (message, field, number, type) from etcd 3.5's API reference. Every
# message that appears here is listed with ALL its fields: the completeness
# test below fails on a field we added or dropped.
KV = "mvccpb.KeyValue"
HDR = "etcdserverpb.ResponseHeader"
FIELD_FACTS: list[tuple[str, str, int, str]] = [
    # mvccpb
    ("mvccpb.KeyValue", "key", 1, "bytes"),
    ("mvccpb.KeyValue", "create_revision", 2, "int64"),
    ("mvccpb.KeyValue", "mod_revision", 3, "int64"),
    ("mvccpb.KeyValue", "version", 4, "int64"),
    ("mvccpb.KeyValue", "value", 5, "bytes"),
    ("mvccpb.KeyValue", "lease", 6, "int64"),
    ("mvccpb.Event", "type", 1, "mvccpb.Event.EventType"),
    ("mvccpb.Event", "kv", 2, KV),
    ("mvccpb.Event", "prev_kv", 3, KV),
    # authpb
    ("authpb.UserAddOptions", "no_password", 1, "bool"),
    ("authpb.User", "name", 1, "bytes"),
    ("authpb.User", "password", 2, "bytes"),
    ("authpb.User", "roles", 3, "repeated string"),
    ("authpb.User", "options", 4, "authpb.UserAddOptions"),
    ("authpb.Permission", "permType", 1, "authpb.Permission.Type"),
    ("authpb.Permission", "key", 2, "bytes"),
    ("authpb.Permission", "range_end", 3, "bytes"),
    ("authpb.Role", "name", 1, "bytes"),
    ("authpb.Role", "keyPermission", 2, "repeated authpb.Permission"),
    # header
    ("etcdserverpb.ResponseHeader", "cluster_id", 1, "uint64"),
    ("etcdserverpb.ResponseHeader", "member_id", 2, "uint64"),
    ("etcdserverpb.ResponseHeader", "revision", 3, "int64"),
    ("etcdserverpb.ResponseHeader", "raft_term", 4, "uint64"),
    # KV
    ("etcdserverpb.RangeRequest", "key", 1, "bytes"),
    ("etcdserverpb.RangeRequest", "range_end", 2, "bytes"),
    ("etcdserverpb.RangeRequest", "limit", 3, "int64"),
    ("etcdserverpb.RangeRequest", "revision", 4, "int64"),
    ("etcdserverpb.RangeRequest", "sort_order", 5, "etcdserverpb.RangeRequest.SortOrder"),
    ("etcdserverpb.RangeRequest", "sort_target", 6, "etcdserverpb.RangeRequest.SortTarget"),
    ("etcdserverpb.RangeRequest", "serializable", 7, "bool"),
    ("etcdserverpb.RangeRequest", "keys_only", 8, "bool"),
    ("etcdserverpb.RangeRequest", "count_only", 9, "bool"),
    ("etcdserverpb.RangeRequest", "min_mod_revision", 10, "int64"),
    ("etcdserverpb.RangeRequest", "max_mod_revision", 11, "int64"),
    ("etcdserverpb.RangeRequest", "min_create_revision", 12, "int64"),
    ("etcdserverpb.RangeRequest", "max_create_revision", 13, "int64"),
    ("etcdserverpb.RangeResponse", "header", 1, HDR),
    ("etcdserverpb.RangeResponse", "kvs", 2, f"repeated {KV}"),
    ("etcdserverpb.RangeResponse", "more", 3, "bool"),
    ("etcdserverpb.RangeResponse", "count", 4, "int64"),
    ("etcdserverpb.PutRequest", "key", 1, "bytes"),
    ("etcdserverpb.PutRequest", "value", 2, "bytes"),
    ("etcdserverpb.PutRequest", "lease", 3, "int64"),
    ("etcdserverpb.PutRequest", "prev_kv", 4, "bool"),
    ("etcdserverpb.PutRequest", "ignore_value", 5, "bool"),
    ("etcdserverpb.PutRequest", "ignore_lease", 6, "bool"),
    ("etcdserverpb.PutResponse", "header", 1, HDR),
    ("etcdserverpb.PutResponse", "prev_kv", 2, KV),
    ("etcdserverpb.DeleteRangeRequest", "key", 1, "bytes"),
    ("etcdserverpb.DeleteRangeRequest", "range_end", 2, "bytes"),
    ("etcdserverpb.DeleteRangeRequest", "prev_kv", 3, "bool"),
    ("etcdserverpb.DeleteRangeResponse", "header", 1, HDR),
    ("etcdserverpb.DeleteRangeResponse", "deleted", 2, "int64"),
    ("etcdserverpb.DeleteRangeResponse", "prev_kvs", 3, f"repeated {KV}"),
    ("etcdserverpb.RequestOp", "request_range", 1, "etcdserverpb.RangeRequest"),
    ("etcdserverpb.RequestOp", "request_put", 2, "etcdserverpb.PutRequest"),
    ("etcdserverpb.RequestOp", "request_delete_range", 3, "etcdserverpb.DeleteRangeRequest"),
    ("etcdserverpb.RequestOp", "request_txn", 4, "etcdserverpb.TxnRequest"),
    ("etcdserverpb.ResponseOp", "response_range", 1, "etcdserverpb.RangeResponse"),
    ("etcdserverpb.ResponseOp", "response_put", 2, "etcdserverpb.PutResponse"),
    ("etcdserverpb.ResponseOp", "response_delete_range", 3, "etcdserverpb.DeleteRangeResponse"),
    ("etcdserverpb.ResponseOp", "response_txn", 4, "etcdserverpb.TxnResponse"),
    ("etcdserverpb.Compare", "result", 1, "etcdserverpb.Compare.CompareResult"),
    ("etcdserverpb.Compare", "target", 2, "etcdserverpb.Compare.CompareTarget"),
    ("etcdserverpb.Compare", "key", 3, "bytes"),
    ("etcdserverpb.Compare", "version", 4, "int64"),
    ("etcdserverpb.Compare", "create_revision", 5, "int64"),
    ("etcdserverpb.Compare", "mod_revision", 6, "int64"),
    ("etcdserverpb.Compare", "value", 7, "bytes"),
    ("etcdserverpb.Compare", "lease", 8, "int64"),
    ("etcdserverpb.Compare", "range_end", 64, "bytes"),
    ("etcdserverpb.TxnRequest", "compare", 1, "repeated etcdserverpb.Compare"),
    ("etcdserverpb.TxnRequest", "success", 2, "repeated etcdserverpb.RequestOp"),
    ("etcdserverpb.TxnRequest", "failure", 3, "repeated etcdserverpb.RequestOp"),
    ("etcdserverpb.TxnResponse", "header", 1, HDR),
    ("etcdserverpb.TxnResponse", "succeeded", 2, "bool"),
    ("etcdserverpb.TxnResponse", "responses", 3, "repeated etcdserverpb.ResponseOp"),
    ("etcdserverpb.CompactionRequest", "revision", 1, "int64"),
    ("etcdserverpb.CompactionRequest", "physical", 2, "bool"),
    ("etcdserverpb.CompactionResponse", "header", 1, HDR),
    # Watch
    ("etcdserverpb.WatchRequest", "create_request", 1, "etcdserverpb.WatchCreateRequest"),
    ("etcdserverpb.WatchRequest", "cancel_request", 2, "etcdserverpb.WatchCancelRequest"),
    ("etcdserverpb.WatchRequest", "progress_request", 3, "etcdserverpb.WatchProgressRequest"),
    ("etcdserverpb.WatchCreateRequest", "key", 1, "bytes"),
    ("etcdserverpb.WatchCreateRequest", "range_end", 2, "bytes"),
    ("etcdserverpb.WatchCreateRequest", "start_revision", 3, "int64"),
    ("etcdserverpb.WatchCreateRequest", "progress_notify", 4, "bool"),
    ("etcdserverpb.WatchCreateRequest", "filters", 5, "repeated etcdserverpb.WatchCreateRequest.FilterType"),
    ("etcdserverpb.WatchCreateRequest", "prev_kv", 6, "bool"),
    ("etcdserverpb.WatchCreateRequest", "watch_id", 7, "int64"),
    ("etcdserverpb.WatchCreateRequest", "fragment", 8, "bool"),
    ("etcdserverpb.WatchCancelRequest", "watch_id", 1, "int64"),
    ("etcdserverpb.WatchResponse", "header", 1, HDR),
    ("etcdserverpb.WatchResponse", "watch_id", 2, "int64"),
    ("etcdserverpb.WatchResponse", "created", 3, "bool"),
    ("etcdserverpb.WatchResponse", "canceled", 4, "bool"),
    ("etcdserverpb.WatchResponse", "compact_revision", 5, "int64"),
    ("etcdserverpb.WatchResponse", "cancel_reason", 6, "string"),
    ("etcdserverpb.WatchResponse", "fragment", 7, "bool"),
    ("etcdserverpb.WatchResponse", "events", 11, "repeated mvccpb.Event"),
    # Lease
    ("etcdserverpb.LeaseGrantRequest", "TTL", 1, "int64"),
    ("etcdserverpb.LeaseGrantRequest", "ID", 2, "int64"),
    ("etcdserverpb.LeaseGrantResponse", "header", 1, HDR),
    ("etcdserverpb.LeaseGrantResponse", "ID", 2, "int64"),
    ("etcdserverpb.LeaseGrantResponse", "TTL", 3, "int64"),
    ("etcdserverpb.LeaseGrantResponse", "error", 4, "string"),
    ("etcdserverpb.LeaseRevokeRequest", "ID", 1, "int64"),
    ("etcdserverpb.LeaseRevokeResponse", "header", 1, HDR),
    ("etcdserverpb.LeaseCheckpoint", "ID", 1, "int64"),
    ("etcdserverpb.LeaseCheckpoint", "remaining_TTL", 2, "int64"),
    ("etcdserverpb.LeaseKeepAliveRequest", "ID", 1, "int64"),
    ("etcdserverpb.LeaseKeepAliveResponse", "header", 1, HDR),
    ("etcdserverpb.LeaseKeepAliveResponse", "ID", 2, "int64"),
    ("etcdserverpb.LeaseKeepAliveResponse", "TTL", 3, "int64"),
    ("etcdserverpb.LeaseTimeToLiveRequest", "ID", 1, "int64"),
    ("etcdserverpb.LeaseTimeToLiveRequest", "keys", 2, "bool"),
    ("etcdserverpb.LeaseTimeToLiveResponse", "header", 1, HDR),
    ("etcdserverpb.LeaseTimeToLiveResponse", "ID", 2, "int64"),
    ("etcdserverpb.LeaseTimeToLiveResponse", "TTL", 3, "int64"),
    ("etcdserverpb.LeaseTimeToLiveResponse", "grantedTTL", 4, "int64"),
    ("etcdserverpb.LeaseTimeToLiveResponse", "keys", 5, "repeated bytes"),
    ("etcdserverpb.LeaseStatus", "ID", 1, "int64"),
    ("etcdserverpb.LeaseLeasesResponse", "header", 1, HDR),
    ("etcdserverpb.LeaseLeasesResponse", "leases", 2, "repeated etcdserverpb.LeaseStatus"),
    # Cluster
    ("etcdserverpb.Member", "ID", 1, "uint64"),
    ("etcdserverpb.Member", "name", 2, "string"),
    ("etcdserverpb.Member", "peerURLs", 3, "repeated string"),
    ("etcdserverpb.Member", "clientURLs", 4, "repeated string"),
    ("etcdserverpb.Member", "isLearner", 5, "bool"),
    ("etcdserverpb.MemberAddRequest", "peerURLs", 1, "repeated string"),
    ("etcdserverpb.MemberAddRequest", "isLearner", 2, "bool"),
    ("etcdserverpb.MemberAddResponse", "header", 1, HDR),
    ("etcdserverpb.MemberAddResponse", "member", 2, "etcdserverpb.Member"),
    ("etcdserverpb.MemberAddResponse", "members", 3, "repeated etcdserverpb.Member"),
    ("etcdserverpb.MemberRemoveRequest", "ID", 1, "uint64"),
    ("etcdserverpb.MemberUpdateRequest", "ID", 1, "uint64"),
    ("etcdserverpb.MemberUpdateRequest", "peerURLs", 2, "repeated string"),
    ("etcdserverpb.MemberListRequest", "linearizable", 1, "bool"),
    ("etcdserverpb.MemberListResponse", "header", 1, HDR),
    ("etcdserverpb.MemberListResponse", "members", 2, "repeated etcdserverpb.Member"),
    ("etcdserverpb.MemberPromoteRequest", "ID", 1, "uint64"),
    # Maintenance
    ("etcdserverpb.StatusResponse", "header", 1, HDR),
    ("etcdserverpb.StatusResponse", "version", 2, "string"),
    ("etcdserverpb.StatusResponse", "dbSize", 3, "int64"),
    ("etcdserverpb.StatusResponse", "leader", 4, "uint64"),
    ("etcdserverpb.StatusResponse", "raftIndex", 5, "uint64"),
    ("etcdserverpb.StatusResponse", "raftTerm", 6, "uint64"),
    ("etcdserverpb.StatusResponse", "raftAppliedIndex", 7, "uint64"),
    ("etcdserverpb.StatusResponse", "errors", 8, "repeated string"),
    ("etcdserverpb.StatusResponse", "dbSizeInUse", 9, "int64"),
    ("etcdserverpb.StatusResponse", "isLearner", 10, "bool"),
    ("etcdserverpb.AlarmRequest", "action", 1, "etcdserverpb.AlarmRequest.AlarmAction"),
    ("etcdserverpb.AlarmRequest", "memberID", 2, "uint64"),
    ("etcdserverpb.AlarmRequest", "alarm", 3, "etcdserverpb.AlarmType"),
    ("etcdserverpb.AlarmMember", "memberID", 1, "uint64"),
    ("etcdserverpb.AlarmMember", "alarm", 2, "etcdserverpb.AlarmType"),
    ("etcdserverpb.AlarmResponse", "header", 1, HDR),
    ("etcdserverpb.AlarmResponse", "alarms", 2, "repeated etcdserverpb.AlarmMember"),
    ("etcdserverpb.DowngradeRequest", "action", 1, "etcdserverpb.DowngradeRequest.DowngradeAction"),
    ("etcdserverpb.DowngradeRequest", "version", 2, "string"),
    ("etcdserverpb.DowngradeResponse", "header", 1, HDR),
    ("etcdserverpb.DowngradeResponse", "version", 2, "string"),
    ("etcdserverpb.HashResponse", "header", 1, HDR),
    ("etcdserverpb.HashResponse", "hash", 2, "uint32"),
    ("etcdserverpb.HashKVRequest", "revision", 1, "int64"),
    ("etcdserverpb.HashKVResponse", "header", 1, HDR),
    ("etcdserverpb.HashKVResponse", "hash", 2, "uint32"),
    ("etcdserverpb.HashKVResponse", "compact_revision", 3, "int64"),
    ("etcdserverpb.HashKVResponse", "hash_revision", 4, "int64"),
    ("etcdserverpb.SnapshotResponse", "header", 1, HDR),
    ("etcdserverpb.SnapshotResponse", "remaining_bytes", 2, "uint64"),
    ("etcdserverpb.SnapshotResponse", "blob", 3, "bytes"),
    ("etcdserverpb.MoveLeaderRequest", "targetID", 1, "uint64"),
    # Auth
    ("etcdserverpb.AuthenticateRequest", "name", 1, "string"),
    ("etcdserverpb.AuthenticateRequest", "password", 2, "string"),
    ("etcdserverpb.AuthenticateResponse", "header", 1, HDR),
    ("etcdserverpb.AuthenticateResponse", "token", 2, "string"),
    ("etcdserverpb.AuthStatusResponse", "header", 1, HDR),
    ("etcdserverpb.AuthStatusResponse", "enabled", 2, "bool"),
    ("etcdserverpb.AuthStatusResponse", "authRevision", 3, "uint64"),
    ("etcdserverpb.AuthUserAddRequest", "name", 1, "string"),
    ("etcdserverpb.AuthUserAddRequest", "password", 2, "string"),
    ("etcdserverpb.AuthUserAddRequest", "options", 3, "authpb.UserAddOptions"),
    ("etcdserverpb.AuthUserAddRequest", "hashedPassword", 4, "string"),
    ("etcdserverpb.AuthUserChangePasswordRequest", "name", 1, "string"),
    ("etcdserverpb.AuthUserChangePasswordRequest", "password", 2, "string"),
    ("etcdserverpb.AuthUserChangePasswordRequest", "hashedPassword", 3, "string"),
    ("etcdserverpb.AuthUserGrantRoleRequest", "user", 1, "string"),
    ("etcdserverpb.AuthUserGrantRoleRequest", "role", 2, "string"),
    ("etcdserverpb.AuthUserRevokeRoleRequest", "name", 1, "string"),
    ("etcdserverpb.AuthUserRevokeRoleRequest", "role", 2, "string"),
    ("etcdserverpb.AuthUserGetResponse", "header", 1, HDR),
    ("etcdserverpb.AuthUserGetResponse", "roles", 2, "repeated string"),
    ("etcdserverpb.AuthRoleGetRequest", "role", 1, "string"),
    ("etcdserverpb.AuthRoleGetResponse", "header", 1, HDR),
    ("etcdserverpb.AuthRoleGetResponse", "perm", 2, "repeated authpb.Permission"),
    ("etcdserverpb.AuthRoleGrantPermissionRequest", "name", 1, "string"),
    ("etcdserverpb.AuthRoleGrantPermissionRequest", "perm", 2, "authpb.Permission"),
    ("etcdserverpb.AuthRoleRevokePermissionRequest", "role", 1, "string"),
    ("etcdserverpb.AuthRoleRevokePermissionRequest", "key", 2, "bytes"),
    ("etcdserverpb.AuthRoleRevokePermissionRequest", "range_end", 3, "bytes"),
    ("etcdserverpb.AuthUserListResponse", "header", 1, HDR),
    ("etcdserverpb.AuthUserListResponse", "users", 2, "repeated string"),
    ("etcdserverpb.AuthRoleListResponse", "header", 1, HDR),
    ("etcdserverpb.AuthRoleListResponse", "roles", 2, "repeated string"),
]


@pytest.mark.parametrize(("message", "field", "number", "kind"), FIELD_FACTS, ids=lambda v: str(v))
def test_field_number_and_type(message: str, field: str, number: int, kind: str) -> None:
    desc = _MESSAGE_TYPES[message].fields_by_name.get(field)
    assert desc is not None, f"{message} has no field {field!r}"
    assert (desc.number, _describe(desc)) == (number, kind)


def test_facts_list_every_field_of_the_messages_they_cover() -> None:
    expected: dict[str, set[str]] = {}
    for message, field, _, _ in FIELD_FACTS:
        expected.setdefault(message, set()).add(field)
    assert len(FIELD_FACTS) >= 60
    for message, fields in expected.items():
        assert set(_MESSAGE_TYPES[message].fields_by_name) == fields, message


# Every message of etcd 3.5's rpc.proto, and no others. The ones not in
# FIELD_FACTS are either empty or `{ResponseHeader header = 1;}` (or a
# single string/name field), checked below.
RPC_MESSAGES = {
    "ResponseHeader", "RangeRequest", "RangeResponse", "PutRequest", "PutResponse",
    "DeleteRangeRequest", "DeleteRangeResponse", "RequestOp", "ResponseOp", "Compare",
    "TxnRequest", "TxnResponse", "CompactionRequest", "CompactionResponse",
    "HashRequest", "HashKVRequest", "HashKVResponse", "HashResponse",
    "SnapshotRequest", "SnapshotResponse",
    "WatchRequest", "WatchCreateRequest", "WatchCancelRequest", "WatchProgressRequest", "WatchResponse",
    "LeaseGrantRequest", "LeaseGrantResponse", "LeaseRevokeRequest", "LeaseRevokeResponse",
    "LeaseCheckpoint", "LeaseCheckpointRequest", "LeaseCheckpointResponse",
    "LeaseKeepAliveRequest", "LeaseKeepAliveResponse", "LeaseTimeToLiveRequest", "LeaseTimeToLiveResponse",
    "LeaseLeasesRequest", "LeaseStatus", "LeaseLeasesResponse",
    "Member", "MemberAddRequest", "MemberAddResponse", "MemberRemoveRequest", "MemberRemoveResponse",
    "MemberUpdateRequest", "MemberUpdateResponse", "MemberListRequest", "MemberListResponse",
    "MemberPromoteRequest", "MemberPromoteResponse",
    "DefragmentRequest", "DefragmentResponse", "MoveLeaderRequest", "MoveLeaderResponse",
    "AlarmRequest", "AlarmMember", "AlarmResponse", "DowngradeRequest", "DowngradeResponse",
    "StatusRequest", "StatusResponse",
    "AuthEnableRequest", "AuthDisableRequest", "AuthStatusRequest", "AuthenticateRequest",
    "AuthUserAddRequest", "AuthUserGetRequest", "AuthUserDeleteRequest", "AuthUserChangePasswordRequest",
    "AuthUserGrantRoleRequest", "AuthUserRevokeRoleRequest", "AuthRoleAddRequest", "AuthRoleGetRequest",
    "AuthUserListRequest", "AuthRoleListRequest", "AuthRoleDeleteRequest",
    "AuthRoleGrantPermissionRequest", "AuthRoleRevokePermissionRequest",
    "AuthEnableResponse", "AuthDisableResponse", "AuthStatusResponse", "AuthenticateResponse",
    "AuthUserAddResponse", "AuthUserGetResponse", "AuthUserDeleteResponse", "AuthUserChangePasswordResponse",
    "AuthUserGrantRoleResponse", "AuthUserRevokeRoleResponse", "AuthRoleAddResponse", "AuthRoleGetResponse",
    "AuthRoleListResponse", "AuthUserListResponse", "AuthRoleDeleteResponse",
    "AuthRoleGrantPermissionResponse", "AuthRoleRevokePermissionResponse",
}  # fmt: skip

EMPTY_MESSAGES = {
    "HashRequest", "SnapshotRequest", "WatchProgressRequest", "LeaseLeasesRequest", "DefragmentRequest",
    "StatusRequest", "AuthEnableRequest", "AuthDisableRequest", "AuthStatusRequest",
    "AuthUserListRequest", "AuthRoleListRequest",
}  # fmt: skip

HEADER_ONLY_MESSAGES = {
    "CompactionResponse", "LeaseRevokeResponse", "LeaseCheckpointResponse", "DefragmentResponse",
    "MoveLeaderResponse", "AuthEnableResponse", "AuthDisableResponse", "AuthUserAddResponse",
    "AuthUserDeleteResponse", "AuthUserChangePasswordResponse", "AuthUserGrantRoleResponse",
    "AuthUserRevokeRoleResponse", "AuthRoleAddResponse", "AuthRoleDeleteResponse",
    "AuthRoleGrantPermissionResponse", "AuthRoleRevokePermissionResponse",
}  # fmt: skip

# The remaining few, whole.
SMALL_MESSAGES: dict[str, list[tuple[str, int, str]]] = {
    "LeaseCheckpointRequest": [("checkpoints", 1, "repeated etcdserverpb.LeaseCheckpoint")],
    "MemberRemoveResponse": [("header", 1, HDR), ("members", 2, "repeated etcdserverpb.Member")],
    "MemberUpdateResponse": [("header", 1, HDR), ("members", 2, "repeated etcdserverpb.Member")],
    "MemberPromoteResponse": [("header", 1, HDR), ("members", 2, "repeated etcdserverpb.Member")],
    "AuthUserGetRequest": [("name", 1, "string")],
    "AuthUserDeleteRequest": [("name", 1, "string")],
    "AuthRoleAddRequest": [("name", 1, "string")],
    "AuthRoleDeleteRequest": [("role", 1, "string")],
}


def test_rpc_proto_has_exactly_etcd_35s_messages() -> None:
    assert set(rpc_pb2.DESCRIPTOR.message_types_by_name) == RPC_MESSAGES
    assert set(kv_pb2.DESCRIPTOR.message_types_by_name) == {"KeyValue", "Event"}
    assert set(auth_pb2.DESCRIPTOR.message_types_by_name) == {"UserAddOptions", "User", "Permission", "Role"}


def test_every_message_is_pinned_field_by_field() -> None:
    def fields(name: str) -> list[tuple[str, int, str]]:
        desc = rpc_pb2.DESCRIPTOR.message_types_by_name[name]
        return sorted((f.name, f.number, _describe(f)) for f in desc.fields)

    covered = {m.removeprefix("etcdserverpb.") for m, *_ in FIELD_FACTS if m.startswith("etcdserverpb.")}
    for name in EMPTY_MESSAGES:
        assert fields(name) == [], name
    for name in HEADER_ONLY_MESSAGES:
        assert fields(name) == [("header", 1, HDR)], name
    for name, expected in SMALL_MESSAGES.items():
        assert fields(name) == sorted(expected), name
    pinned = covered | EMPTY_MESSAGES | HEADER_ONLY_MESSAGES | set(SMALL_MESSAGES)
    assert pinned == RPC_MESSAGES, f"unpinned: {RPC_MESSAGES - pinned}, unknown: {pinned - RPC_MESSAGES}"


# ------------------------------------------------------- enums and oneofs

ENUM_FACTS: dict[str, dict[str, int]] = {
    "mvccpb.Event.EventType": {"PUT": 0, "DELETE": 1},
    "authpb.Permission.Type": {"READ": 0, "WRITE": 1, "READWRITE": 2},
    "etcdserverpb.RangeRequest.SortOrder": {"NONE": 0, "ASCEND": 1, "DESCEND": 2},
    "etcdserverpb.RangeRequest.SortTarget": {"KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4},
    "etcdserverpb.Compare.CompareResult": {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3},
    "etcdserverpb.Compare.CompareTarget": {"VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4},
    "etcdserverpb.WatchCreateRequest.FilterType": {"NOPUT": 0, "NODELETE": 1},
    "etcdserverpb.AlarmType": {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2},
    "etcdserverpb.AlarmRequest.AlarmAction": {"GET": 0, "ACTIVATE": 1, "DEACTIVATE": 2},
    "etcdserverpb.DowngradeRequest.DowngradeAction": {"VALIDATE": 0, "ENABLE": 1, "CANCEL": 2},
}


def _all_enums() -> dict[str, _descriptor.EnumDescriptor]:
    enums = {e.full_name: e for e in rpc_pb2.DESCRIPTOR.enum_types_by_name.values()}
    for msg in _MESSAGE_TYPES.values():
        enums.update({e.full_name: e for e in msg.enum_types})
    return enums


def test_enum_values() -> None:
    enums = _all_enums()
    assert set(enums) == set(ENUM_FACTS)
    for name, values in ENUM_FACTS.items():
        assert {v.name: v.number for v in enums[name].values} == values, name


ONEOF_FACTS = {
    ("etcdserverpb.Compare", "target_union"): {"version", "create_revision", "mod_revision", "value", "lease"},
    ("etcdserverpb.WatchRequest", "request_union"): {"create_request", "cancel_request", "progress_request"},
    ("etcdserverpb.RequestOp", "request"): {"request_range", "request_put", "request_delete_range", "request_txn"},
    ("etcdserverpb.ResponseOp", "response"): {
        "response_range",
        "response_put",
        "response_delete_range",
        "response_txn",
    },
}


def test_oneofs() -> None:
    found = {
        (msg.full_name, oneof.name): {f.name for f in oneof.fields}
        for msg in _MESSAGE_TYPES.values()
        for oneof in msg.oneofs
    }
    assert found == ONEOF_FACTS


# ----------------------------------------------------------------- services

UNARY, SERVER_STREAM, BIDI = "unary", "server-stream", "bidi"

# service -> [(method, request, response, kind)] in etcd's order.
SERVICES: dict[str, list[tuple[str, str, str, str]]] = {
    "KV": [
        ("Range", "RangeRequest", "RangeResponse", UNARY),
        ("Put", "PutRequest", "PutResponse", UNARY),
        ("DeleteRange", "DeleteRangeRequest", "DeleteRangeResponse", UNARY),
        ("Txn", "TxnRequest", "TxnResponse", UNARY),
        ("Compact", "CompactionRequest", "CompactionResponse", UNARY),
    ],
    "Watch": [
        ("Watch", "WatchRequest", "WatchResponse", BIDI),
    ],
    "Lease": [
        ("LeaseGrant", "LeaseGrantRequest", "LeaseGrantResponse", UNARY),
        ("LeaseRevoke", "LeaseRevokeRequest", "LeaseRevokeResponse", UNARY),
        ("LeaseKeepAlive", "LeaseKeepAliveRequest", "LeaseKeepAliveResponse", BIDI),
        ("LeaseTimeToLive", "LeaseTimeToLiveRequest", "LeaseTimeToLiveResponse", UNARY),
        ("LeaseLeases", "LeaseLeasesRequest", "LeaseLeasesResponse", UNARY),
    ],
    "Cluster": [
        ("MemberAdd", "MemberAddRequest", "MemberAddResponse", UNARY),
        ("MemberRemove", "MemberRemoveRequest", "MemberRemoveResponse", UNARY),
        ("MemberUpdate", "MemberUpdateRequest", "MemberUpdateResponse", UNARY),
        ("MemberList", "MemberListRequest", "MemberListResponse", UNARY),
        ("MemberPromote", "MemberPromoteRequest", "MemberPromoteResponse", UNARY),
    ],
    "Maintenance": [
        ("Alarm", "AlarmRequest", "AlarmResponse", UNARY),
        ("Status", "StatusRequest", "StatusResponse", UNARY),
        ("Defragment", "DefragmentRequest", "DefragmentResponse", UNARY),
        ("Hash", "HashRequest", "HashResponse", UNARY),
        ("HashKV", "HashKVRequest", "HashKVResponse", UNARY),
        ("Snapshot", "SnapshotRequest", "SnapshotResponse", SERVER_STREAM),
        ("MoveLeader", "MoveLeaderRequest", "MoveLeaderResponse", UNARY),
        ("Downgrade", "DowngradeRequest", "DowngradeResponse", UNARY),
    ],
    "Auth": [
        ("AuthEnable", "AuthEnableRequest", "AuthEnableResponse", UNARY),
        ("AuthDisable", "AuthDisableRequest", "AuthDisableResponse", UNARY),
        ("AuthStatus", "AuthStatusRequest", "AuthStatusResponse", UNARY),
        ("Authenticate", "AuthenticateRequest", "AuthenticateResponse", UNARY),
        ("UserAdd", "AuthUserAddRequest", "AuthUserAddResponse", UNARY),
        ("UserGet", "AuthUserGetRequest", "AuthUserGetResponse", UNARY),
        ("UserList", "AuthUserListRequest", "AuthUserListResponse", UNARY),
        ("UserDelete", "AuthUserDeleteRequest", "AuthUserDeleteResponse", UNARY),
        ("UserChangePassword", "AuthUserChangePasswordRequest", "AuthUserChangePasswordResponse", UNARY),
        ("UserGrantRole", "AuthUserGrantRoleRequest", "AuthUserGrantRoleResponse", UNARY),
        ("UserRevokeRole", "AuthUserRevokeRoleRequest", "AuthUserRevokeRoleResponse", UNARY),
        ("RoleAdd", "AuthRoleAddRequest", "AuthRoleAddResponse", UNARY),
        ("RoleGet", "AuthRoleGetRequest", "AuthRoleGetResponse", UNARY),
        ("RoleList", "AuthRoleListRequest", "AuthRoleListResponse", UNARY),
        ("RoleDelete", "AuthRoleDeleteRequest", "AuthRoleDeleteResponse", UNARY),
        ("RoleGrantPermission", "AuthRoleGrantPermissionRequest", "AuthRoleGrantPermissionResponse", UNARY),
        ("RoleRevokePermission", "AuthRoleRevokePermissionRequest", "AuthRoleRevokePermissionResponse", UNARY),
    ],
}


def _kind(method: _descriptor.MethodDescriptor) -> str:
    return {
        (False, False): UNARY,
        (False, True): SERVER_STREAM,
        (True, True): BIDI,
        (True, False): "client-stream",
    }[(method.client_streaming, method.server_streaming)]


def test_packages_and_file_locations() -> None:
    # The packages make the gRPC paths and the type names inside Any/errors;
    # the file names keep our copies apart from any other copy of etcd's.
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert kv_pb2.DESCRIPTOR.package == "mvccpb"
    assert auth_pb2.DESCRIPTOR.package == "authpb"
    assert rpc_pb2.DESCRIPTOR.name == "flotillapb/etcd/etcdserverpb/rpc.proto"
    assert kv_pb2.DESCRIPTOR.name == "flotillapb/etcd/mvccpb/kv.proto"
    assert auth_pb2.DESCRIPTOR.name == "flotillapb/etcd/authpb/auth.proto"
    assert {d.name for d in rpc_pb2.DESCRIPTOR.dependencies} == {
        "flotillapb/etcd/mvccpb/kv.proto",
        "flotillapb/etcd/authpb/auth.proto",
    }


def test_services_methods_and_streaming_kinds() -> None:
    services = rpc_pb2.DESCRIPTOR.services_by_name
    assert list(services) == list(SERVICES)
    for service_name, methods in SERVICES.items():
        service = services[service_name]
        assert service.full_name == f"etcdserverpb.{service_name}"
        actual = [
            (m.name, m.input_type.name, m.output_type.name, _kind(m))
            for m in service.methods
        ]
        assert actual == methods, service_name


def test_method_paths() -> None:
    paths = {
        f"/{service.full_name}/{method.name}"
        for service in rpc_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    for path in (
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Maintenance/Status",
        "/etcdserverpb.Maintenance/Snapshot",
        "/etcdserverpb.Auth/Authenticate",
    ):
        assert path in paths
    assert len(paths) == sum(len(m) for m in SERVICES.values()) == 41


class _RecordingChannel:
    """Stands in for grpc.Channel: records which multicallable each stub asks for, per path."""

    _KINDS = {
        "unary_unary": UNARY,
        "unary_stream": SERVER_STREAM,
        "stream_stream": BIDI,
        "stream_unary": "client-stream",
    }

    def __init__(self) -> None:
        self.calls: dict[str, str] = {}

    def __getattr__(self, name: str) -> Callable[..., object]:
        if name not in self._KINDS:
            raise AttributeError(name)
        kind = self._KINDS[name]

        def make(path: str, *args: object, **kwargs: object) -> object:
            self.calls[path] = kind
            return object()

        return make


def test_generated_stubs_call_etcds_paths() -> None:
    channel = _RecordingChannel()
    for service_name in SERVICES:
        getattr(rpc_pb2_grpc, f"{service_name}Stub")(channel)
    expected = {
        f"/etcdserverpb.{service}/{method}": kind
        for service, methods in SERVICES.items()
        for method, _, _, kind in methods
    }
    assert channel.calls == expected


# ------------------------------------------------------------ golden bytes
#
# Protobuf encoding: every field is a key varint (field_number << 3 | wire
# type), then the value. Wire type 0 = varint (ints, bools, enums), 2 =
# length-delimited (bytes, strings, messages): a varint length, then the
# bytes. Fields go out in field-number order; proto3 leaves out zero values,
# except a oneof member that is set. Negative int64 values take ten varint
# bytes (int64, not zigzag sint64).

GOLDEN: list[tuple[str, object, str]] = [
    (
        # key (field 1, bytes, key 1<<3|2 = 0a): 0a 03 'f' 'o' 'o' = 0a 03 66 6f 6f
        # range_end (2, key 2<<3|2 = 12):       12 03 'f' 'o' 'p' = 12 03 66 6f 70
        # limit (3, int64, key 3<<3|0 = 18) = 10: 18 0a
        "RangeRequest(key=foo, range_end=fop, limit=10)",
        rpc_pb2.RangeRequest(key=b"foo", range_end=b"fop", limit=10),
        "0a03666f6f" "1203666f70" "180a",
    ),
    (
        # key (1): 0a 01 61; revision (4, key 20) = -1: 20, then -1 as a 64-bit two's
        # complement varint: nine 0xff bytes (7 bits each) and a final 01.
        "RangeRequest(key=a, revision=-1)",
        rpc_pb2.RangeRequest(key=b"a", revision=-1),
        "0a0161" "20" "ffffffffffffffffff01",
    ),
    (
        # 1<<3|0 = 08, 2<<3|0 = 10, 3<<3|0 = 18, 4<<3|0 = 20; values 1..4.
        "ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4)",
        rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4),
        "0801" "1002" "1803" "2004",
    ),
    (
        # key (1): 0a 01 6b; create_revision (2) = 5: 10 05; mod_revision (3) = 6:
        # 18 06; version (4) = 1: 20 01; value (5, key 5<<3|2 = 2a): 2a 01 76;
        # lease 0 omitted.
        "KeyValue(key=k, create_revision=5, mod_revision=6, version=1, value=v)",
        kv_pb2.KeyValue(key=b"k", create_revision=5, mod_revision=6, version=1, value=b"v"),
        "0a016b" "1005" "1806" "2001" "2a0176",
    ),
    (
        # The "key absent" guard, mod_revision == 0. result EQUAL (0) omitted;
        # target (2) MOD = 2: 10 02; key (3): 1a 01 6b; mod_revision (6) is a
        # set oneof member, so its zero IS sent: 30 00; range_end (64): key
        # 64<<3|2 = 514 = varint 82 04 (low 7 bits 02 | 80, then 514>>7 = 04),
        # then 01 6c.
        "Compare(target=MOD, key=k, mod_revision=0, range_end=l)",
        rpc_pb2.Compare(
            result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.MOD, key=b"k", mod_revision=0, range_end=b"l"
        ),
        "1002" "1a016b" "3000" "8204016c",
    ),
    (
        # watch_id (field 2) = 1: 10 01; events (field 11, key 11<<3|2 = 5a),
        # one Event of 9 bytes: type (1) DELETE = 1: 08 01; kv (2): 12 05, then
        # the KeyValue: key (1) 0a 01 6b, mod_revision (3) = 9: 18 09.
        "WatchResponse(watch_id=1, events=[DELETE k @9])",
        rpc_pb2.WatchResponse(
            watch_id=1, events=[kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"k", mod_revision=9))]
        ),
        "1001" "5a09" "0801" "12050a016b1809",
    ),
    (
        # create_request (field 1): 0a 0e, then 14 bytes: key (1) 0a 03 666f6f,
        # range_end (2) 12 03 666f70, start_revision (3) = 5: 18 05,
        # prev_kv (6, key 6<<3|0 = 30) = true: 30 01.
        "WatchRequest(create_request{key=foo, range_end=fop, start_revision=5, prev_kv})",
        rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=b"foo", range_end=b"fop", start_revision=5, prev_kv=True)
        ),
        "0a0e" "0a03666f6f" "1203666f70" "1805" "3001",
    ),
    (
        # cancel_request (field 2): 12 02, then watch_id (1) = 3: 08 03.
        "WatchRequest(cancel_request{watch_id=3})",
        rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=3)),
        "1202" "0803",
    ),
    (
        # progress_request (field 3): 1a, an empty message: length 00. This is the
        # request Kubernetes sends for watch progress (etcd >= 3.4).
        "WatchRequest(progress_request{})",
        rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()),
        "1a00",
    ),
    (
        # TTL (field 1) = 60: 08 3c; ID 0 omitted.
        "LeaseGrantRequest(TTL=60)",
        rpc_pb2.LeaseGrantRequest(TTL=60),
        "083c",
    ),
]


@pytest.mark.parametrize(("label", "message", "hex_bytes"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_bytes(label: str, message: object, hex_bytes: str) -> None:
    assert message.SerializeToString().hex() == hex_bytes  # type: ignore[attr-defined]
    decoded = type(message).FromString(bytes.fromhex(hex_bytes))  # type: ignore[attr-defined]
    assert decoded == message


def test_watch_create_request_round_trips() -> None:
    sent = rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(
            key=b"/registry/pods/",
            range_end=b"/registry/pods0",
            start_revision=(188_000_000_000 << 11) | 3,  # an HLC revision (shard/hlc.py)
            progress_notify=True,
            filters=[rpc_pb2.WatchCreateRequest.NODELETE],
            prev_kv=True,
            watch_id=42,
            fragment=True,
        )
    )
    received = rpc_pb2.WatchRequest.FromString(sent.SerializeToString())
    assert received == sent
    assert received.WhichOneof("request_union") == "create_request"
    create = received.create_request
    assert create.start_revision == (188_000_000_000 << 11) | 3
    assert list(create.filters) == [rpc_pb2.WatchCreateRequest.NODELETE]
    assert (create.watch_id, create.fragment, create.prev_kv, create.progress_notify) == (42, True, True, True)


def test_txn_nests_and_keeps_the_zero_compare() -> None:
    # The common "create if absent" txn, as clientv3 builds it.
    txn = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(target=rpc_pb2.Compare.CREATE, key=b"k", create_revision=0)],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k", value=b"v"))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k"))],
    )
    back = rpc_pb2.TxnRequest.FromString(txn.SerializeToString())
    assert back == txn
    assert back.compare[0].WhichOneof("target_union") == "create_revision"
    assert back.success[0].WhichOneof("request") == "request_put"
    assert back.failure[0].WhichOneof("request") == "request_range"


# ------------------------------------------------------- over real gRPC

class _DictKV(rpc_pb2_grpc.KVServicer):
    """Just enough of KV for a wire check: exact-key Range and Put over a dict."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.revision = 1
        self.requests: list[object] = []

    def Range(self, request: rpc_pb2.RangeRequest, context: grpc.ServicerContext) -> rpc_pb2.RangeResponse:  # noqa: N802
        self.requests.append(request)
        header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=self.revision, raft_term=1)
        if request.key not in self.data:
            return rpc_pb2.RangeResponse(header=header)
        kv = kv_pb2.KeyValue(
            key=request.key, value=self.data[request.key], create_revision=2, mod_revision=self.revision, version=1
        )
        return rpc_pb2.RangeResponse(header=header, kvs=[kv], count=1)

    def Put(self, request: rpc_pb2.PutRequest, context: grpc.ServicerContext) -> rpc_pb2.PutResponse:  # noqa: N802
        self.requests.append(request)
        self.revision += 1
        self.data[request.key] = request.value
        return rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=self.revision))


@pytest.fixture
def kv_server() -> Iterator[tuple[str, _DictKV]]:
    servicer = _DictKV()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc_pb2_grpc.add_KVServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None).wait()


def test_raw_bytes_on_etcds_path_reach_the_generated_servicer(kv_server: tuple[str, _DictKV]) -> None:
    """A client that knows only etcd's path and bytes (as any etcd client does) is understood."""
    address, servicer = kv_server
    servicer.data[b"foo"] = b"bar"
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/etcdserverpb.KV/Range")  # no serializers: raw bytes both ways
        raw = call(bytes.fromhex("0a03666f6f" "1203666f70" "180a"), timeout=10)
    assert servicer.requests == [rpc_pb2.RangeRequest(key=b"foo", range_end=b"fop", limit=10)]
    response = rpc_pb2.RangeResponse.FromString(raw)
    assert [(kv.key, kv.value) for kv in response.kvs] == [(b"foo", b"bar")]
    assert response.count == 1


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed")
def test_real_etcdctl_puts_and_gets(kv_server: tuple[str, _DictKV]) -> None:
    address, servicer = kv_server
    etcdctl = shutil.which("etcdctl")
    assert etcdctl is not None
    base = [etcdctl, f"--endpoints={address}", "--dial-timeout=5s", "--command-timeout=10s"]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    put = subprocess.run([*base, "put", "foo", "bar"], capture_output=True, text=True, timeout=30, env=env)
    assert put.returncode == 0, put.stderr
    assert put.stdout.strip() == "OK"
    get = subprocess.run([*base, "get", "foo"], capture_output=True, text=True, timeout=30, env=env)
    assert get.returncode == 0, get.stderr
    assert get.stdout.split() == ["foo", "bar"]
    assert servicer.data == {b"foo": b"bar"}
