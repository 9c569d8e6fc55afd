"""What placement's Raft group replicates, and what applying it answers (PURE).

Commands carry every value the proposer chose (cluster id, lease id), so
applying them is deterministic (placement/state.py). Their encoding is
placement/codec.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from placement.model import DEFAULT_REPLICAS, Node, NodeKind, NodeState, Shard


class RejectCode(enum.IntEnum):
    INVALID = 1
    NOT_BOOTSTRAPPED = 2
    ALREADY_BOOTSTRAPPED = 3
    NO_STORE_NODES = 4
    NODE_NOT_FOUND = 5
    LEASE_NOT_FOUND = 6
    LEASE_EXISTS = 7
    LEASE_TTL_TOO_LARGE = 8
    # etcd's auth outcomes (placement/authbook.py); each maps to the etcd row of the same name
    # (placement/service.py), so a router relays it unchanged.
    ROOT_USER_NOT_EXIST = 20
    ROOT_ROLE_NOT_EXIST = 21
    USER_ALREADY_EXIST = 22
    USER_EMPTY = 23
    USER_NOT_FOUND = 24
    ROLE_ALREADY_EXIST = 25
    ROLE_NOT_FOUND = 26
    ROLE_EMPTY = 27
    AUTH_FAILED = 28
    PERMISSION_DENIED = 29
    ROLE_NOT_GRANTED = 30
    PERMISSION_NOT_GRANTED = 31
    AUTH_NOT_ENABLED = 32
    INVALID_AUTH_MGMT = 33
    AUTH_OLD_REVISION = 34
    PERMISSION_NOT_GIVEN = 35


class ReportOutcome(enum.IntEnum):
    ACCEPTED = 1
    STALE = 2
    UNKNOWN_SHARD = 3
    SLOT_CONFLICT = 4
    NOT_BOOTSTRAPPED = 5


# --------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Bootstrap:
    cluster_id: int
    slot_count: int
    initial_shards: int = 0
    """0: one shard per up store node (at least one)."""
    replicas: int = DEFAULT_REPLICAS


@dataclass(frozen=True, slots=True)
class RegisterNode:
    node_id: int
    """0: the state assigns the next free id."""
    kind: NodeKind
    address: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SetNodeState:
    node_id: int
    state: NodeState


@dataclass(frozen=True, slots=True)
class ReportShard:
    shard: Shard


@dataclass(frozen=True, slots=True)
class ReportShards:
    """Several reports in one log entry (the leader gathers those that arrive
    while a batch commits: placement/reports.py). Applied in order, each
    exactly as its own ReportShard; one map change (one map version) for all."""

    shards: tuple[Shard, ...]


@dataclass(frozen=True, slots=True)
class GrantLease:
    lease_id: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class RevokeLease:
    lease_id: int


@dataclass(frozen=True, slots=True)
class KeyChange:
    lease_id: int
    key: bytes
    detach: bool = False


@dataclass(frozen=True, slots=True)
class AttachKeys:
    changes: tuple[KeyChange, ...]


@dataclass(frozen=True, slots=True)
class LeaseKeysDeleted:
    lease_id: int
    keys: tuple[bytes, ...]


class AuthOp(enum.IntEnum):
    """etcd's auth store writes (etcdserverpb.Auth), and Authenticate's simple token."""

    ENABLE = 1
    DISABLE = 2
    USER_ADD = 3
    USER_DELETE = 4
    USER_CHANGE_PASSWORD = 5
    USER_GRANT_ROLE = 6
    USER_REVOKE_ROLE = 7
    ROLE_ADD = 8
    ROLE_DELETE = 9
    ROLE_GRANT_PERMISSION = 10
    ROLE_REVOKE_PERMISSION = 11
    ISSUE_TOKEN = 12


@dataclass(frozen=True, slots=True)
class AuthChange:
    """One write to the auth store (placement/authbook.py), as etcd logs its
    InternalRaftRequest: `actor` is the user the router authenticated for the
    call ("" for none), checked for the root role when applied (etcd's
    IsAdminPermitted at apply). Passwords arrive hashed (bcrypt, by the
    router); ISSUE_TOKEN carries the token the router chose, its expiry and
    the auth revision the router checked the password at (etcd's
    checkedRevision), and `now_ms` prunes expired tokens."""

    op: AuthOp
    actor: str = ""
    name: str = ""
    """The user (user ops, ISSUE_TOKEN) or the role (role ops)."""
    role: str = ""
    password: bytes = b""
    no_password: bool = False
    perm_type: int = 0
    key: bytes = b""
    range_end: bytes = b""
    token: str = ""
    expires_ms: int = 0
    now_ms: int = 0
    checked_revision: int = 0


Command = Bootstrap | RegisterNode | SetNodeState | ReportShard | ReportShards | GrantLease | RevokeLease | AttachKeys | LeaseKeysDeleted | AuthChange


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Rejected:
    code: RejectCode
    message: str


@dataclass(frozen=True, slots=True)
class ReportResult:
    outcome: ReportOutcome
    current: Shard | None


@dataclass(frozen=True, slots=True)
class MapChange:
    """What one applied command changed in the map, at map_version. `full`:
    the cluster itself changed (bootstrap): watchers get the whole map."""

    map_version: int
    full: bool = False
    nodes: tuple[Node, ...] = ()
    shards: tuple[Shard, ...] = ()
    removed_shards: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Applied:
    result: object
    """What the proposer gets: a Rejected, or the command's value (see PlacementState.apply)."""
    change: MapChange | None = None
    leases_touched: tuple[int, ...] = ()
    """Leases whose record (live or ending) changed: the storage layer rewrites them."""
    auth_changed: bool = False
    """The auth store (users, roles, tokens) changed: the storage layer rewrites its record."""
