"""Who may do what (PURE): etcd's permission rules over users, roles and
key ranges, and the permissions each etcd request needs.

An ``AuthView`` is one version of placement's auth state (users, roles, the
enabled flag, the auth revision) as a router holds it (router/authstore.py).
``refusal(user, needs)`` answers as etcd's authStore.isOpPermitted does
(server/auth/store.go, range_perm_cache.go): with auth off everything is
allowed; no user is "user name is empty"; an unknown user, or a need not
covered, is "permission denied"; a user with the root role may do anything.

A permission is READ, WRITE or READWRITE on a key (range_end empty), on
[key, range_end), or on every key from key on (range_end "\\x00"). A user's
permissions of one kind are the union over its roles' permissions; a need
on a range is met only if that union covers the whole range (etcd's
interval tree Contains: adjoining permissions together cover a range), a
need on one key if some permission contains it. The union is merged once
per user and view (``_merged``), so a check is a binary search.

The needs of a request follow etcd's checks (server/etcdserver/apply/
auth.go): a range needs READ on its range, a put WRITE on its key (and READ
with prev_kv), a delete WRITE on its range (READ with prev_kv), a txn every
compare's range READ and every operation of both branches, nested txns
included (checkTxnAuth); a watch needs READ on what it watches.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

ROOT = "root"
READ, WRITE, READWRITE = 0, 1, 2
"""authpb.Permission.Type; a need is READ or WRITE."""


@dataclass(frozen=True, slots=True)
class Perm:
    perm_type: int
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    password: bytes = b""
    roles: tuple[str, ...] = ()
    no_password: bool = False


@dataclass(frozen=True, slots=True)
class Need:
    perm_type: int
    key: bytes
    range_end: bytes = b""


def span(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    """[start, end) of a key or range; end None: no upper bound. One key k
    is [k, k + "\\x00"): the smallest key above k is k + "\\x00"."""
    if not range_end:
        return key, key + b"\x00"
    if range_end == b"\x00":
        return key, None
    return key, range_end


class Intervals:
    """A union of [start, end) spans, merged: sorted, disjoint, not adjoining."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, spans: Iterable[tuple[bytes, bytes | None]]) -> None:
        merged: list[tuple[bytes, bytes | None]] = []
        for start, end in sorted(spans, key=lambda s: s[0]):
            if merged:
                last_start, last_end = merged[-1]
                if last_end is None or start <= last_end:  # overlapping or adjoining
                    if last_end is not None and (end is None or end > last_end):
                        merged[-1] = (last_start, end)
                    continue
            merged.append((start, end))
        self._starts = [s for s, _ in merged]
        self._ends = [e for _, e in merged]

    def covers(self, start: bytes, end: bytes | None) -> bool:
        """Whether the union contains all of [start, end)."""
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0:
            return False
        have = self._ends[i]
        if have is None:
            return True
        return end is not None and end <= have

    def __repr__(self) -> str:
        return f"Intervals({list(zip(self._starts, self._ends, strict=True))!r})"


@dataclass(slots=True)
class AuthView:
    enabled: bool = False
    revision: int = 0
    users: Mapping[str, UserInfo] = field(default_factory=dict)
    roles: Mapping[str, tuple[Perm, ...]] = field(default_factory=dict)
    _merged: dict[str, tuple[Intervals, Intervals]] = field(default_factory=dict)

    def is_root(self, user: str) -> bool:
        u = self.users.get(user)
        return u is not None and ROOT in u.roles

    def admin_refusal(self, user: str | None) -> str | None:
        """etcd's IsAdminPermitted: the etcd row that refuses, or None."""
        if not self.enabled:
            return None
        if not user:
            return "user_empty"
        if user not in self.users:
            return "user_not_found"
        return None if self.is_root(user) else "permission_denied"

    def refusal(self, user: str | None, needs: Iterable[Need]) -> str | None:
        """The etcd row that refuses `needs` to `user` (None: no user), or None if allowed."""
        if not self.enabled:
            return None
        if not user:
            return "user_empty"
        u = self.users.get(user)
        if u is None:
            return "permission_denied"
        if ROOT in u.roles:
            return None
        read, write = self._perms(u)
        for n in needs:
            have = read if n.perm_type == READ else write
            if not have.covers(*span(n.key, n.range_end)):
                return "permission_denied"
        return None

    def _perms(self, u: UserInfo) -> tuple[Intervals, Intervals]:
        got = self._merged.get(u.name)
        if got is None:
            reads: list[tuple[bytes, bytes | None]] = []
            writes: list[tuple[bytes, bytes | None]] = []
            for role in u.roles:
                for p in self.roles.get(role, ()):
                    s = span(p.key, p.range_end)
                    if p.perm_type in (READ, READWRITE):
                        reads.append(s)
                    if p.perm_type in (WRITE, READWRITE):
                        writes.append(s)
            got = self._merged[u.name] = (Intervals(reads), Intervals(writes))
        return got


# ------------------------------------------------------------------ needs of requests
# Requests are etcd's protobuf messages, read by field name only.


def needs_of_range(req: Any) -> list[Need]:
    return [Need(READ, req.key, req.range_end)]


def needs_of_put(req: Any) -> list[Need]:
    out = [Need(WRITE, req.key)]
    if req.prev_kv:
        out.append(Need(READ, req.key))
    return out


def needs_of_delete(req: Any) -> list[Need]:
    out = [Need(WRITE, req.key, req.range_end)]
    if req.prev_kv:
        out.append(Need(READ, req.key, req.range_end))
    return out


def needs_of_txn(req: Any) -> list[Need]:
    """etcd's checkTxnAuth: every compare (READ), then both branches, nested txns included."""
    return list(_txn_needs(req))


def _txn_needs(req: Any) -> Iterator[Need]:
    for c in req.compare:
        yield Need(READ, c.key, c.range_end)
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which == "request_range":
            yield from needs_of_range(op.request_range)
        elif which == "request_put":
            yield from needs_of_put(op.request_put)
        elif which == "request_delete_range":
            yield from needs_of_delete(op.request_delete_range)
        elif which == "request_txn":
            yield from _txn_needs(op.request_txn)


def txn_leases(req: Any) -> Iterator[int]:
    """The leases the puts of a txn (both branches, nested) attach."""
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which == "request_put" and op.request_put.lease:
            yield op.request_put.lease
        elif which == "request_txn":
            yield from txn_leases(op.request_txn)


def needs_of_watch(create: Any) -> list[Need]:
    """A watch create request: READ on what it watches (an empty key is "\\x00", as etcd reads it)."""
    return [Need(READ, create.key or b"\x00", create.range_end)]


def prefix_end(prefix: bytes) -> bytes:
    """The end of the range of keys that start with prefix ("\\x00": no end)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\x00"
