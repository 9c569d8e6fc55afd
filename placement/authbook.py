"""etcd's auth store as placement replicates it (PURE): users, roles, the
enabled flag, the auth revision, and the simple tokens Authenticate issued.

Every router checks requests against this state (router/authstore.py polls
it), so it is the same at every router and survives a placement leader
change like the map does. The rules are etcd's (server/auth/store.go):

- the root user must exist and hold the root role before auth can be
  enabled; the root role needs no RoleAdd (etcd grants it by name) and
  allows everything; with auth on, root cannot be deleted, lose the root
  role, and the root role cannot be deleted (invalid auth management);
- writes and the user/role lists need the root role once auth is on
  (IsAdminPermitted, checked at apply against the AuthChange's actor);
  UserGet is also allowed for oneself, RoleGet for a role one holds;
- the auth revision starts at 1 and grows with every change of users,
  roles and AuthDisable (not AuthEnable, not Authenticate), as etcd's;
- a user added with no_password can only be authenticated by a TLS common
  name; changing a password or deleting a user drops that user's tokens,
  AuthDisable drops every token.

Simple tokens are logged here, as etcd logs Authenticate through Raft, so a
token issued at one router is valid at every router. Each carries its
expiry (wall-clock milliseconds, chosen by the router that issued it); a
later ISSUE_TOKEN prunes the expired ones. ``version`` grows with every
change other than a new token: a router that knows the version needs only
the tokens issued since (``token_seq``).

The record (one JSON object after a version byte) is what
placement/machine.py keeps in RocksDB and in snapshots.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

from placement.commands import Applied, AuthChange, AuthOp, RejectCode, Rejected
from raft.core.errors import CodecError

ROOT = "root"
READ, WRITE, READWRITE = 0, 1, 2
"""authpb.Permission.Type"""
RECORD_VERSION = 1

ADMIN_OPS = frozenset(op for op in AuthOp if op != AuthOp.ISSUE_TOKEN)
"""Writes that need the root role once auth is on (etcd's needAdminPermission)."""


@dataclass(frozen=True, slots=True)
class Perm:
    perm_type: int
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: bytes
    """The salted slow hash (bcrypt) the router made; empty for a no_password user."""
    roles: tuple[str, ...] = ()
    """Sorted, as etcd keeps them."""
    no_password: bool = False


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    perms: tuple[Perm, ...] = ()
    """Sorted by key, as etcd keeps them."""


@dataclass(frozen=True, slots=True)
class Token:
    token: str
    user: str
    expires_ms: int
    seq: int


def _reject(code: RejectCode, message: str) -> Applied:
    return Applied(Rejected(code, message))


@dataclass(slots=True)
class AuthBook:
    enabled: bool = False
    revision: int = 1
    """etcd's auth revision (AuthStatus.authRevision, a JWT's revision claim)."""
    version: int = 0
    """Grows with every change but a new token: what routers compare."""
    users: dict[str, User] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    token_seq: int = 0

    # -- queries ----------------------------------------------------------------------
    def has_role(self, user: str, role: str) -> bool:
        u = self.users.get(user)
        return u is not None and role in u.roles

    def admin_refusal(self, actor: str) -> Rejected | None:
        """etcd's IsAdminPermitted: None when auth is off or the actor holds the root role."""
        if not self.enabled:
            return None
        if not actor:
            return Rejected(RejectCode.USER_EMPTY, "no user given")
        if actor not in self.users:
            return Rejected(RejectCode.USER_NOT_FOUND, f"user {actor!r} not found")
        if not self.has_role(actor, ROOT):
            return Rejected(RejectCode.PERMISSION_DENIED, f"user {actor!r} does not hold the root role")
        return None

    def user_get(self, actor: str, name: str) -> tuple[str, ...] | Rejected:
        """The user's roles (an admin, or the user itself)."""
        refusal = self.admin_refusal(actor)
        if refusal is not None and name != actor:
            return refusal
        u = self.users.get(name)
        if u is None:
            return Rejected(RejectCode.USER_NOT_FOUND, f"user {name!r} not found")
        return u.roles

    def role_get(self, actor: str, name: str) -> tuple[Perm, ...] | Rejected:
        """The role's permissions (an admin, or a holder of the role); the root role: everything."""
        refusal = self.admin_refusal(actor)
        if refusal is not None and not self.has_role(actor, name):
            return refusal
        r = self.roles.get(name)
        if r is None:
            return Rejected(RejectCode.ROLE_NOT_FOUND, f"role {name!r} not found")
        if name == ROOT:
            return (Perm(READWRITE, b"", b"\x00"),)
        return r.perms

    def user_list(self, actor: str) -> tuple[str, ...] | Rejected:
        return self.admin_refusal(actor) or tuple(sorted(self.users))

    def role_list(self, actor: str) -> tuple[str, ...] | Rejected:
        return self.admin_refusal(actor) or tuple(sorted(self.roles))

    def live_tokens(self, now_ms: int) -> list[Token]:
        return sorted((t for t in self.tokens.values() if t.expires_ms > now_ms), key=lambda t: t.seq)

    # -- apply --------------------------------------------------------------------------
    def apply(self, cmd: AuthChange) -> Applied:
        """Apply one auth write. Results: the auth revision after it (int),
        the token (ISSUE_TOKEN), or a Rejected with etcd's reason."""
        if cmd.op in ADMIN_OPS:
            refusal = self.admin_refusal(cmd.actor)
            if refusal is not None:
                return Applied(refusal)
        handler = _HANDLERS.get(cmd.op)
        if handler is None:
            raise TypeError(f"not an auth op: {cmd.op!r}")
        return handler(self, cmd)

    def _changed(self, *, revision: bool = True) -> Applied:
        if revision:
            self.revision += 1
        self.version += 1
        return Applied(self.revision, auth_changed=True)

    def _drop_tokens(self, user: str | None = None) -> None:
        self.tokens = {k: t for k, t in self.tokens.items() if user is not None and t.user != user}

    def _enable(self, cmd: AuthChange) -> Applied:
        if self.enabled:
            return Applied(self.revision)
        root = self.users.get(ROOT)
        if root is None:
            return _reject(RejectCode.ROOT_USER_NOT_EXIST, "add the user root first")
        if ROOT not in root.roles:
            return _reject(RejectCode.ROOT_ROLE_NOT_EXIST, "grant the role root to the user root first")
        self.enabled = True
        return self._changed(revision=False)  # etcd keeps the revision on enable

    def _disable(self, cmd: AuthChange) -> Applied:
        if not self.enabled:
            return Applied(self.revision)
        self.enabled = False
        self._drop_tokens()
        return self._changed()

    def _user_add(self, cmd: AuthChange) -> Applied:
        if not cmd.name:
            return _reject(RejectCode.USER_EMPTY, "user name is empty")
        if cmd.name in self.users:
            return _reject(RejectCode.USER_ALREADY_EXIST, f"user {cmd.name!r} exists")
        self.users[cmd.name] = User(cmd.name, b"" if cmd.no_password else cmd.password, (), cmd.no_password)
        return self._changed()

    def _user_delete(self, cmd: AuthChange) -> Applied:
        if self.enabled and cmd.name == ROOT:
            return _reject(RejectCode.INVALID_AUTH_MGMT, "cannot delete the root user while auth is enabled")
        if self.users.pop(cmd.name, None) is None:
            return _reject(RejectCode.USER_NOT_FOUND, f"user {cmd.name!r} not found")
        self._drop_tokens(cmd.name)
        return self._changed()

    def _user_change_password(self, cmd: AuthChange) -> Applied:
        u = self.users.get(cmd.name)
        if u is None:
            return _reject(RejectCode.USER_NOT_FOUND, f"user {cmd.name!r} not found")
        self.users[cmd.name] = User(u.name, b"" if u.no_password else cmd.password, u.roles, u.no_password)
        self._drop_tokens(cmd.name)
        return self._changed()

    def _user_grant_role(self, cmd: AuthChange) -> Applied:
        u = self.users.get(cmd.name)
        if u is None:
            return _reject(RejectCode.USER_NOT_FOUND, f"user {cmd.name!r} not found")
        if cmd.role != ROOT and cmd.role not in self.roles:
            return _reject(RejectCode.ROLE_NOT_FOUND, f"role {cmd.role!r} not found")
        if cmd.role in u.roles:
            return Applied(self.revision)  # etcd ignores a duplicate grant
        self.users[cmd.name] = User(u.name, u.password, tuple(sorted((*u.roles, cmd.role))), u.no_password)
        return self._changed()

    def _user_revoke_role(self, cmd: AuthChange) -> Applied:
        if self.enabled and cmd.name == ROOT and cmd.role == ROOT:
            return _reject(RejectCode.INVALID_AUTH_MGMT, "the root user cannot lose the root role while auth is enabled")
        u = self.users.get(cmd.name)
        if u is None:
            return _reject(RejectCode.USER_NOT_FOUND, f"user {cmd.name!r} not found")
        if cmd.role not in u.roles:
            return _reject(RejectCode.ROLE_NOT_GRANTED, f"user {cmd.name!r} does not hold role {cmd.role!r}")
        self.users[cmd.name] = User(u.name, u.password, tuple(r for r in u.roles if r != cmd.role), u.no_password)
        return self._changed()

    def _role_add(self, cmd: AuthChange) -> Applied:
        if not cmd.name:
            return _reject(RejectCode.ROLE_EMPTY, "role name is empty")
        if cmd.name in self.roles:
            return _reject(RejectCode.ROLE_ALREADY_EXIST, f"role {cmd.name!r} exists")
        self.roles[cmd.name] = Role(cmd.name)
        return self._changed()

    def _role_delete(self, cmd: AuthChange) -> Applied:
        if self.enabled and cmd.name == ROOT:
            return _reject(RejectCode.INVALID_AUTH_MGMT, "cannot delete the root role while auth is enabled")
        if self.roles.pop(cmd.name, None) is None:
            return _reject(RejectCode.ROLE_NOT_FOUND, f"role {cmd.name!r} not found")
        for name, u in list(self.users.items()):
            if cmd.name in u.roles:
                self.users[name] = User(u.name, u.password, tuple(r for r in u.roles if r != cmd.name), u.no_password)
        return self._changed()

    def _role_grant_permission(self, cmd: AuthChange) -> Applied:
        r = self.roles.get(cmd.name)
        if r is None:
            return _reject(RejectCode.ROLE_NOT_FOUND, f"role {cmd.name!r} not found")
        new = Perm(cmd.perm_type, cmd.key, cmd.range_end)
        perms = [p for p in r.perms if (p.key, p.range_end) != (cmd.key, cmd.range_end)]
        keys = [p.key for p in perms]
        perms.insert(bisect.bisect_right(keys, cmd.key), new)  # an existing (key, range_end) gets the new type
        self.roles[cmd.name] = Role(r.name, tuple(perms))
        return self._changed()

    def _role_revoke_permission(self, cmd: AuthChange) -> Applied:
        r = self.roles.get(cmd.name)
        if r is None:
            return _reject(RejectCode.ROLE_NOT_FOUND, f"role {cmd.name!r} not found")
        kept = tuple(p for p in r.perms if (p.key, p.range_end) != (cmd.key, cmd.range_end))
        if len(kept) == len(r.perms):
            return _reject(RejectCode.PERMISSION_NOT_GRANTED, f"role {cmd.name!r} has no permission on that key or range")
        self.roles[cmd.name] = Role(r.name, kept)
        return self._changed()

    def _issue_token(self, cmd: AuthChange) -> Applied:
        if not self.enabled:
            return _reject(RejectCode.AUTH_NOT_ENABLED, "auth is not enabled")
        u = self.users.get(cmd.name)
        if u is None or u.no_password:
            return _reject(RejectCode.AUTH_FAILED, f"user {cmd.name!r} cannot authenticate by password")
        if cmd.checked_revision != self.revision:
            # The router checked the password against an older state: it checks again (etcd's loop).
            return _reject(RejectCode.AUTH_OLD_REVISION, f"password checked at auth revision {cmd.checked_revision}, now {self.revision}")
        self.tokens = {k: t for k, t in self.tokens.items() if t.expires_ms > cmd.now_ms}
        self.token_seq += 1
        self.tokens[cmd.token] = Token(cmd.token, cmd.name, cmd.expires_ms, self.token_seq)
        return Applied(cmd.token, auth_changed=True)

    # -- record -------------------------------------------------------------------------
    def encode(self) -> bytes:
        o = {
            "enabled": self.enabled,
            "revision": self.revision,
            "version": self.version,
            "users": [[u.name, u.password.hex(), list(u.roles), u.no_password] for _, u in sorted(self.users.items())],
            "roles": [[r.name, [[p.perm_type, p.key.hex(), p.range_end.hex()] for p in r.perms]] for _, r in sorted(self.roles.items())],
            "tokens": [[t.token, t.user, t.expires_ms, t.seq] for t in sorted(self.tokens.values(), key=lambda t: t.seq)],
            "token_seq": self.token_seq,
        }
        return bytes([RECORD_VERSION]) + json.dumps(o, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> AuthBook:
        if not data or data[0] != RECORD_VERSION:
            raise CodecError(f"unknown auth record version {data[:1]!r} (this build reads {RECORD_VERSION})")
        try:
            o = json.loads(data[1:])
            book = cls(enabled=bool(o["enabled"]), revision=int(o["revision"]), version=int(o["version"]), token_seq=int(o["token_seq"]))
            for name, pw, roles, nopw in o["users"]:
                book.users[str(name)] = User(str(name), bytes.fromhex(pw), tuple(str(r) for r in roles), bool(nopw))
            for name, perms in o["roles"]:
                book.roles[str(name)] = Role(str(name), tuple(Perm(int(t), bytes.fromhex(k), bytes.fromhex(e)) for t, k, e in perms))
            for tok, user, exp, seq in o["tokens"]:
                book.tokens[str(tok)] = Token(str(tok), str(user), int(exp), int(seq))
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed auth record: {exc}") from exc
        return book


_HANDLERS = {
    AuthOp.ENABLE: AuthBook._enable,
    AuthOp.DISABLE: AuthBook._disable,
    AuthOp.USER_ADD: AuthBook._user_add,
    AuthOp.USER_DELETE: AuthBook._user_delete,
    AuthOp.USER_CHANGE_PASSWORD: AuthBook._user_change_password,
    AuthOp.USER_GRANT_ROLE: AuthBook._user_grant_role,
    AuthOp.USER_REVOKE_ROLE: AuthBook._user_revoke_role,
    AuthOp.ROLE_ADD: AuthBook._role_add,
    AuthOp.ROLE_DELETE: AuthBook._role_delete,
    AuthOp.ROLE_GRANT_PERMISSION: AuthBook._role_grant_permission,
    AuthOp.ROLE_REVOKE_PERMISSION: AuthBook._role_revoke_permission,
    AuthOp.ISSUE_TOKEN: AuthBook._issue_token,
}
