"""router/authperm.py: etcd's permission rules (server/auth/range_perm_cache.go,
server/etcdserver/apply/auth.go), checked against a brute-force reading of
what the permissions say."""

from __future__ import annotations

import itertools

import pytest

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router import authperm as ap
from router.authperm import READ, READWRITE, WRITE, AuthView, Intervals, Need, Perm, UserInfo


def view(**roles: tuple[Perm, ...]) -> AuthView:
    users = {
        "root": UserInfo("root", b"h", ("root",)),
        "alice": UserInfo("alice", b"h", tuple(sorted(roles))),
        "nobody": UserInfo("nobody", b"h", ()),
    }
    return AuthView(True, 5, users, dict(roles))


def test_auth_off_allows_everything() -> None:
    v = AuthView(False, 1)
    assert v.refusal(None, [Need(WRITE, b"k")]) is None
    assert v.admin_refusal(None) is None


def test_no_user_unknown_user_root() -> None:
    v = view(r=(Perm(READ, b"a"),))
    assert v.refusal(None, [Need(READ, b"a")]) == "user_empty"
    assert v.refusal("ghost", [Need(READ, b"a")]) == "permission_denied"
    assert v.refusal("root", [Need(WRITE, b"\x00", b"\x00")]) is None
    assert v.admin_refusal(None) == "user_empty"
    assert v.admin_refusal("ghost") == "user_not_found"
    assert v.admin_refusal("alice") == "permission_denied"
    assert v.admin_refusal("root") is None


def test_key_range_and_prefix_permissions() -> None:
    v = view(
        key=(Perm(READ, b"k1"),),
        rng=(Perm(WRITE, b"b", b"d"),),
        pfx=(Perm(READWRITE, b"p/", ap.prefix_end(b"p/")),),
        from_=(Perm(READ, b"z", b"\x00"),),
    )
    ok = lambda *needs: v.refusal("alice", needs) is None  # noqa: E731
    assert ok(Need(READ, b"k1")) and not ok(Need(READ, b"k10")) and not ok(Need(WRITE, b"k1"))
    assert ok(Need(WRITE, b"b")) and ok(Need(WRITE, b"c\xff")) and not ok(Need(WRITE, b"d"))
    assert ok(Need(WRITE, b"b", b"d")) and not ok(Need(WRITE, b"b", b"e")) and not ok(Need(READ, b"b"))
    assert ok(Need(READ, b"p/", b"p0")) and ok(Need(WRITE, b"p/x")) and not ok(Need(READ, b"p", b"p0"))
    assert ok(Need(READ, b"z")) and ok(Need(READ, b"zz", b"\x00")) and not ok(Need(READ, b"y", b"\x00"))
    assert not ok(Need(READ, b"\x00", b"\x00"))  # everything: only root
    assert v.refusal("nobody", [Need(READ, b"k1")]) == "permission_denied"


def test_adjoining_permissions_cover_a_range_together() -> None:
    """etcd's interval tree Contains: [a, c) and [c, e) together cover [b, d)."""
    v = view(one=(Perm(READ, b"a", b"c"),), two=(Perm(READ, b"c", b"e"),), gap=(Perm(READ, b"f", b"h"),))
    assert v.refusal("alice", [Need(READ, b"b", b"d")]) is None
    assert v.refusal("alice", [Need(READ, b"a", b"e")]) is None
    assert v.refusal("alice", [Need(READ, b"d", b"g")]) == "permission_denied"  # [e, f) is not covered


def test_intervals_match_a_brute_force_reading() -> None:
    """Every range over a small alphabet: covered iff every key in it is in some span."""
    alphabet = [b"", b"a", b"b", b"c", b"d"]
    keys = sorted({x + y for x in alphabet for y in alphabet} - {b""})
    spans = [(b"a", b"b"), (b"b", b"bb"), (b"c", None), (b"ad", b"ad\x00")]
    iv = Intervals(spans)

    def inside(k: bytes) -> bool:
        return any(s <= k and (e is None or k < e) for s, e in spans)

    for start, end in itertools.product(keys, [*keys, None]):
        if end is not None and end <= start:
            continue
        want = all(inside(k) for k in keys if start <= k and (end is None or k < end))
        # keys of any length lie between the sampled ones; the spans' bounds are sampled keys, so this is exact
        if end is None and not inside(keys[-1]):
            want = False
        assert iv.covers(start, end) == want, (start, end)


def test_txn_needs_compares_and_both_branches_nested() -> None:
    inner = epb.TxnRequest(success=[epb.RequestOp(request_delete_range=epb.DeleteRangeRequest(key=b"d", range_end=b"e", prev_kv=True))])
    txn = epb.TxnRequest(
        compare=[epb.Compare(key=b"c1"), epb.Compare(key=b"c2", range_end=b"c3")],
        success=[epb.RequestOp(request_put=epb.PutRequest(key=b"p", prev_kv=True, lease=7))],
        failure=[epb.RequestOp(request_range=epb.RangeRequest(key=b"r")), epb.RequestOp(request_txn=inner)],
    )
    assert ap.needs_of_txn(txn) == [
        Need(READ, b"c1"), Need(READ, b"c2", b"c3"),
        Need(WRITE, b"p"), Need(READ, b"p"),
        Need(READ, b"r"),
        Need(WRITE, b"d", b"e"), Need(READ, b"d", b"e"),
    ]
    assert list(ap.txn_leases(txn)) == [7]
    v = view(rw=(Perm(READWRITE, b"c1"), Perm(READWRITE, b"c2", b"c3"), Perm(READWRITE, b"p"), Perm(READ, b"r")))
    assert v.refusal("alice", ap.needs_of_txn(txn)) == "permission_denied"  # the nested delete in the failure branch
    v2 = view(rw=(Perm(READWRITE, b"c1"), Perm(READWRITE, b"c2", b"c3"), Perm(READWRITE, b"p"), Perm(READ, b"r"), Perm(READWRITE, b"d", b"e")))
    assert v2.refusal("alice", ap.needs_of_txn(txn)) is None


@pytest.mark.parametrize(
    ("req", "needs"),
    [
        (epb.RangeRequest(key=b"a", range_end=b"b"), [Need(READ, b"a", b"b")]),
        (epb.PutRequest(key=b"a"), [Need(WRITE, b"a")]),
        (epb.DeleteRangeRequest(key=b"a", range_end=b"\x00"), [Need(WRITE, b"a", b"\x00")]),
    ],
)
def test_needs_of_requests(req: object, needs: list[Need]) -> None:
    fn = {epb.RangeRequest: ap.needs_of_range, epb.PutRequest: ap.needs_of_put, epb.DeleteRangeRequest: ap.needs_of_delete}[type(req)]
    assert fn(req) == needs


def test_watch_of_empty_key_is_the_smallest_key() -> None:
    assert ap.needs_of_watch(epb.WatchCreateRequest(key=b"", range_end=b"\x00")) == [Need(READ, b"\x00", b"\x00")]
    assert ap.prefix_end(b"a\xff") == b"b" and ap.prefix_end(b"\xff") == b"\x00"
