"""etcd's HTTP/JSON gateway, the pure part: routes, JSON in and out, errors.

etcd 3.5 serves its gRPC services over HTTP through grpc-gateway v1.16
(server/embed/serve.go: ``gw.NewServeMux()`` with the default marshaler,
``JSONPb{OrigName: true}``). What a client sees, and what this module
reproduces:

- Routes: ``POST`` with a JSON body, one path per RPC as etcd 3.5's
  rpc.proto annotates them (``ROUTES``), ``/v3beta/...`` rewritten to
  ``/v3/...`` (serve.go's accessController). Another method on a known path
  answers 405 ``Method Not Allowed``, an unknown path under ``/v3/`` 404
  ``Not Found`` (grpc-gateway's DefaultOtherErrorHandler: plain text).
- Request bodies: protobuf's JSON mapping; field names as in the .proto or
  lowerCamelCase, bytes in base64, 64-bit integers as strings or numbers,
  enums by name or number; unknown fields ignored; an empty body is the
  empty request. A unary body that does not decode answers INVALID_ARGUMENT;
  the first message of a streaming body answers UNKNOWN (the generated
  etcd handlers return the decoder's error unwrapped).
- Responses: field names as in the .proto (``OrigName``), bytes base64,
  64-bit integers as strings, enums by name, fields at their default value
  left out (``EmitDefaults: false``: a PUT event has no ``type``), compact,
  ``Content-Type: application/json``. google.protobuf.json_format with
  preserving_proto_field_name=True is that mapping.
- Errors of a unary call: ``{"error": m, "message": m, "code": c}`` (gRPC code
  number), with the HTTP status ``http_status`` maps the code to
  (runtime.HTTPStatusFromCode).
- Streams (Watch, LeaseKeepAlive, Snapshot): one ``{"result": <response>}``
  object and a newline per response, each flushed; an error ends the stream
  with ``{"error": {"grpc_code": c, "http_code": h, "message": m,
  "http_status": "<text>"}}`` (no newline), whose HTTP status is used only if
  nothing was sent before it. A streaming request body is a sequence of JSON
  objects (``JsonValueStream``).
- ``GET /health``: ``{"health":"true","reason":""}`` (200), or
  ``"false"`` and the reason (503, as text/plain); ``GET /version``:
  ``{"etcdserver":..,"etcdcluster":..}``.

No I/O here: router/gateway/server.py serves these over aiohttp.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.v3electionpb import v3election_pb2
from flotillapb.etcd.v3lockpb import v3lock_pb2

# gRPC status codes by number (google/rpc/code.proto).
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
OUT_OF_RANGE = 11
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
DATA_LOSS = 15
UNAUTHENTICATED = 16

# grpc-gateway v1.16 runtime.HTTPStatusFromCode.
_HTTP_OF_CODE: dict[int, int] = {
    OK: 200,
    CANCELLED: 408,
    UNKNOWN: 500,
    INVALID_ARGUMENT: 400,
    DEADLINE_EXCEEDED: 504,
    NOT_FOUND: 404,
    ALREADY_EXISTS: 409,
    PERMISSION_DENIED: 403,
    UNAUTHENTICATED: 401,
    RESOURCE_EXHAUSTED: 429,
    FAILED_PRECONDITION: 400,  # deliberately not 412 (grpc-gateway's comment)
    ABORTED: 409,
    OUT_OF_RANGE: 400,
    UNIMPLEMENTED: 501,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    DATA_LOSS: 500,
}

# Go's http.StatusText for the statuses above.
HTTP_STATUS_TEXT: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"  # Go's http.Error

GRPC_METHOD_NOT_FOUND = "Method not found!"
"""What the router's gRPC server (grpcio) answers, with UNIMPLEMENTED, for a
service it does not serve (Auth): the gateway answers alike."""


def http_status(code: int) -> int:
    """The HTTP status grpc-gateway v1 answers a gRPC status code with."""
    return _HTTP_OF_CODE.get(code, 500)


@dataclass(frozen=True, slots=True)
class Route:
    """One gateway path: the gRPC method it calls."""

    service: str  # full name, e.g. "etcdserverpb.KV"
    method: str  # e.g. "Range"
    request_type: type[Message]
    client_streaming: bool = False
    server_streaming: bool = False

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming

    @property
    def full_method(self) -> str:
        return f"/{self.service}/{self.method}"


# etcd 3.5 api/etcdserverpb/rpc.proto, its google.api.http annotations (additional_bindings included).
_ETCD_PATHS: tuple[tuple[str, str, str], ...] = (
    ("/v3/kv/range", "KV", "Range"),
    ("/v3/kv/put", "KV", "Put"),
    ("/v3/kv/deleterange", "KV", "DeleteRange"),
    ("/v3/kv/txn", "KV", "Txn"),
    ("/v3/kv/compaction", "KV", "Compact"),
    ("/v3/watch", "Watch", "Watch"),
    ("/v3/lease/grant", "Lease", "LeaseGrant"),
    ("/v3/lease/revoke", "Lease", "LeaseRevoke"),
    ("/v3/kv/lease/revoke", "Lease", "LeaseRevoke"),
    ("/v3/lease/keepalive", "Lease", "LeaseKeepAlive"),
    ("/v3/lease/timetolive", "Lease", "LeaseTimeToLive"),
    ("/v3/kv/lease/timetolive", "Lease", "LeaseTimeToLive"),
    ("/v3/lease/leases", "Lease", "LeaseLeases"),
    ("/v3/kv/lease/leases", "Lease", "LeaseLeases"),
    ("/v3/cluster/member/add", "Cluster", "MemberAdd"),
    ("/v3/cluster/member/remove", "Cluster", "MemberRemove"),
    ("/v3/cluster/member/update", "Cluster", "MemberUpdate"),
    ("/v3/cluster/member/list", "Cluster", "MemberList"),
    ("/v3/cluster/member/promote", "Cluster", "MemberPromote"),
    ("/v3/maintenance/alarm", "Maintenance", "Alarm"),
    ("/v3/maintenance/status", "Maintenance", "Status"),
    ("/v3/maintenance/defragment", "Maintenance", "Defragment"),
    ("/v3/maintenance/hash", "Maintenance", "Hash"),
    ("/v3/maintenance/hashkv", "Maintenance", "HashKV"),
    ("/v3/maintenance/snapshot", "Maintenance", "Snapshot"),
    ("/v3/maintenance/transfer-leadership", "Maintenance", "MoveLeader"),
    ("/v3/maintenance/downgrade", "Maintenance", "Downgrade"),
    ("/v3/auth/enable", "Auth", "AuthEnable"),
    ("/v3/auth/disable", "Auth", "AuthDisable"),
    ("/v3/auth/status", "Auth", "AuthStatus"),
    ("/v3/auth/authenticate", "Auth", "Authenticate"),
    ("/v3/auth/user/add", "Auth", "UserAdd"),
    ("/v3/auth/user/get", "Auth", "UserGet"),
    ("/v3/auth/user/list", "Auth", "UserList"),
    ("/v3/auth/user/delete", "Auth", "UserDelete"),
    ("/v3/auth/user/changepw", "Auth", "UserChangePassword"),
    ("/v3/auth/user/grant", "Auth", "UserGrantRole"),
    ("/v3/auth/user/revoke", "Auth", "UserRevokeRole"),
    ("/v3/auth/role/add", "Auth", "RoleAdd"),
    ("/v3/auth/role/get", "Auth", "RoleGet"),
    ("/v3/auth/role/list", "Auth", "RoleList"),
    ("/v3/auth/role/delete", "Auth", "RoleDelete"),
    ("/v3/auth/role/grant", "Auth", "RoleGrantPermission"),
    ("/v3/auth/role/revoke", "Auth", "RoleRevokePermission"),
)

# etcd 3.5's v3lockpb/v3lock.proto and v3electionpb/v3election.proto (server/etcdserver/api/v3lock, v3election).
_RECIPE_PATHS: tuple[tuple[Any, str, str, str], ...] = (
    (v3lock_pb2, "/v3/lock/lock", "Lock", "Lock"),
    (v3lock_pb2, "/v3/lock/unlock", "Lock", "Unlock"),
    (v3election_pb2, "/v3/election/campaign", "Election", "Campaign"),
    (v3election_pb2, "/v3/election/proclaim", "Election", "Proclaim"),
    (v3election_pb2, "/v3/election/leader", "Election", "Leader"),
    (v3election_pb2, "/v3/election/observe", "Election", "Observe"),
    (v3election_pb2, "/v3/election/resign", "Election", "Resign"),
)


def _request_class(module: Any, m: MethodDescriptor) -> type[Message]:
    cls = getattr(module, m.input_type.name)
    assert cls.DESCRIPTOR is m.input_type
    return cls  # type: ignore[no-any-return]


def _build_routes() -> dict[str, Route]:
    out: dict[str, Route] = {}
    for module, path, service, method in ((epb, *row) for row in _ETCD_PATHS):
        out[path] = _route(module, service, method)
    for module, path, service, method in _RECIPE_PATHS:
        out[path] = _route(module, service, method)
    return out


def _route(module: Any, service: str, method: str) -> Route:
    m = module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    return Route(
        m.containing_service.full_name,
        method,
        _request_class(module, m),
        client_streaming=m.client_streaming,
        server_streaming=m.server_streaming,
    )


ROUTES: Mapping[str, Route] = _build_routes()


def route_path(path: str) -> str:
    """The path etcd routes: ``/v3beta/...`` is served as ``/v3/...`` (etcd 3.5's accessController)."""
    if path.startswith("/v3beta/"):
        return "/v3/" + path[len("/v3beta/") :]
    return path


# -- JSON -------------------------------------------------------------------------------------------


class DecodeError(ValueError):
    """A request body that is not the request's JSON."""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def encode_message(message: Message) -> bytes:
    """A response as etcd's gateway writes it (JSONPb{OrigName: true})."""
    return _dumps(message_dict(message))


def decode_value(value: Any, request_type: type[Message]) -> Message:
    """One decoded JSON value as a request."""
    out = request_type()
    if value is None:
        return out  # Go's decoder leaves the message empty on `null`
    if not isinstance(value, dict):
        raise DecodeError(f"json: cannot unmarshal {type(value).__name__} into Go value of type {request_type.DESCRIPTOR.full_name}")
    try:
        json_format.ParseDict(value, out, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise DecodeError(str(exc)) from None
    return out


def decode_request(body: bytes, request_type: type[Message]) -> Message:
    """A unary request body: its first JSON value (empty: the empty request)."""
    stream = JsonValueStream()
    values = stream.feed(body)
    if not values:
        stream.close()  # raises on a partial value
        return request_type()
    return decode_value(values[0], request_type)


class JsonValueStream:
    """JSON values one after another in a byte stream (Go's json.Decoder
    over a request body): feed bytes as they arrive, take whole values."""

    def __init__(self) -> None:
        self._buf = ""
        self._pending = b""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[Any]:
        raw = self._pending + data
        try:
            text = raw.decode()
            self._pending = b""
        except UnicodeDecodeError as exc:
            if exc.start < len(raw) - 3:
                raise DecodeError(f"invalid UTF-8 in the request body: {exc}") from None
            text, self._pending = raw[: exc.start].decode(), raw[exc.start :]  # a character cut at the end
        self._buf += text
        out: list[Any] = []
        while True:
            s = self._buf.lstrip()
            if not s:
                self._buf = ""
                return out
            try:
                value, end = self._decoder.raw_decode(s)
            except json.JSONDecodeError as exc:
                if _incomplete(s, exc):
                    self._buf = s
                    return out
                raise DecodeError(str(exc)) from None
            if isinstance(value, (int, float)) and end == len(s):
                self._buf = s  # a number may go on in the next bytes
                return out
            out.append(value)
            self._buf = s[end:]

    def close(self) -> list[Any]:
        """The end of the body: the last value, if a number was waiting; raises on a partial value."""
        s = self._buf.strip()
        self._buf = ""
        if self._pending:
            raise DecodeError("unexpected EOF")
        if not s:
            return []
        try:
            value, end = self._decoder.raw_decode(s)
        except json.JSONDecodeError:
            raise DecodeError("unexpected EOF") from None
        if end != len(s):
            raise DecodeError("unexpected EOF")
        return [value]


_NUMBER_TAIL = re.compile(r"[-+.0-9eE]{1,6}")
_ESCAPE_TAIL = re.compile(r"u[0-9a-fA-F]{0,4}")  # json points past the backslash


def _incomplete(s: str, exc: json.JSONDecodeError) -> bool:
    """A decode error only because the value has not all arrived: the text
    ends inside a string, or inside the token the error points at (a number,
    a literal, an escape cut short)."""
    if exc.pos >= len(s) or exc.msg.startswith("Unterminated string"):
        return True
    tail = s[exc.pos :]
    if any(lit.startswith(tail) for lit in ("true", "false", "null")):
        return True
    return bool(_NUMBER_TAIL.fullmatch(tail) or _ESCAPE_TAIL.fullmatch(tail))


# -- answers ----------------------------------------------------------------------------------------


def error_body(code: int, message: str) -> bytes:
    """A unary call's error (grpc-gateway v1.16 errorBody: error, message, code; details left out when empty)."""
    return _dumps({"error": message, "message": message, "code": code})


def stream_result(message: Message) -> bytes:
    """One streamed response and its delimiter."""
    return b'{"result":' + encode_message(message) + b"}\n"


def stream_error(code: int, message: str) -> bytes:
    """The chunk that ends a stream with an error (grpc-gateway v1's StreamError; no delimiter)."""
    http = http_status(code)
    body = {"grpc_code": code, "http_code": http, "message": message, "http_status": HTTP_STATUS_TEXT.get(http, "")}
    if not message:
        del body["message"]  # EmitDefaults: false
    return _dumps({"error": body})


def version_body(server_version: str) -> bytes:
    """GET /version: the server's version and the cluster's (major.minor.0, as etcd decides it)."""
    major, minor, *_ = (server_version.split(".") + ["0", "0"])[:3]
    return _dumps({"etcdserver": server_version, "etcdcluster": f"{major}.{minor}.0"})


ALARM_REASONS: dict[int, str] = {epb.NOSPACE: "ALARM NOSPACE", epb.CORRUPT: "ALARM CORRUPT"}


def health(alarms: Iterable[int], excluded: Iterable[str] = (), range_error: str | None = None) -> tuple[bool, bytes]:
    """GET /health as etcd 3.5 decides it (etcdhttp/health.go): an active
    alarm not excluded (``?exclude=NOSPACE``) makes it unhealthy, else a
    failed Range does (``RANGE ERROR:<error>``). (healthy, body)."""
    skip = set(excluded)
    for alarm in alarms:
        if alarm == epb.NONE or epb.AlarmType.Name(alarm) in skip:
            continue
        return False, _dumps({"health": "false", "reason": ALARM_REASONS.get(alarm, "ALARM UNKNOWN")})
    if range_error is not None:
        return False, _dumps({"health": "false", "reason": f"RANGE ERROR:{range_error}"})
    return True, _dumps({"health": "true", "reason": ""})


def metadata_of(headers: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """gRPC metadata from HTTP headers as grpc-gateway v1 passes them:
    ``Grpc-Metadata-<key>`` as ``<key>``, and the permanent ``Authorization``."""
    for name, value in headers:
        low = name.lower()
        if low.startswith("grpc-metadata-"):
            yield low[len("grpc-metadata-") :], value
        elif low == "authorization":
            yield low, value


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def grpc_timeout_s(value: str) -> float:
    """A ``Grpc-Timeout`` header (``10S``, ``500m``) in seconds."""
    if len(value) < 2 or value[-1] not in _TIMEOUT_UNITS or not value[:-1].isdigit():
        raise DecodeError(f"invalid grpc-timeout: {value}")
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]
