from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Peer(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class SetPeersRequest(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class SetPeersResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("group_id", "data", "timeout_ms")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    data: bytes
    timeout_ms: int
    def __init__(self, group_id: _Optional[int] = ..., data: _Optional[bytes] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ProposeResponse(_message.Message):
    __slots__ = ("index", "not_leader_hint", "not_leader")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NOT_LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    NOT_LEADER_FIELD_NUMBER: _ClassVar[int]
    index: int
    not_leader_hint: int
    not_leader: bool
    def __init__(self, index: _Optional[int] = ..., not_leader_hint: _Optional[int] = ..., not_leader: _Optional[bool] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("group_id", "key", "linearizable")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LINEARIZABLE_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    key: bytes
    linearizable: bool
    def __init__(self, group_id: _Optional[int] = ..., key: _Optional[bytes] = ..., linearizable: _Optional[bool] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("found", "value", "applied_index")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    applied_index: int
    def __init__(self, found: _Optional[bool] = ..., value: _Optional[bytes] = ..., applied_index: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("group_ids",)
    GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    group_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, group_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GroupStatus(_message.Message):
    __slots__ = ("group_id", "leader", "term", "commit", "applied", "first_index", "last_index", "is_leader", "quiet", "applied_count", "digest", "voters", "learners")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    QUIET_FIELD_NUMBER: _ClassVar[int]
    APPLIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    leader: int
    term: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    is_leader: bool
    quiet: bool
    applied_count: int
    digest: bytes
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, group_id: _Optional[int] = ..., leader: _Optional[int] = ..., term: _Optional[int] = ..., commit: _Optional[int] = ..., applied: _Optional[int] = ..., first_index: _Optional[int] = ..., last_index: _Optional[int] = ..., is_leader: _Optional[bool] = ..., quiet: _Optional[bool] = ..., applied_count: _Optional[int] = ..., digest: _Optional[bytes] = ..., voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ...) -> None: ...

class HostStats(_message.Message):
    __slots__ = ("rounds", "syncs", "entries_persisted", "entries_applied", "messages_sent", "messages_dropped", "proposals", "snapshots_created", "snapshots_restored", "ticks", "transport_batches", "transport_received", "cpu_seconds")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SYNCS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_PERSISTED_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_SENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_CREATED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_RESTORED_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    rounds: int
    syncs: int
    entries_persisted: int
    entries_applied: int
    messages_sent: int
    messages_dropped: int
    proposals: int
    snapshots_created: int
    snapshots_restored: int
    ticks: int
    transport_batches: int
    transport_received: int
    cpu_seconds: float
    def __init__(self, rounds: _Optional[int] = ..., syncs: _Optional[int] = ..., entries_persisted: _Optional[int] = ..., entries_applied: _Optional[int] = ..., messages_sent: _Optional[int] = ..., messages_dropped: _Optional[int] = ..., proposals: _Optional[int] = ..., snapshots_created: _Optional[int] = ..., snapshots_restored: _Optional[int] = ..., ticks: _Optional[int] = ..., transport_batches: _Optional[int] = ..., transport_received: _Optional[int] = ..., cpu_seconds: _Optional[float] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("node_id", "groups", "stats")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    groups: _containers.RepeatedCompositeFieldContainer[GroupStatus]
    stats: HostStats
    def __init__(self, node_id: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[GroupStatus, _Mapping]]] = ..., stats: _Optional[_Union[HostStats, _Mapping]] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("group_id", "target")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    target: int
    def __init__(self, group_id: _Optional[int] = ..., target: _Optional[int] = ...) -> None: ...

class TransferLeaderResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("group_ids", "in_flight", "total", "duration_ms", "value_size")
    GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    group_ids: _containers.RepeatedScalarFieldContainer[int]
    in_flight: int
    total: int
    duration_ms: int
    value_size: int
    def __init__(self, group_ids: _Optional[_Iterable[int]] = ..., in_flight: _Optional[int] = ..., total: _Optional[int] = ..., duration_ms: _Optional[int] = ..., value_size: _Optional[int] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("committed", "failed", "seconds", "syncs", "cpu_seconds", "p50_ms", "p99_ms")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SYNCS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    committed: int
    failed: int
    seconds: float
    syncs: int
    cpu_seconds: float
    p50_ms: float
    p99_ms: float
    def __init__(self, committed: _Optional[int] = ..., failed: _Optional[int] = ..., seconds: _Optional[float] = ..., syncs: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...
