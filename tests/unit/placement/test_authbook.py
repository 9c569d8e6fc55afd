"""placement/authbook.py: etcd's auth store rules (server/auth/store.go), applied
through PlacementState and its codec as placement's Raft log applies them."""

from __future__ import annotations

from placement.authbook import READ, READWRITE, AuthBook, Perm
from placement.codec import decode_command, encode_command
from placement.commands import AuthChange, AuthOp, RejectCode, Rejected
from placement.state import PlacementState


def apply(st: PlacementState, op: AuthOp, **kw: object) -> object:
    cmd = AuthChange(op, **kw)  # type: ignore[arg-type]
    assert decode_command(encode_command(cmd)) == cmd  # every command goes through the log's codec
    return st.apply(cmd).result


def code(out: object) -> RejectCode | None:
    return out.code if isinstance(out, Rejected) else None


def enabled_state() -> PlacementState:
    st = PlacementState()
    apply(st, AuthOp.USER_ADD, name="root", password=b"$2b$hash")
    apply(st, AuthOp.USER_GRANT_ROLE, name="root", role="root")
    assert apply(st, AuthOp.ENABLE) == st.auth.revision
    return st


def test_enable_needs_root_user_with_root_role() -> None:
    st = PlacementState()
    assert st.auth.revision == 1 and not st.auth.enabled
    assert code(apply(st, AuthOp.ENABLE)) == RejectCode.ROOT_USER_NOT_EXIST
    apply(st, AuthOp.USER_ADD, name="root", password=b"h")
    assert code(apply(st, AuthOp.ENABLE)) == RejectCode.ROOT_ROLE_NOT_EXIST
    apply(st, AuthOp.USER_GRANT_ROLE, name="root", role="root")  # the root role needs no RoleAdd
    rev = st.auth.revision
    apply(st, AuthOp.ENABLE)
    assert st.auth.enabled and st.auth.revision == rev  # etcd keeps the revision on enable
    assert code(apply(st, AuthOp.DISABLE)) == RejectCode.USER_EMPTY  # only root may disable
    assert apply(st, AuthOp.DISABLE, actor="root") == rev + 1 and not st.auth.enabled


def test_admin_writes_need_the_root_role_once_enabled() -> None:
    st = enabled_state()
    assert code(apply(st, AuthOp.ROLE_ADD, name="r")) == RejectCode.USER_EMPTY
    assert code(apply(st, AuthOp.ROLE_ADD, actor="ghost", name="r")) == RejectCode.USER_NOT_FOUND
    apply(st, AuthOp.USER_ADD, actor="root", name="u", password=b"h")
    assert code(apply(st, AuthOp.ROLE_ADD, actor="u", name="r")) == RejectCode.PERMISSION_DENIED
    assert apply(st, AuthOp.ROLE_ADD, actor="root", name="r") == st.auth.revision
    assert code(apply(st, AuthOp.USER_DELETE, actor="root", name="root")) == RejectCode.INVALID_AUTH_MGMT
    assert code(apply(st, AuthOp.USER_REVOKE_ROLE, actor="root", name="root", role="root")) == RejectCode.INVALID_AUTH_MGMT
    assert code(apply(st, AuthOp.ROLE_DELETE, actor="root", name="root")) == RejectCode.INVALID_AUTH_MGMT


def test_users_roles_and_permissions() -> None:
    st = PlacementState()
    assert code(apply(st, AuthOp.USER_ADD, name="")) == RejectCode.USER_EMPTY
    apply(st, AuthOp.USER_ADD, name="u", password=b"h")
    assert code(apply(st, AuthOp.USER_ADD, name="u", password=b"h")) == RejectCode.USER_ALREADY_EXIST
    assert code(apply(st, AuthOp.USER_GRANT_ROLE, name="u", role="r")) == RejectCode.ROLE_NOT_FOUND
    assert code(apply(st, AuthOp.ROLE_ADD, name="")) == RejectCode.ROLE_EMPTY
    apply(st, AuthOp.ROLE_ADD, name="r")
    assert code(apply(st, AuthOp.ROLE_ADD, name="r")) == RejectCode.ROLE_ALREADY_EXIST
    rev = st.auth.revision
    apply(st, AuthOp.USER_GRANT_ROLE, name="u", role="r")
    assert apply(st, AuthOp.USER_GRANT_ROLE, name="u", role="r") == rev + 1  # a second grant changes nothing
    apply(st, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=READ, key=b"b", range_end=b"c")
    apply(st, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=READ, key=b"a")
    apply(st, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=READWRITE, key=b"b", range_end=b"c")  # updates the type
    assert st.auth.roles["r"].perms == (Perm(READ, b"a"), Perm(READWRITE, b"b", b"c"))
    assert code(apply(st, AuthOp.ROLE_REVOKE_PERMISSION, name="r", key=b"b")) == RejectCode.PERMISSION_NOT_GRANTED
    apply(st, AuthOp.ROLE_REVOKE_PERMISSION, name="r", key=b"b", range_end=b"c")
    assert st.auth.roles["r"].perms == (Perm(READ, b"a"),)
    assert code(apply(st, AuthOp.USER_REVOKE_ROLE, name="u", role="x")) == RejectCode.ROLE_NOT_GRANTED
    apply(st, AuthOp.ROLE_DELETE, name="r")  # takes the role from its users
    assert st.auth.users["u"].roles == ()
    assert code(apply(st, AuthOp.USER_CHANGE_PASSWORD, name="x", password=b"h")) == RejectCode.USER_NOT_FOUND


def test_queries_allow_oneself_and_held_roles() -> None:
    st = enabled_state()
    apply(st, AuthOp.ROLE_ADD, actor="root", name="r")
    apply(st, AuthOp.USER_ADD, actor="root", name="u", password=b"h")
    apply(st, AuthOp.USER_GRANT_ROLE, actor="root", name="u", role="r")
    book = st.auth
    assert book.user_get("u", "u") == ("r",)
    assert code(book.user_get("u", "root")) == RejectCode.PERMISSION_DENIED
    assert book.role_get("u", "r") == ()
    assert code(book.role_get("u", "root")) == RejectCode.PERMISSION_DENIED
    assert book.role_get("root", "root") is not None
    assert code(book.user_list("u")) == RejectCode.PERMISSION_DENIED
    assert book.user_list("root") == ("root", "u")


def test_tokens_issue_expire_and_drop() -> None:
    st = enabled_state()
    apply(st, AuthOp.USER_ADD, actor="root", name="u", password=b"h")
    apply(st, AuthOp.USER_ADD, actor="root", name="np", no_password=True)
    rev = st.auth.revision
    assert code(apply(st, AuthOp.ISSUE_TOKEN, name="np", token="t0", checked_revision=rev)) == RejectCode.AUTH_FAILED
    assert code(apply(st, AuthOp.ISSUE_TOKEN, name="u", token="t0", checked_revision=rev - 1)) == RejectCode.AUTH_OLD_REVISION
    assert apply(st, AuthOp.ISSUE_TOKEN, name="u", token="t1", expires_ms=1000, now_ms=0, checked_revision=rev) == "t1"
    assert apply(st, AuthOp.ISSUE_TOKEN, name="root", token="t2", expires_ms=5000, now_ms=2000, checked_revision=rev) == "t2"
    assert set(st.auth.tokens) == {"t2"}  # t1 expired at 1000
    version = st.auth.version
    apply(st, AuthOp.ISSUE_TOKEN, name="u", token="t3", expires_ms=9000, now_ms=2000, checked_revision=rev)
    assert st.auth.version == version and st.auth.token_seq == 3  # tokens travel by sequence number
    apply(st, AuthOp.USER_CHANGE_PASSWORD, actor="root", name="u", password=b"h2")
    assert set(st.auth.tokens) == {"t2"}
    apply(st, AuthOp.DISABLE, actor="root")
    assert st.auth.tokens == {}
    assert code(apply(st, AuthOp.ISSUE_TOKEN, name="u", token="t4", checked_revision=st.auth.revision)) == RejectCode.AUTH_NOT_ENABLED


def test_record_and_snapshot_round_trip() -> None:
    st = enabled_state()
    apply(st, AuthOp.ROLE_ADD, actor="root", name="r")
    apply(st, AuthOp.ROLE_GRANT_PERMISSION, actor="root", name="r", perm_type=READ, key=b"\x00\xff", range_end=b"\x00")
    apply(st, AuthOp.ISSUE_TOKEN, name="root", token="t", expires_ms=10, checked_revision=st.auth.revision)
    assert AuthBook.decode(st.auth.encode()) == st.auth
    again = PlacementState.from_snapshot(st.snapshot())
    assert again.auth == st.auth
