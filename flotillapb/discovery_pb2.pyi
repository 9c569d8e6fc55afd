from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PlacementEndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlacementEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "role", "node_id")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    role: str
    node_id: int
    def __init__(self, endpoints: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ..., node_id: _Optional[int] = ...) -> None: ...
