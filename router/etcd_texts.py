"""The one table of etcd's error codes and texts (PURE, a shared leaf).

etcd clients match error *messages* (clientv3's rpctypes.Error compares the
status message), so every row carries exactly the gRPC code and text that
etcd 3.5 sends, as listed in etcd's api/v3rpc/rpctypes/error.go, then the
texts of etcd's concurrency recipes, then Flotilla's own rows (cases etcd has
no equivalent for: they say what happened and what to change). Codes are gRPC
status code names, so this module imports nothing: router/etcd_errors.py
turns the rows into gRPC statuses, and the store's errors (shard/errors.py)
take their texts from here, so no text is written twice.
"""

from __future__ import annotations

# name -> (code, message). etcd's rows first, verbatim; then ours.
TEXTS: dict[str, tuple[str, str]] = {
    "empty_key": ("INVALID_ARGUMENT", "etcdserver: key is not provided"),
    "key_not_found": ("INVALID_ARGUMENT", "etcdserver: key not found"),
    "value_provided": ("INVALID_ARGUMENT", "etcdserver: value is provided"),
    "lease_provided": ("INVALID_ARGUMENT", "etcdserver: lease is provided"),
    "ttl_zero": ("INVALID_ARGUMENT", "etcdserver: ttl is 0"),
    "too_many_ops": ("INVALID_ARGUMENT", "etcdserver: too many operations in txn request"),
    "duplicate_key": ("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request"),
    "compacted": ("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted"),
    "future_rev": ("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision"),
    "no_space": ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded"),
    "lease_not_found": ("NOT_FOUND", "etcdserver: requested lease not found"),
    "lease_exist": ("FAILED_PRECONDITION", "etcdserver: lease already exists"),
    "lease_ttl_too_large": ("OUT_OF_RANGE", "etcdserver: too large lease TTL"),
    "member_not_found": ("NOT_FOUND", "etcdserver: member not found"),
    "request_too_large": ("INVALID_ARGUMENT", "etcdserver: request is too large"),
    "too_many_requests": ("RESOURCE_EXHAUSTED", "etcdserver: too many requests"),
    "auth_not_enabled": ("FAILED_PRECONDITION", "etcdserver: authentication is not enabled"),
    # etcd's auth rows (api/v3rpc/rpctypes/error.go; server/auth/store.go says when each is raised).
    "root_user_not_exist": ("FAILED_PRECONDITION", "etcdserver: root user does not exist"),
    "root_role_not_exist": ("FAILED_PRECONDITION", "etcdserver: root user does not have root role"),
    "user_already_exist": ("FAILED_PRECONDITION", "etcdserver: user name already exists"),
    "user_empty": ("INVALID_ARGUMENT", "etcdserver: user name is empty"),
    "user_not_found": ("FAILED_PRECONDITION", "etcdserver: user name not found"),
    "role_already_exist": ("FAILED_PRECONDITION", "etcdserver: role name already exists"),
    "role_not_found": ("FAILED_PRECONDITION", "etcdserver: role name not found"),
    "role_empty": ("INVALID_ARGUMENT", "etcdserver: role name is empty"),
    "auth_failed": ("INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or password"),
    "permission_not_given": ("INVALID_ARGUMENT", "etcdserver: permission not given"),
    "permission_denied": ("PERMISSION_DENIED", "etcdserver: permission denied"),
    "role_not_granted": ("FAILED_PRECONDITION", "etcdserver: role is not granted to the user"),
    "permission_not_granted": ("FAILED_PRECONDITION", "etcdserver: permission is not granted to the role"),
    "invalid_auth_token": ("UNAUTHENTICATED", "etcdserver: invalid auth token"),
    "invalid_auth_mgmt": ("INVALID_ARGUMENT", "etcdserver: invalid auth management"),
    "auth_old_revision": ("INVALID_ARGUMENT", "etcdserver: revision of auth store is old"),
    "no_leader": ("UNAVAILABLE", "etcdserver: no leader"),
    "not_leader": ("FAILED_PRECONDITION", "etcdserver: not leader"),
    "leader_changed": ("UNAVAILABLE", "etcdserver: leader changed"),
    "not_capable": ("UNAVAILABLE", "etcdserver: not capable"),
    "stopped": ("UNAVAILABLE", "etcdserver: server stopped"),
    "timeout": ("UNAVAILABLE", "etcdserver: request timed out"),
    "timeout_leader_fail": ("UNAVAILABLE", "etcdserver: request timed out, possibly due to previous leader failure"),
    "timeout_connection_lost": ("UNAVAILABLE", "etcdserver: request timed out, possibly due to connection lost"),
    "unhealthy": ("UNAVAILABLE", "etcdserver: unhealthy cluster"),
    "corrupt": ("DATA_LOSS", "etcdserver: corrupt cluster"),
    # etcd's concurrency recipes (client/v3/concurrency, run by etcd's Lock and
    # Election services): plain Go errors, so gRPC's UNKNOWN with their text.
    "election_not_leader": ("UNKNOWN", "election: not leader"),
    "election_no_leader": ("UNKNOWN", "election: no leader"),
    "election_missing_leader_key": ("UNKNOWN", '"leader" field must be provided'),
    "mutex_session_expired": ("UNKNOWN", "mutex: session is expired"),
    # Flotilla's own (etcd has no such case).
    "outcome_unknown": (
        "UNAVAILABLE",
        "flotilla: the write's outcome is unknown (it may or may not have been applied); "
        "read the key before retrying",
    ),
    "lease_unavailable": (
        "UNAVAILABLE",
        "flotilla: leases need the placement service, and this router has none (start it with --placement host:port)",
    ),
    "auth_unavailable": (
        "UNAVAILABLE",
        "flotilla: users and roles live in the placement service, and this router has none (start it with --placement host:port)",
    ),
    "invalid_request": ("INVALID_ARGUMENT", "flotilla: invalid request"),
    "unimplemented": ("UNIMPLEMENTED", "flotilla: not implemented"),
}
