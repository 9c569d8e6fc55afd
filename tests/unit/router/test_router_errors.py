"""router/etcd_errors.py: each row is etcd's exact (code, text), as in
etcd's api/v3rpc/rpctypes/error.go; one test per row."""

from __future__ import annotations

import grpc
import pytest

from flotillapb import store_pb2 as spb
from router import etcd_errors
from router.etcd_errors import ROWS, EtcdError, from_kv_error

C = grpc.StatusCode

# Written out again from etcd's rpctypes/error.go (3.5), not from ROWS.
ETCD = {
    "empty_key": (C.INVALID_ARGUMENT, "etcdserver: key is not provided"),
    "key_not_found": (C.INVALID_ARGUMENT, "etcdserver: key not found"),
    "value_provided": (C.INVALID_ARGUMENT, "etcdserver: value is provided"),
    "lease_provided": (C.INVALID_ARGUMENT, "etcdserver: lease is provided"),
    "ttl_zero": (C.INVALID_ARGUMENT, "etcdserver: ttl is 0"),
    "too_many_ops": (C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
    "duplicate_key": (C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
    "compacted": (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
    "future_rev": (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
    "no_space": (C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
    "lease_not_found": (C.NOT_FOUND, "etcdserver: requested lease not found"),
    "lease_exist": (C.FAILED_PRECONDITION, "etcdserver: lease already exists"),
    "lease_ttl_too_large": (C.OUT_OF_RANGE, "etcdserver: too large lease TTL"),
    "member_not_found": (C.NOT_FOUND, "etcdserver: member not found"),
    "request_too_large": (C.INVALID_ARGUMENT, "etcdserver: request is too large"),
    "too_many_requests": (C.RESOURCE_EXHAUSTED, "etcdserver: too many requests"),
    "auth_not_enabled": (C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"),
    "no_leader": (C.UNAVAILABLE, "etcdserver: no leader"),
    "not_leader": (C.FAILED_PRECONDITION, "etcdserver: not leader"),
    "leader_changed": (C.UNAVAILABLE, "etcdserver: leader changed"),
    "not_capable": (C.UNAVAILABLE, "etcdserver: not capable"),
    "stopped": (C.UNAVAILABLE, "etcdserver: server stopped"),
    "timeout": (C.UNAVAILABLE, "etcdserver: request timed out"),
    "timeout_leader_fail": (C.UNAVAILABLE, "etcdserver: request timed out, possibly due to previous leader failure"),
    "timeout_connection_lost": (C.UNAVAILABLE, "etcdserver: request timed out, possibly due to connection lost"),
    "unhealthy": (C.UNAVAILABLE, "etcdserver: unhealthy cluster"),
    "corrupt": (C.DATA_LOSS, "etcdserver: corrupt cluster"),
    "root_user_not_exist": (C.FAILED_PRECONDITION, "etcdserver: root user does not exist"),
    "root_role_not_exist": (C.FAILED_PRECONDITION, "etcdserver: root user does not have root role"),
    "user_already_exist": (C.FAILED_PRECONDITION, "etcdserver: user name already exists"),
    "user_empty": (C.INVALID_ARGUMENT, "etcdserver: user name is empty"),
    "user_not_found": (C.FAILED_PRECONDITION, "etcdserver: user name not found"),
    "role_already_exist": (C.FAILED_PRECONDITION, "etcdserver: role name already exists"),
    "role_not_found": (C.FAILED_PRECONDITION, "etcdserver: role name not found"),
    "role_empty": (C.INVALID_ARGUMENT, "etcdserver: role name is empty"),
    "auth_failed": (C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"),
    "permission_not_given": (C.INVALID_ARGUMENT, "etcdserver: permission not given"),
    "permission_denied": (C.PERMISSION_DENIED, "etcdserver: permission denied"),
    "role_not_granted": (C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user"),
    "permission_not_granted": (C.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role"),
    "invalid_auth_token": (C.UNAUTHENTICATED, "etcdserver: invalid auth token"),
    "invalid_auth_mgmt": (C.INVALID_ARGUMENT, "etcdserver: invalid auth management"),
    "auth_old_revision": (C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"),
    # client/v3/concurrency's errors, which etcd's Lock and Election services
    # return as they are: gRPC's UNKNOWN with the Go error's text.
    "election_not_leader": (C.UNKNOWN, "election: not leader"),
    "election_no_leader": (C.UNKNOWN, "election: no leader"),
    "election_missing_leader_key": (C.UNKNOWN, '"leader" field must be provided'),
    "mutex_session_expired": (C.UNKNOWN, "mutex: session is expired"),
}

OURS = {
    "outcome_unknown": C.UNAVAILABLE,
    "lease_unavailable": C.UNAVAILABLE,
    "auth_unavailable": C.UNAVAILABLE,
    "invalid_request": C.INVALID_ARGUMENT,
    "unimplemented": C.UNIMPLEMENTED,
}


def test_every_row_is_checked() -> None:
    assert set(ROWS) == set(ETCD) | set(OURS)


@pytest.mark.parametrize("name", sorted(ETCD))
def test_etcd_row(name: str) -> None:
    err = EtcdError(name)
    assert (err.code, err.message) == ETCD[name]
    assert ROWS[name] == ETCD[name]


@pytest.mark.parametrize("name", sorted(OURS))
def test_flotilla_row(name: str) -> None:
    code, message = ROWS[name]
    assert code == OURS[name]
    assert message.startswith("flotilla: ") and not message.startswith("etcdserver:")


K = spb.KvError


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (K.COMPACTED, "compacted"),
        (K.FUTURE_REVISION, "future_rev"),
        (K.KEY_NOT_FOUND, "key_not_found"),
        (K.DUPLICATE_KEY, "duplicate_key"),
        (K.TOO_MANY_OPS, "too_many_ops"),
        (K.REQUEST_TOO_LARGE, "request_too_large"),
        (K.NO_SPACE, "no_space"),
        (K.OUTCOME_UNKNOWN, "outcome_unknown"),
        (K.EMPTY_KEY, "empty_key"),
        (K.VALUE_PROVIDED, "value_provided"),
        (K.LEASE_PROVIDED, "lease_provided"),
        (K.INVALID_REQUEST, "invalid_request"),
        (K.LEASE_NOT_FOUND, "lease_not_found"),
    ],
)
def test_store_kv_codes_map_to_rows(code: int, name: str) -> None:
    err = from_kv_error(spb.KvError(code=code, detail="from the store"))
    assert err.name == name and err.code == ROWS[name][0]
    if name != "invalid_request":
        assert err.message == ROWS[name][1]  # never the store's detail in etcd's text
    else:
        assert err.message.endswith("from the store")


def test_every_store_code_is_mapped() -> None:
    codes = {v.number for v in K.Code.DESCRIPTOR.values if v.number != K.KV_ERROR_UNSPECIFIED}
    assert codes == set(etcd_errors.KV_CODES)


def test_store_lease_not_found_is_etcds_lease_not_found() -> None:
    err = from_kv_error(spb.KvError(code=13, detail="lease 7 is gone"))
    assert (err.code, err.message) == (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
