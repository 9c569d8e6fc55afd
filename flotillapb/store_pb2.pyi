from flotillapb.etcd.etcdserverpb import rpc_pb2 as _rpc_pb2
from flotillapb.etcd.mvccpb import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadConsistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ_LINEARIZABLE: _ClassVar[ReadConsistency]
    READ_SERIALIZABLE: _ClassVar[ReadConsistency]
    READ_BOUNDED_STALENESS: _ClassVar[ReadConsistency]
    READ_AT_REVISION: _ClassVar[ReadConsistency]

class TxnPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TXN_PHASE_UNSPECIFIED: _ClassVar[TxnPhase]
    TXN_PREPARE: _ClassVar[TxnPhase]
    TXN_DECIDE: _ClassVar[TxnPhase]
    TXN_COMMIT: _ClassVar[TxnPhase]
    TXN_ABORT: _ClassVar[TxnPhase]
    TXN_RESOLVE: _ClassVar[TxnPhase]
    TXN_FORGET: _ClassVar[TxnPhase]

class TxnState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TXN_STATE_UNSPECIFIED: _ClassVar[TxnState]
    TXN_PREPARED: _ClassVar[TxnState]
    TXN_COMMITTED: _ClassVar[TxnState]
    TXN_ABORTED: _ClassVar[TxnState]
READ_LINEARIZABLE: ReadConsistency
READ_SERIALIZABLE: ReadConsistency
READ_BOUNDED_STALENESS: ReadConsistency
READ_AT_REVISION: ReadConsistency
TXN_PHASE_UNSPECIFIED: TxnPhase
TXN_PREPARE: TxnPhase
TXN_DECIDE: TxnPhase
TXN_COMMIT: TxnPhase
TXN_ABORT: TxnPhase
TXN_RESOLVE: TxnPhase
TXN_FORGET: TxnPhase
TXN_STATE_UNSPECIFIED: TxnState
TXN_PREPARED: TxnState
TXN_COMMITTED: TxnState
TXN_ABORTED: TxnState

class StoreAlarmRequest(_message.Message):
    __slots__ = ("action", "alarm")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    action: _rpc_pb2.AlarmRequest.AlarmAction
    alarm: _rpc_pb2.AlarmType
    def __init__(self, action: _Optional[_Union[_rpc_pb2.AlarmRequest.AlarmAction, str]] = ..., alarm: _Optional[_Union[_rpc_pb2.AlarmType, str]] = ...) -> None: ...

class StoreAlarmResponse(_message.Message):
    __slots__ = ("node_id", "alarms", "changed", "used_bytes", "quota_bytes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    alarms: _containers.RepeatedScalarFieldContainer[_rpc_pb2.AlarmType]
    changed: _containers.RepeatedScalarFieldContainer[_rpc_pb2.AlarmType]
    used_bytes: int
    quota_bytes: int
    def __init__(self, node_id: _Optional[int] = ..., alarms: _Optional[_Iterable[_Union[_rpc_pb2.AlarmType, str]]] = ..., changed: _Optional[_Iterable[_Union[_rpc_pb2.AlarmType, str]]] = ..., used_bytes: _Optional[int] = ..., quota_bytes: _Optional[int] = ...) -> None: ...

class StoreDefragmentRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StoreDefragmentResponse(_message.Message):
    __slots__ = ("node_id", "used_bytes_before", "used_bytes_after")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_BEFORE_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_AFTER_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    used_bytes_before: int
    used_bytes_after: int
    def __init__(self, node_id: _Optional[int] = ..., used_bytes_before: _Optional[int] = ..., used_bytes_after: _Optional[int] = ...) -> None: ...

class ShardHashKVRequest(_message.Message):
    __slots__ = ("shard_id", "revision")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    revision: int
    def __init__(self, shard_id: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class ShardHashKVResponse(_message.Message):
    __slots__ = ("header", "hash", "compact_revision", "hash_revision", "versions")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    HASH_REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    hash: int
    compact_revision: int
    hash_revision: int
    versions: int
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., hash: _Optional[int] = ..., compact_revision: _Optional[int] = ..., hash_revision: _Optional[int] = ..., versions: _Optional[int] = ...) -> None: ...

class DeleteLeaseKeysRequest(_message.Message):
    __slots__ = ("shard_id", "lease_id", "keys")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    lease_id: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, shard_id: _Optional[int] = ..., lease_id: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DeleteLeaseKeysResponse(_message.Message):
    __slots__ = ("header", "deleted")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    deleted: int
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., deleted: _Optional[int] = ...) -> None: ...

class SplitShardRequest(_message.Message):
    __slots__ = ("shard_id", "new_shard_id", "split_slot", "timeout_ms")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_SLOT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    new_shard_id: int
    split_slot: int
    timeout_ms: int
    def __init__(self, shard_id: _Optional[int] = ..., new_shard_id: _Optional[int] = ..., split_slot: _Optional[int] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SplitShardResponse(_message.Message):
    __slots__ = ("header", "left", "right")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    left: ShardDescriptor
    right: ShardDescriptor
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., left: _Optional[_Union[ShardDescriptor, _Mapping]] = ..., right: _Optional[_Union[ShardDescriptor, _Mapping]] = ...) -> None: ...

class NodeAddress(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class SetPeersRequest(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[NodeAddress]
    def __init__(self, peers: _Optional[_Iterable[_Union[NodeAddress, _Mapping]]] = ...) -> None: ...

class SetPeersResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StoreStatusRequest(_message.Message):
    __slots__ = ("shard_ids",)
    SHARD_IDS_FIELD_NUMBER: _ClassVar[int]
    shard_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, shard_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ShardStatus(_message.Message):
    __slots__ = ("descriptor", "is_leader", "term", "commit_index", "applied_index", "revision", "compact_revision", "closed_ts", "watchers", "reads", "writes")
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    CLOSED_TS_FIELD_NUMBER: _ClassVar[int]
    WATCHERS_FIELD_NUMBER: _ClassVar[int]
    READS_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    descriptor: ShardDescriptor
    is_leader: bool
    term: int
    commit_index: int
    applied_index: int
    revision: int
    compact_revision: int
    closed_ts: int
    watchers: int
    reads: int
    writes: int
    def __init__(self, descriptor: _Optional[_Union[ShardDescriptor, _Mapping]] = ..., is_leader: _Optional[bool] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., revision: _Optional[int] = ..., compact_revision: _Optional[int] = ..., closed_ts: _Optional[int] = ..., watchers: _Optional[int] = ..., reads: _Optional[int] = ..., writes: _Optional[int] = ...) -> None: ...

class StoreStatusResponse(_message.Message):
    __slots__ = ("node_id", "hlc", "shards")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HLC_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    hlc: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardStatus]
    def __init__(self, node_id: _Optional[int] = ..., hlc: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardStatus, _Mapping]]] = ...) -> None: ...

class ShardEpoch(_message.Message):
    __slots__ = ("conf_version", "slot_version")
    CONF_VERSION_FIELD_NUMBER: _ClassVar[int]
    SLOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    conf_version: int
    slot_version: int
    def __init__(self, conf_version: _Optional[int] = ..., slot_version: _Optional[int] = ...) -> None: ...

class SlotRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("node_id", "address", "learner")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    learner: bool
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., learner: _Optional[bool] = ...) -> None: ...

class ShardDescriptor(_message.Message):
    __slots__ = ("shard_id", "epoch", "slots", "replicas", "leader_node_id")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    epoch: ShardEpoch
    slots: _containers.RepeatedCompositeFieldContainer[SlotRange]
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    leader_node_id: int
    def __init__(self, shard_id: _Optional[int] = ..., epoch: _Optional[_Union[ShardEpoch, _Mapping]] = ..., slots: _Optional[_Iterable[_Union[SlotRange, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., leader_node_id: _Optional[int] = ...) -> None: ...

class RequestHeader(_message.Message):
    __slots__ = ("shard_id", "epoch", "router_id", "seq", "seq_floor", "hlc", "deadline_ms")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SEQ_FLOOR_FIELD_NUMBER: _ClassVar[int]
    HLC_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    epoch: ShardEpoch
    router_id: int
    seq: int
    seq_floor: int
    hlc: int
    deadline_ms: int
    def __init__(self, shard_id: _Optional[int] = ..., epoch: _Optional[_Union[ShardEpoch, _Mapping]] = ..., router_id: _Optional[int] = ..., seq: _Optional[int] = ..., seq_floor: _Optional[int] = ..., hlc: _Optional[int] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class ShardResponseHeader(_message.Message):
    __slots__ = ("node_id", "hlc", "closed_ts", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HLC_FIELD_NUMBER: _ClassVar[int]
    CLOSED_TS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    hlc: int
    closed_ts: int
    error: StoreError
    def __init__(self, node_id: _Optional[int] = ..., hlc: _Optional[int] = ..., closed_ts: _Optional[int] = ..., error: _Optional[_Union[StoreError, _Mapping]] = ...) -> None: ...

class StoreError(_message.Message):
    __slots__ = ("routing", "kv")
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    routing: RoutingError
    kv: KvError
    def __init__(self, routing: _Optional[_Union[RoutingError, _Mapping]] = ..., kv: _Optional[_Union[KvError, _Mapping]] = ...) -> None: ...

class RoutingError(_message.Message):
    __slots__ = ("not_leader", "wrong_shard", "epoch_not_match", "stale_read_not_ready", "shard_not_found", "server_busy", "txn_locked")
    NOT_LEADER_FIELD_NUMBER: _ClassVar[int]
    WRONG_SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_NOT_MATCH_FIELD_NUMBER: _ClassVar[int]
    STALE_READ_NOT_READY_FIELD_NUMBER: _ClassVar[int]
    SHARD_NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    SERVER_BUSY_FIELD_NUMBER: _ClassVar[int]
    TXN_LOCKED_FIELD_NUMBER: _ClassVar[int]
    not_leader: NotLeader
    wrong_shard: WrongShard
    epoch_not_match: EpochNotMatch
    stale_read_not_ready: StaleReadNotReady
    shard_not_found: ShardNotFound
    server_busy: ServerBusy
    txn_locked: TxnLocked
    def __init__(self, not_leader: _Optional[_Union[NotLeader, _Mapping]] = ..., wrong_shard: _Optional[_Union[WrongShard, _Mapping]] = ..., epoch_not_match: _Optional[_Union[EpochNotMatch, _Mapping]] = ..., stale_read_not_ready: _Optional[_Union[StaleReadNotReady, _Mapping]] = ..., shard_not_found: _Optional[_Union[ShardNotFound, _Mapping]] = ..., server_busy: _Optional[_Union[ServerBusy, _Mapping]] = ..., txn_locked: _Optional[_Union[TxnLocked, _Mapping]] = ...) -> None: ...

class NotLeader(_message.Message):
    __slots__ = ("shard_id", "leader_node_id", "leader_address")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    leader_node_id: int
    leader_address: str
    def __init__(self, shard_id: _Optional[int] = ..., leader_node_id: _Optional[int] = ..., leader_address: _Optional[str] = ...) -> None: ...

class WrongShard(_message.Message):
    __slots__ = ("slot", "map_version")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    slot: int
    map_version: int
    def __init__(self, slot: _Optional[int] = ..., map_version: _Optional[int] = ...) -> None: ...

class EpochNotMatch(_message.Message):
    __slots__ = ("current_epoch", "current_slots", "related")
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CURRENT_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    current_epoch: ShardEpoch
    current_slots: _containers.RepeatedCompositeFieldContainer[SlotRange]
    related: _containers.RepeatedCompositeFieldContainer[ShardDescriptor]
    def __init__(self, current_epoch: _Optional[_Union[ShardEpoch, _Mapping]] = ..., current_slots: _Optional[_Iterable[_Union[SlotRange, _Mapping]]] = ..., related: _Optional[_Iterable[_Union[ShardDescriptor, _Mapping]]] = ...) -> None: ...

class StaleReadNotReady(_message.Message):
    __slots__ = ("closed_ts", "needed_ts", "leader_node_id")
    CLOSED_TS_FIELD_NUMBER: _ClassVar[int]
    NEEDED_TS_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    closed_ts: int
    needed_ts: int
    leader_node_id: int
    def __init__(self, closed_ts: _Optional[int] = ..., needed_ts: _Optional[int] = ..., leader_node_id: _Optional[int] = ...) -> None: ...

class ShardNotFound(_message.Message):
    __slots__ = ("shard_id",)
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    def __init__(self, shard_id: _Optional[int] = ...) -> None: ...

class ServerBusy(_message.Message):
    __slots__ = ("reason", "backoff_ms", "outcome_unknown")
    REASON_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    reason: str
    backoff_ms: int
    outcome_unknown: bool
    def __init__(self, reason: _Optional[str] = ..., backoff_ms: _Optional[int] = ..., outcome_unknown: _Optional[bool] = ...) -> None: ...

class TxnLocked(_message.Message):
    __slots__ = ("txn_id", "primary_shard_id", "locked_at")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    LOCKED_AT_FIELD_NUMBER: _ClassVar[int]
    txn_id: bytes
    primary_shard_id: int
    locked_at: int
    def __init__(self, txn_id: _Optional[bytes] = ..., primary_shard_id: _Optional[int] = ..., locked_at: _Optional[int] = ...) -> None: ...

class KvError(_message.Message):
    __slots__ = ("code", "detail", "compact_revision")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KV_ERROR_UNSPECIFIED: _ClassVar[KvError.Code]
        COMPACTED: _ClassVar[KvError.Code]
        FUTURE_REVISION: _ClassVar[KvError.Code]
        KEY_NOT_FOUND: _ClassVar[KvError.Code]
        DUPLICATE_KEY: _ClassVar[KvError.Code]
        TOO_MANY_OPS: _ClassVar[KvError.Code]
        REQUEST_TOO_LARGE: _ClassVar[KvError.Code]
        NO_SPACE: _ClassVar[KvError.Code]
        OUTCOME_UNKNOWN: _ClassVar[KvError.Code]
        EMPTY_KEY: _ClassVar[KvError.Code]
        VALUE_PROVIDED: _ClassVar[KvError.Code]
        LEASE_PROVIDED: _ClassVar[KvError.Code]
        INVALID_REQUEST: _ClassVar[KvError.Code]
        LEASE_NOT_FOUND: _ClassVar[KvError.Code]
    KV_ERROR_UNSPECIFIED: KvError.Code
    COMPACTED: KvError.Code
    FUTURE_REVISION: KvError.Code
    KEY_NOT_FOUND: KvError.Code
    DUPLICATE_KEY: KvError.Code
    TOO_MANY_OPS: KvError.Code
    REQUEST_TOO_LARGE: KvError.Code
    NO_SPACE: KvError.Code
    OUTCOME_UNKNOWN: KvError.Code
    EMPTY_KEY: KvError.Code
    VALUE_PROVIDED: KvError.Code
    LEASE_PROVIDED: KvError.Code
    INVALID_REQUEST: KvError.Code
    LEASE_NOT_FOUND: KvError.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    code: KvError.Code
    detail: str
    compact_revision: int
    def __init__(self, code: _Optional[_Union[KvError.Code, str]] = ..., detail: _Optional[str] = ..., compact_revision: _Optional[int] = ...) -> None: ...

class ShardRangeRequest(_message.Message):
    __slots__ = ("header", "consistency", "max_staleness_ms", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    consistency: ReadConsistency
    max_staleness_ms: int
    request: _rpc_pb2.RangeRequest
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., consistency: _Optional[_Union[ReadConsistency, str]] = ..., max_staleness_ms: _Optional[int] = ..., request: _Optional[_Union[_rpc_pb2.RangeRequest, _Mapping]] = ...) -> None: ...

class ShardRangeResponse(_message.Message):
    __slots__ = ("header", "response")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    response: _rpc_pb2.RangeResponse
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., response: _Optional[_Union[_rpc_pb2.RangeResponse, _Mapping]] = ...) -> None: ...

class ShardPutRequest(_message.Message):
    __slots__ = ("header", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    request: _rpc_pb2.PutRequest
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., request: _Optional[_Union[_rpc_pb2.PutRequest, _Mapping]] = ...) -> None: ...

class ShardPutResponse(_message.Message):
    __slots__ = ("header", "response")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    response: _rpc_pb2.PutResponse
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., response: _Optional[_Union[_rpc_pb2.PutResponse, _Mapping]] = ...) -> None: ...

class ShardDeleteRangeRequest(_message.Message):
    __slots__ = ("header", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    request: _rpc_pb2.DeleteRangeRequest
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., request: _Optional[_Union[_rpc_pb2.DeleteRangeRequest, _Mapping]] = ...) -> None: ...

class ShardDeleteRangeResponse(_message.Message):
    __slots__ = ("header", "response")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    response: _rpc_pb2.DeleteRangeResponse
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., response: _Optional[_Union[_rpc_pb2.DeleteRangeResponse, _Mapping]] = ...) -> None: ...

class ShardTxnRequest(_message.Message):
    __slots__ = ("header", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    request: _rpc_pb2.TxnRequest
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., request: _Optional[_Union[_rpc_pb2.TxnRequest, _Mapping]] = ...) -> None: ...

class ShardTxnResponse(_message.Message):
    __slots__ = ("header", "response")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    response: _rpc_pb2.TxnResponse
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., response: _Optional[_Union[_rpc_pb2.TxnResponse, _Mapping]] = ...) -> None: ...

class ShardTxnPartRequest(_message.Message):
    __slots__ = ("header", "phase", "txn_id", "primary_shard_id", "txn", "path", "commit", "revision", "slot_version")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SLOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    phase: TxnPhase
    txn_id: bytes
    primary_shard_id: int
    txn: _rpc_pb2.TxnRequest
    path: _containers.RepeatedScalarFieldContainer[bool]
    commit: bool
    revision: int
    slot_version: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., phase: _Optional[_Union[TxnPhase, str]] = ..., txn_id: _Optional[bytes] = ..., primary_shard_id: _Optional[int] = ..., txn: _Optional[_Union[_rpc_pb2.TxnRequest, _Mapping]] = ..., path: _Optional[_Iterable[bool]] = ..., commit: _Optional[bool] = ..., revision: _Optional[int] = ..., slot_version: _Optional[int] = ...) -> None: ...

class TxnFailedOp(_message.Message):
    __slots__ = ("op", "code")
    OP_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    op: int
    code: int
    def __init__(self, op: _Optional[int] = ..., code: _Optional[int] = ...) -> None: ...

class ShardTxnPartResponse(_message.Message):
    __slots__ = ("header", "state", "revision", "compares", "owned", "failed", "path", "txn", "has_txn")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    COMPARES_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    HAS_TXN_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    state: TxnState
    revision: int
    compares: _containers.RepeatedScalarFieldContainer[int]
    owned: _containers.RepeatedScalarFieldContainer[int]
    failed: _containers.RepeatedCompositeFieldContainer[TxnFailedOp]
    path: _containers.RepeatedScalarFieldContainer[bool]
    txn: _rpc_pb2.TxnResponse
    has_txn: bool
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., state: _Optional[_Union[TxnState, str]] = ..., revision: _Optional[int] = ..., compares: _Optional[_Iterable[int]] = ..., owned: _Optional[_Iterable[int]] = ..., failed: _Optional[_Iterable[_Union[TxnFailedOp, _Mapping]]] = ..., path: _Optional[_Iterable[bool]] = ..., txn: _Optional[_Union[_rpc_pb2.TxnResponse, _Mapping]] = ..., has_txn: _Optional[bool] = ...) -> None: ...

class ShardCompactRequest(_message.Message):
    __slots__ = ("header", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    request: _rpc_pb2.CompactionRequest
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., request: _Optional[_Union[_rpc_pb2.CompactionRequest, _Mapping]] = ...) -> None: ...

class ShardCompactResponse(_message.Message):
    __slots__ = ("header", "response")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    response: _rpc_pb2.CompactionResponse
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., response: _Optional[_Union[_rpc_pb2.CompactionResponse, _Mapping]] = ...) -> None: ...

class ShardWatchRequest(_message.Message):
    __slots__ = ("header", "request", "progress_interval_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    request: _rpc_pb2.WatchCreateRequest
    progress_interval_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., request: _Optional[_Union[_rpc_pb2.WatchCreateRequest, _Mapping]] = ..., progress_interval_ms: _Optional[int] = ...) -> None: ...

class ShardWatchResponse(_message.Message):
    __slots__ = ("header", "events", "progress_revision", "compact_revision")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_REVISION_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    header: ShardResponseHeader
    events: _containers.RepeatedCompositeFieldContainer[_kv_pb2.Event]
    progress_revision: int
    compact_revision: int
    def __init__(self, header: _Optional[_Union[ShardResponseHeader, _Mapping]] = ..., events: _Optional[_Iterable[_Union[_kv_pb2.Event, _Mapping]]] = ..., progress_revision: _Optional[int] = ..., compact_revision: _Optional[int] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("id", "range", "put", "delete_range", "txn", "compact", "txn_part")
    ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACT_FIELD_NUMBER: _ClassVar[int]
    TXN_PART_FIELD_NUMBER: _ClassVar[int]
    id: int
    range: ShardRangeRequest
    put: ShardPutRequest
    delete_range: ShardDeleteRangeRequest
    txn: ShardTxnRequest
    compact: ShardCompactRequest
    txn_part: ShardTxnPartRequest
    def __init__(self, id: _Optional[int] = ..., range: _Optional[_Union[ShardRangeRequest, _Mapping]] = ..., put: _Optional[_Union[ShardPutRequest, _Mapping]] = ..., delete_range: _Optional[_Union[ShardDeleteRangeRequest, _Mapping]] = ..., txn: _Optional[_Union[ShardTxnRequest, _Mapping]] = ..., compact: _Optional[_Union[ShardCompactRequest, _Mapping]] = ..., txn_part: _Optional[_Union[ShardTxnPartRequest, _Mapping]] = ...) -> None: ...

class ForwardRequestBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ForwardRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ForwardRequest, _Mapping]]] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("id", "range", "put", "delete_range", "txn", "compact", "txn_part")
    ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACT_FIELD_NUMBER: _ClassVar[int]
    TXN_PART_FIELD_NUMBER: _ClassVar[int]
    id: int
    range: ShardRangeResponse
    put: ShardPutResponse
    delete_range: ShardDeleteRangeResponse
    txn: ShardTxnResponse
    compact: ShardCompactResponse
    txn_part: ShardTxnPartResponse
    def __init__(self, id: _Optional[int] = ..., range: _Optional[_Union[ShardRangeResponse, _Mapping]] = ..., put: _Optional[_Union[ShardPutResponse, _Mapping]] = ..., delete_range: _Optional[_Union[ShardDeleteRangeResponse, _Mapping]] = ..., txn: _Optional[_Union[ShardTxnResponse, _Mapping]] = ..., compact: _Optional[_Union[ShardCompactResponse, _Mapping]] = ..., txn_part: _Optional[_Union[ShardTxnPartResponse, _Mapping]] = ...) -> None: ...

class ForwardResponseBatch(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ForwardResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ForwardResponse, _Mapping]]] = ...) -> None: ...
