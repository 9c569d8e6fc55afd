"""router/gateway/codec.py: etcd 3.5's gateway JSON (grpc-gateway v1.16,
JSONPb{OrigName: true}), its routes and its error shapes. The expected
bytes are what etcd 3.5 answers (shapes from grpc-gateway v1.16's
runtime/errors.go and handler.go, etcd's rpc.proto annotations,
etcdhttp/health.go and version.go)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from flotillapb.etcd.v3lockpb import v3lock_pb2
from router.gateway import codec


def test_codec_is_pure() -> None:
    tree = ast.parse(Path(codec.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"asyncio", "grpc", "aiohttp", "time", "random", "threading", "os", "socket"}


def test_every_etcd_35_path_routes_to_its_method() -> None:
    r = codec.ROUTES
    assert (r["/v3/kv/range"].service, r["/v3/kv/range"].method) == ("etcdserverpb.KV", "Range")
    assert r["/v3/kv/range"].request_type is epb.RangeRequest
    assert r["/v3/kv/compaction"].method == "Compact"
    # etcd's additional_bindings: the lease aliases under /v3/kv/
    for alias in ("revoke", "timetolive", "leases"):
        assert r[f"/v3/kv/lease/{alias}"] == r[f"/v3/lease/{alias}"]
    assert r["/v3/maintenance/hash"].method == "Hash"
    assert r["/v3/maintenance/hashkv"].method == "HashKV"
    assert r["/v3/maintenance/transfer-leadership"].method == "MoveLeader"
    assert r["/v3/auth/user/changepw"].method == "UserChangePassword"
    assert r["/v3/lock/lock"].request_type is v3lock_pb2.LockRequest
    assert r["/v3/watch"].client_streaming and r["/v3/watch"].server_streaming
    assert r["/v3/lease/keepalive"].client_streaming
    assert r["/v3/maintenance/snapshot"].server_streaming and not r["/v3/maintenance/snapshot"].client_streaming
    assert r["/v3/election/observe"].server_streaming
    assert not r["/v3/kv/put"].streaming
    assert len(r) == 51


def test_v3beta_is_served_as_v3() -> None:
    assert codec.route_path("/v3beta/kv/put") == "/v3/kv/put"
    assert codec.route_path("/v3/kv/put") == "/v3/kv/put"
    assert codec.route_path("/v3alpha/kv/put") == "/v3alpha/kv/put"  # gone since etcd 3.4


def test_response_json_is_orig_names_base64_bytes_int64_strings_no_defaults() -> None:
    r = epb.RangeResponse(count=1)
    r.header.cluster_id = 14841639068965178418
    r.header.member_id = 10276657743932975437
    r.header.revision = 2
    r.header.raft_term = 2
    r.kvs.add(key=b"foo", value=b"bar", create_revision=2, mod_revision=2, version=1)
    # etcd 3.5's answer to curl -X POST -d '{"key": "Zm9v"}' /v3/kv/range, field for field
    assert json.loads(codec.encode_message(r)) == {
        "header": {"cluster_id": "14841639068965178418", "member_id": "10276657743932975437", "revision": "2", "raft_term": "2"},
        "kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "2", "version": "1", "value": "YmFy"}],
        "count": "1",
    }
    assert b" " not in codec.encode_message(r)  # compact


def test_enums_by_name_and_the_zero_enum_left_out() -> None:
    w = epb.WatchResponse(watch_id=1)
    w.events.add(type=mvccpb.Event.PUT).kv.key = b"a"
    w.events.add(type=mvccpb.Event.DELETE).kv.key = b"b"
    out = json.loads(codec.encode_message(w))
    assert out["events"][0] == {"kv": {"key": "YQ=="}}  # PUT is 0: no "type", as etcd's gateway
    assert out["events"][1]["type"] == "DELETE"
    assert out["watch_id"] == "1"
    assert "created" not in out and "header" not in out


def test_lease_fields_keep_their_proto_names() -> None:
    out = json.loads(codec.encode_message(epb.LeaseTimeToLiveResponse(ID=7, TTL=444056, grantedTTL=444444)))
    assert out == {"ID": "7", "TTL": "444056", "grantedTTL": "444444"}


def test_requests_decode_orig_or_camel_names_strings_or_numbers_and_ignore_unknown_fields() -> None:
    got = codec.decode_request(
        b'{"key": "Zm9v", "rangeEnd": "Zm9w", "limit": "10", "sort_order": "DESCEND", "revision": 3, "no_such_field": 1}',
        epb.RangeRequest,
    )
    assert got == epb.RangeRequest(key=b"foo", range_end=b"fop", limit=10, sort_order=epb.RangeRequest.DESCEND, revision=3)
    assert codec.decode_request(b'{"ID": "1234"}', epb.LeaseRevokeRequest) == epb.LeaseRevokeRequest(ID=1234)
    assert codec.decode_request(b"", epb.StatusRequest) == epb.StatusRequest()
    assert codec.decode_request(b"  {}  ", epb.MemberListRequest) == epb.MemberListRequest()
    txn = codec.decode_request(
        b'{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmFy"}],'
        b'"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}',
        epb.TxnRequest,
    )
    assert txn.compare[0].target == epb.Compare.VALUE and txn.compare[0].value == b"bar"
    assert txn.success[0].request_put.value == b"baz"
    assert txn.failure[0].WhichOneof("request") == "request_range"


@pytest.mark.parametrize(
    "body",
    [b'{"key": 5}', b'{"key": "Zm9v"', b"[1, 2]", b'{"limit": "ten"}', b"{,}"],
)
def test_bodies_that_are_not_the_request_raise_decode_error(body: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode_request(body, epb.RangeRequest)


def test_a_streamed_body_is_json_values_one_after_another_in_any_cut() -> None:
    first = {"create_request": {"key": "Zm9v", "start_revision": 12, "prev_kv": True, "x": None, "s": "a\\u0041"}}
    doc = json.dumps(first).encode() + b"\n" + b'{"cancel_request":{"watch_id":"1"}}{"n":-1.5e+3}'
    want = [json.loads(json.dumps(first)), {"cancel_request": {"watch_id": "1"}}, {"n": -1500.0}]
    for cut in range(len(doc) + 1):
        s = codec.JsonValueStream()
        assert s.feed(doc[:cut]) + s.feed(doc[cut:]) + s.close() == want, cut
    one_by_one = codec.JsonValueStream()
    got = [v for i in range(len(doc)) for v in one_by_one.feed(doc[i : i + 1])] + one_by_one.close()
    assert got == want


def test_a_streamed_body_cut_inside_a_utf8_character_waits_for_the_rest() -> None:
    doc = '{"name": "\u00e9t\u00e9"}'.encode()
    s = codec.JsonValueStream()
    assert s.feed(doc[:11]) == []
    assert s.feed(doc[11:]) == [{"name": "\u00e9t\u00e9"}]


def test_a_streamed_body_that_ends_inside_a_value_or_goes_wrong_is_refused() -> None:
    s = codec.JsonValueStream()
    assert s.feed(b'{"create_request": {"key": "Zm9v"') == []
    with pytest.raises(codec.DecodeError):
        s.close()
    with pytest.raises(codec.DecodeError):
        codec.JsonValueStream().feed(b'{"a": 1} ]')


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (codec.OK, 200),
        (codec.CANCELLED, 408),
        (codec.UNKNOWN, 500),
        (codec.INVALID_ARGUMENT, 400),
        (codec.DEADLINE_EXCEEDED, 504),
        (codec.NOT_FOUND, 404),
        (codec.ALREADY_EXISTS, 409),
        (codec.PERMISSION_DENIED, 403),
        (codec.RESOURCE_EXHAUSTED, 429),
        (codec.FAILED_PRECONDITION, 400),
        (codec.ABORTED, 409),
        (codec.OUT_OF_RANGE, 400),
        (codec.UNIMPLEMENTED, 501),
        (codec.INTERNAL, 500),
        (codec.UNAVAILABLE, 503),
        (codec.DATA_LOSS, 500),
        (codec.UNAUTHENTICATED, 401),
        (99, 500),
    ],
)
def test_grpc_codes_map_to_grpc_gateway_v1_http_statuses(code: int, http: int) -> None:
    assert codec.http_status(code) == http


def test_a_unary_error_is_grpc_gateway_v1_error_body() -> None:
    # etcd 3.4/3.5 (grpc-gateway v1): error, message, code, in that order; no details when there are none
    assert codec.error_body(5, "etcdserver: requested lease not found") == (
        b'{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}'
    )


def test_a_stream_result_is_one_object_and_a_newline_and_an_error_ends_it() -> None:
    w = epb.WatchResponse(created=True)
    w.header.revision = 4
    assert codec.stream_result(w) == b'{"result":{"header":{"revision":"4"},"created":true}}\n'
    assert json.loads(codec.stream_error(14, "etcdserver: no leader")) == {
        "error": {"grpc_code": 14, "http_code": 503, "message": "etcdserver: no leader", "http_status": "Service Unavailable"}
    }
    assert not codec.stream_error(14, "x").endswith(b"\n")


def test_version_reports_the_server_and_its_cluster_version() -> None:
    assert codec.version_body("3.5.13") == b'{"etcdserver":"3.5.13","etcdcluster":"3.5.0"}'


def test_health_as_etcd_35_decides_it() -> None:
    assert codec.health([], (), None) == (True, b'{"health":"true","reason":""}')
    assert codec.health([epb.NOSPACE], (), None) == (False, b'{"health":"false","reason":"ALARM NOSPACE"}')
    assert codec.health([epb.CORRUPT], (), "x") == (False, b'{"health":"false","reason":"ALARM CORRUPT"}')
    assert codec.health([epb.NOSPACE], ["NOSPACE"], None)[0] is True  # ?exclude=NOSPACE
    assert codec.health([], (), "etcdserver: request timed out") == (
        False,
        b'{"health":"false","reason":"RANGE ERROR:etcdserver: request timed out"}',
    )


def test_metadata_comes_from_grpc_metadata_headers_and_authorization() -> None:
    headers = [("Grpc-Metadata-Max-Staleness-Ms", "100"), ("Authorization", "tok"), ("Content-Type", "application/json")]
    assert list(codec.metadata_of(headers)) == [("max-staleness-ms", "100"), ("authorization", "tok")]


def test_grpc_timeout_header() -> None:
    assert codec.grpc_timeout_s("10S") == 10.0
    assert codec.grpc_timeout_s("500m") == 0.5
    with pytest.raises(codec.DecodeError, match="invalid grpc-timeout: 10X"):
        codec.grpc_timeout_s("10X")
