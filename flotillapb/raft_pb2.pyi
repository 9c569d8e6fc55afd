from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MSG_HUP: _ClassVar[MessageType]
    MSG_BEAT: _ClassVar[MessageType]
    MSG_PROP: _ClassVar[MessageType]
    MSG_APP: _ClassVar[MessageType]
    MSG_APP_RESP: _ClassVar[MessageType]
    MSG_VOTE: _ClassVar[MessageType]
    MSG_VOTE_RESP: _ClassVar[MessageType]
    MSG_SNAP: _ClassVar[MessageType]
    MSG_HEARTBEAT: _ClassVar[MessageType]
    MSG_HEARTBEAT_RESP: _ClassVar[MessageType]
    MSG_UNREACHABLE: _ClassVar[MessageType]
    MSG_SNAP_STATUS: _ClassVar[MessageType]
    MSG_CHECK_QUORUM: _ClassVar[MessageType]
    MSG_TRANSFER_LEADER: _ClassVar[MessageType]
    MSG_TIMEOUT_NOW: _ClassVar[MessageType]
    MSG_READ_INDEX: _ClassVar[MessageType]
    MSG_READ_INDEX_RESP: _ClassVar[MessageType]
    MSG_PRE_VOTE: _ClassVar[MessageType]
    MSG_PRE_VOTE_RESP: _ClassVar[MessageType]
    MSG_FORGET_LEADER: _ClassVar[MessageType]

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_NORMAL: _ClassVar[EntryKind]
    ENTRY_CONF_CHANGE: _ClassVar[EntryKind]
MSG_HUP: MessageType
MSG_BEAT: MessageType
MSG_PROP: MessageType
MSG_APP: MessageType
MSG_APP_RESP: MessageType
MSG_VOTE: MessageType
MSG_VOTE_RESP: MessageType
MSG_SNAP: MessageType
MSG_HEARTBEAT: MessageType
MSG_HEARTBEAT_RESP: MessageType
MSG_UNREACHABLE: MessageType
MSG_SNAP_STATUS: MessageType
MSG_CHECK_QUORUM: MessageType
MSG_TRANSFER_LEADER: MessageType
MSG_TIMEOUT_NOW: MessageType
MSG_READ_INDEX: MessageType
MSG_READ_INDEX_RESP: MessageType
MSG_PRE_VOTE: MessageType
MSG_PRE_VOTE_RESP: MessageType
MSG_FORGET_LEADER: MessageType
ENTRY_NORMAL: EntryKind
ENTRY_CONF_CHANGE: EntryKind

class Entry(_message.Message):
    __slots__ = ("term", "index", "kind", "data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    kind: EntryKind
    data: bytes
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ConfState(_message.Message):
    __slots__ = ("voters", "learners")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ...) -> None: ...

class SnapshotMetadata(_message.Message):
    __slots__ = ("index", "term", "conf_state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    conf_state: ConfState
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., conf_state: _Optional[_Union[ConfState, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("type", "to", "from_", "term", "log_term", "index", "entries", "commit", "snapshot", "reject", "reject_hint", "context")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FROM__FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    type: MessageType
    to: int
    from_: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    commit: int
    snapshot: SnapshotMetadata
    reject: bool
    reject_hint: int
    context: bytes
    def __init__(self, type: _Optional[_Union[MessageType, str]] = ..., to: _Optional[int] = ..., from_: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., commit: _Optional[int] = ..., snapshot: _Optional[_Union[SnapshotMetadata, _Mapping]] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., context: _Optional[bytes] = ...) -> None: ...

class GroupMessage(_message.Message):
    __slots__ = ("group_id", "msg")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    msg: Message
    def __init__(self, group_id: _Optional[int] = ..., msg: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("group_id", "to", "from_", "term", "commit", "context", "response")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FROM__FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    to: int
    from_: int
    term: int
    commit: int
    context: bytes
    response: bool
    def __init__(self, group_id: _Optional[int] = ..., to: _Optional[int] = ..., from_: _Optional[int] = ..., term: _Optional[int] = ..., commit: _Optional[int] = ..., context: _Optional[bytes] = ..., response: _Optional[bool] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("from_node", "to_node", "messages", "heartbeats", "runs")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    to_node: int
    messages: _containers.RepeatedCompositeFieldContainer[GroupMessage]
    heartbeats: _containers.RepeatedCompositeFieldContainer[Heartbeat]
    runs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[GroupMessage, _Mapping]]] = ..., heartbeats: _Optional[_Iterable[_Union[Heartbeat, _Mapping]]] = ..., runs: _Optional[_Iterable[int]] = ...) -> None: ...

class StreamAck(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    def __init__(self, node_id: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("from_node", "to_node", "group_id", "header", "offset", "data", "last")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    to_node: int
    group_id: int
    header: Message
    offset: int
    data: bytes
    last: bool
    def __init__(self, from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., group_id: _Optional[int] = ..., header: _Optional[_Union[Message, _Mapping]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("node_id", "received_bytes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    received_bytes: int
    def __init__(self, node_id: _Optional[int] = ..., received_bytes: _Optional[int] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("from_node",)
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    def __init__(self, from_node: _Optional[int] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    def __init__(self, node_id: _Optional[int] = ...) -> None: ...
