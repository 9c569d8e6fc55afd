from flotillapb.etcd.etcdserverpb import rpc_pb2 as _rpc_pb2
from flotillapb import store_pb2 as _store_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_KIND_UNSPECIFIED: _ClassVar[NodeKind]
    STORE: _ClassVar[NodeKind]
    ROUTER: _ClassVar[NodeKind]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    UP: _ClassVar[NodeState]
    DOWN: _ClassVar[NodeState]
    DRAINING: _ClassVar[NodeState]
    REMOVED: _ClassVar[NodeState]

class StepKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_KIND_UNSPECIFIED: _ClassVar[StepKind]
    ADD_LEARNER: _ClassVar[StepKind]
    PROMOTE: _ClassVar[StepKind]
    REMOVE_REPLICA: _ClassVar[StepKind]
    TRANSFER_LEADER: _ClassVar[StepKind]
    SPLIT: _ClassVar[StepKind]
    PREPARE_MERGE: _ClassVar[StepKind]
    COMMIT_MERGE: _ClassVar[StepKind]
NODE_KIND_UNSPECIFIED: NodeKind
STORE: NodeKind
ROUTER: NodeKind
NODE_STATE_UNSPECIFIED: NodeState
UP: NodeState
DOWN: NodeState
DRAINING: NodeState
REMOVED: NodeState
STEP_KIND_UNSPECIFIED: StepKind
ADD_LEARNER: StepKind
PROMOTE: StepKind
REMOVE_REPLICA: StepKind
TRANSFER_LEADER: StepKind
SPLIT: StepKind
PREPARE_MERGE: StepKind
COMMIT_MERGE: StepKind

class Label(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "kind", "address", "labels", "state")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    kind: NodeKind
    address: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    state: NodeState
    def __init__(self, node_id: _Optional[int] = ..., kind: _Optional[_Union[NodeKind, str]] = ..., address: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., state: _Optional[_Union[NodeState, str]] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("descriptor", "leader_term")
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    descriptor: _store_pb2.ShardDescriptor
    leader_term: int
    def __init__(self, descriptor: _Optional[_Union[_store_pb2.ShardDescriptor, _Mapping]] = ..., leader_term: _Optional[int] = ...) -> None: ...

class ClusterMap(_message.Message):
    __slots__ = ("cluster_id", "slot_count", "map_version", "nodes", "shards", "retired_shards")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    RETIRED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    slot_count: int
    map_version: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    retired_shards: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cluster_id: _Optional[int] = ..., slot_count: _Optional[int] = ..., map_version: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., retired_shards: _Optional[_Iterable[int]] = ...) -> None: ...

class BootstrapRequest(_message.Message):
    __slots__ = ("slot_count", "initial_shards", "replicas")
    SLOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    INITIAL_SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    slot_count: int
    initial_shards: int
    replicas: int
    def __init__(self, slot_count: _Optional[int] = ..., initial_shards: _Optional[int] = ..., replicas: _Optional[int] = ...) -> None: ...

class BootstrapResponse(_message.Message):
    __slots__ = ("already_bootstrapped", "map")
    ALREADY_BOOTSTRAPPED_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    already_bootstrapped: bool
    map: ClusterMap
    def __init__(self, already_bootstrapped: _Optional[bool] = ..., map: _Optional[_Union[ClusterMap, _Mapping]] = ...) -> None: ...

class GetClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterResponse(_message.Message):
    __slots__ = ("cluster_id", "slot_count", "map_version", "leader_node_id", "placement_servers")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_SERVERS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    slot_count: int
    map_version: int
    leader_node_id: int
    placement_servers: _containers.RepeatedCompositeFieldContainer[_store_pb2.NodeAddress]
    def __init__(self, cluster_id: _Optional[int] = ..., slot_count: _Optional[int] = ..., map_version: _Optional[int] = ..., leader_node_id: _Optional[int] = ..., placement_servers: _Optional[_Iterable[_Union[_store_pb2.NodeAddress, _Mapping]]] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node_id", "kind", "address", "labels")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    kind: NodeKind
    address: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, node_id: _Optional[int] = ..., kind: _Optional[_Union[NodeKind, str]] = ..., address: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ("node_id", "map_version", "cluster_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    map_version: int
    cluster_id: int
    def __init__(self, node_id: _Optional[int] = ..., map_version: _Optional[int] = ..., cluster_id: _Optional[int] = ...) -> None: ...

class ShardStats(_message.Message):
    __slots__ = ("shard_id", "is_leader", "epoch", "term", "size_bytes", "key_count", "read_rate", "write_rate", "descriptor", "merge_target")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    READ_RATE_FIELD_NUMBER: _ClassVar[int]
    WRITE_RATE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    MERGE_TARGET_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    is_leader: bool
    epoch: _store_pb2.ShardEpoch
    term: int
    size_bytes: int
    key_count: int
    read_rate: float
    write_rate: float
    descriptor: _store_pb2.ShardDescriptor
    merge_target: int
    def __init__(self, shard_id: _Optional[int] = ..., is_leader: _Optional[bool] = ..., epoch: _Optional[_Union[_store_pb2.ShardEpoch, _Mapping]] = ..., term: _Optional[int] = ..., size_bytes: _Optional[int] = ..., key_count: _Optional[int] = ..., read_rate: _Optional[float] = ..., write_rate: _Optional[float] = ..., descriptor: _Optional[_Union[_store_pb2.ShardDescriptor, _Mapping]] = ..., merge_target: _Optional[int] = ...) -> None: ...

class StoreHeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "shards", "alarms", "session", "seq", "full", "base_seq", "removed_shards", "routers")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    BASE_SEQ_FIELD_NUMBER: _ClassVar[int]
    REMOVED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    ROUTERS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardStats]
    alarms: _containers.RepeatedScalarFieldContainer[_rpc_pb2.AlarmType]
    session: int
    seq: int
    full: bool
    base_seq: int
    removed_shards: _containers.RepeatedScalarFieldContainer[int]
    routers: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node_id: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardStats, _Mapping]]] = ..., alarms: _Optional[_Iterable[_Union[_rpc_pb2.AlarmType, str]]] = ..., session: _Optional[int] = ..., seq: _Optional[int] = ..., full: _Optional[bool] = ..., base_seq: _Optional[int] = ..., removed_shards: _Optional[_Iterable[int]] = ..., routers: _Optional[_Iterable[int]] = ...) -> None: ...

class StoreHeartbeatResponse(_message.Message):
    __slots__ = ("map_version", "state", "steps", "nospace_nodes", "acked_seq")
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    NOSPACE_NODES_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    map_version: int
    state: NodeState
    steps: _containers.RepeatedCompositeFieldContainer[OperatorStep]
    nospace_nodes: _containers.RepeatedScalarFieldContainer[int]
    acked_seq: int
    def __init__(self, map_version: _Optional[int] = ..., state: _Optional[_Union[NodeState, str]] = ..., steps: _Optional[_Iterable[_Union[OperatorStep, _Mapping]]] = ..., nospace_nodes: _Optional[_Iterable[int]] = ..., acked_seq: _Optional[int] = ...) -> None: ...

class ReportShardRequest(_message.Message):
    __slots__ = ("descriptor", "term")
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    descriptor: _store_pb2.ShardDescriptor
    term: int
    def __init__(self, descriptor: _Optional[_Union[_store_pb2.ShardDescriptor, _Mapping]] = ..., term: _Optional[int] = ...) -> None: ...

class ReportShardResponse(_message.Message):
    __slots__ = ("outcome", "map_version", "current")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[ReportShardResponse.Outcome]
        ACCEPTED: _ClassVar[ReportShardResponse.Outcome]
        STALE: _ClassVar[ReportShardResponse.Outcome]
        UNKNOWN_SHARD: _ClassVar[ReportShardResponse.Outcome]
        SLOT_CONFLICT: _ClassVar[ReportShardResponse.Outcome]
        NOT_BOOTSTRAPPED: _ClassVar[ReportShardResponse.Outcome]
    OUTCOME_UNSPECIFIED: ReportShardResponse.Outcome
    ACCEPTED: ReportShardResponse.Outcome
    STALE: ReportShardResponse.Outcome
    UNKNOWN_SHARD: ReportShardResponse.Outcome
    SLOT_CONFLICT: ReportShardResponse.Outcome
    NOT_BOOTSTRAPPED: ReportShardResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    outcome: ReportShardResponse.Outcome
    map_version: int
    current: ShardInfo
    def __init__(self, outcome: _Optional[_Union[ReportShardResponse.Outcome, str]] = ..., map_version: _Optional[int] = ..., current: _Optional[_Union[ShardInfo, _Mapping]] = ...) -> None: ...

class GetMapRequest(_message.Message):
    __slots__ = ("linearizable",)
    LINEARIZABLE_FIELD_NUMBER: _ClassVar[int]
    linearizable: bool
    def __init__(self, linearizable: _Optional[bool] = ...) -> None: ...

class GetMapResponse(_message.Message):
    __slots__ = ("map", "shard_stats", "suspect_node_ids")
    MAP_FIELD_NUMBER: _ClassVar[int]
    SHARD_STATS_FIELD_NUMBER: _ClassVar[int]
    SUSPECT_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    map: ClusterMap
    shard_stats: _containers.RepeatedCompositeFieldContainer[ShardStats]
    suspect_node_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, map: _Optional[_Union[ClusterMap, _Mapping]] = ..., shard_stats: _Optional[_Iterable[_Union[ShardStats, _Mapping]]] = ..., suspect_node_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class WatchMapRequest(_message.Message):
    __slots__ = ("since_map_version",)
    SINCE_MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    since_map_version: int
    def __init__(self, since_map_version: _Optional[int] = ...) -> None: ...

class WatchMapResponse(_message.Message):
    __slots__ = ("map_version", "full", "nodes", "shards", "removed_shards", "more")
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    map_version: int
    full: ClusterMap
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    removed_shards: _containers.RepeatedScalarFieldContainer[int]
    more: bool
    def __init__(self, map_version: _Optional[int] = ..., full: _Optional[_Union[ClusterMap, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., removed_shards: _Optional[_Iterable[int]] = ..., more: _Optional[bool] = ...) -> None: ...

class LeaseKeyChange(_message.Message):
    __slots__ = ("lease_id", "key", "detach")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    key: bytes
    detach: bool
    def __init__(self, lease_id: _Optional[int] = ..., key: _Optional[bytes] = ..., detach: _Optional[bool] = ...) -> None: ...

class LeaseAttachRequest(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[LeaseKeyChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[LeaseKeyChange, _Mapping]]] = ...) -> None: ...

class LeaseAttachResponse(_message.Message):
    __slots__ = ("lease_not_found",)
    LEASE_NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    lease_not_found: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, lease_not_found: _Optional[_Iterable[int]] = ...) -> None: ...

class SetPeersRequest(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[_store_pb2.NodeAddress]
    def __init__(self, peers: _Optional[_Iterable[_Union[_store_pb2.NodeAddress, _Mapping]]] = ...) -> None: ...

class SetPeersResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DashboardRequest(_message.Message):
    __slots__ = ("since_sample",)
    SINCE_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    since_sample: int
    def __init__(self, since_sample: _Optional[int] = ...) -> None: ...

class DashboardResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("node_id", "is_leader", "leader_node_id", "term", "applied_index", "map_version", "cluster_id", "leases", "leases_pending_delete", "keys_deleted", "heartbeats", "voters")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    LEASES_PENDING_DELETE_FIELD_NUMBER: _ClassVar[int]
    KEYS_DELETED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    is_leader: bool
    leader_node_id: int
    term: int
    applied_index: int
    map_version: int
    cluster_id: int
    leases: int
    leases_pending_delete: int
    keys_deleted: int
    heartbeats: int
    voters: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node_id: _Optional[int] = ..., is_leader: _Optional[bool] = ..., leader_node_id: _Optional[int] = ..., term: _Optional[int] = ..., applied_index: _Optional[int] = ..., map_version: _Optional[int] = ..., cluster_id: _Optional[int] = ..., leases: _Optional[int] = ..., leases_pending_delete: _Optional[int] = ..., keys_deleted: _Optional[int] = ..., heartbeats: _Optional[int] = ..., voters: _Optional[_Iterable[int]] = ...) -> None: ...

class OperatorStep(_message.Message):
    __slots__ = ("operator_id", "shard_id", "kind", "node_id", "new_shard_id", "at_slot", "other_shard_id")
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    AT_SLOT_FIELD_NUMBER: _ClassVar[int]
    OTHER_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    operator_id: int
    shard_id: int
    kind: StepKind
    node_id: int
    new_shard_id: int
    at_slot: int
    other_shard_id: int
    def __init__(self, operator_id: _Optional[int] = ..., shard_id: _Optional[int] = ..., kind: _Optional[_Union[StepKind, str]] = ..., node_id: _Optional[int] = ..., new_shard_id: _Optional[int] = ..., at_slot: _Optional[int] = ..., other_shard_id: _Optional[int] = ...) -> None: ...

class OperatorInfo(_message.Message):
    __slots__ = ("id", "kind", "shard_id", "steps", "step_index", "state", "age_s", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: str
    shard_id: int
    steps: _containers.RepeatedCompositeFieldContainer[OperatorStep]
    step_index: int
    state: str
    age_s: float
    note: str
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[str] = ..., shard_id: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[OperatorStep, _Mapping]]] = ..., step_index: _Optional[int] = ..., state: _Optional[str] = ..., age_s: _Optional[float] = ..., note: _Optional[str] = ...) -> None: ...

class ListOperatorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOperatorsResponse(_message.Message):
    __slots__ = ("operators",)
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    operators: _containers.RepeatedCompositeFieldContainer[OperatorInfo]
    def __init__(self, operators: _Optional[_Iterable[_Union[OperatorInfo, _Mapping]]] = ...) -> None: ...

class CancelOperatorRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class CancelOperatorResponse(_message.Message):
    __slots__ = ("rollback",)
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    rollback: OperatorInfo
    def __init__(self, rollback: _Optional[_Union[OperatorInfo, _Mapping]] = ...) -> None: ...

class OperatorResponse(_message.Message):
    __slots__ = ("operator",)
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    operator: OperatorInfo
    def __init__(self, operator: _Optional[_Union[OperatorInfo, _Mapping]] = ...) -> None: ...

class SplitRequest(_message.Message):
    __slots__ = ("shard_id", "at_slot")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    AT_SLOT_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    at_slot: int
    def __init__(self, shard_id: _Optional[int] = ..., at_slot: _Optional[int] = ...) -> None: ...

class MergeRequest(_message.Message):
    __slots__ = ("shard_id", "other_shard_id")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    OTHER_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    other_shard_id: int
    def __init__(self, shard_id: _Optional[int] = ..., other_shard_id: _Optional[int] = ...) -> None: ...

class MoveRequest(_message.Message):
    __slots__ = ("shard_id", "from_node", "to_node")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    from_node: int
    to_node: int
    def __init__(self, shard_id: _Optional[int] = ..., from_node: _Optional[int] = ..., to_node: _Optional[int] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("shard_id", "node_id")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    node_id: int
    def __init__(self, shard_id: _Optional[int] = ..., node_id: _Optional[int] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node_id", "undo")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    undo: bool
    def __init__(self, node_id: _Optional[int] = ..., undo: _Optional[bool] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: NodeState
    def __init__(self, state: _Optional[_Union[NodeState, str]] = ...) -> None: ...
