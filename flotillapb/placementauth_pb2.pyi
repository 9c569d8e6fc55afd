from flotillapb.etcd.authpb import auth_pb2 as _auth_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuthCall(_message.Message):
    __slots__ = ("method", "request", "actor", "password_hash", "token", "expires_ms", "now_ms", "checked_revision")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_REVISION_FIELD_NUMBER: _ClassVar[int]
    method: str
    request: bytes
    actor: str
    password_hash: bytes
    token: str
    expires_ms: int
    now_ms: int
    checked_revision: int
    def __init__(self, method: _Optional[str] = ..., request: _Optional[bytes] = ..., actor: _Optional[str] = ..., password_hash: _Optional[bytes] = ..., token: _Optional[str] = ..., expires_ms: _Optional[int] = ..., now_ms: _Optional[int] = ..., checked_revision: _Optional[int] = ...) -> None: ...

class AuthReply(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: bytes
    def __init__(self, response: _Optional[bytes] = ...) -> None: ...

class AuthStateRequest(_message.Message):
    __slots__ = ("known_version", "known_token_seq")
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    KNOWN_TOKEN_SEQ_FIELD_NUMBER: _ClassVar[int]
    known_version: int
    known_token_seq: int
    def __init__(self, known_version: _Optional[int] = ..., known_token_seq: _Optional[int] = ...) -> None: ...

class AuthUser(_message.Message):
    __slots__ = ("name", "password", "roles", "no_password")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    NO_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    name: str
    password: bytes
    roles: _containers.RepeatedScalarFieldContainer[str]
    no_password: bool
    def __init__(self, name: _Optional[str] = ..., password: _Optional[bytes] = ..., roles: _Optional[_Iterable[str]] = ..., no_password: _Optional[bool] = ...) -> None: ...

class AuthToken(_message.Message):
    __slots__ = ("token", "user", "expires_ms", "seq")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    token: str
    user: str
    expires_ms: int
    seq: int
    def __init__(self, token: _Optional[str] = ..., user: _Optional[str] = ..., expires_ms: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class AuthStateResponse(_message.Message):
    __slots__ = ("version", "revision", "enabled", "full", "users", "roles", "tokens", "token_seq")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SEQ_FIELD_NUMBER: _ClassVar[int]
    version: int
    revision: int
    enabled: bool
    full: bool
    users: _containers.RepeatedCompositeFieldContainer[AuthUser]
    roles: _containers.RepeatedCompositeFieldContainer[_auth_pb2.Role]
    tokens: _containers.RepeatedCompositeFieldContainer[AuthToken]
    token_seq: int
    def __init__(self, version: _Optional[int] = ..., revision: _Optional[int] = ..., enabled: _Optional[bool] = ..., full: _Optional[bool] = ..., users: _Optional[_Iterable[_Union[AuthUser, _Mapping]]] = ..., roles: _Optional[_Iterable[_Union[_auth_pb2.Role, _Mapping]]] = ..., tokens: _Optional[_Iterable[_Union[AuthToken, _Mapping]]] = ..., token_seq: _Optional[int] = ...) -> None: ...
