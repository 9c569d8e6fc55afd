"""Evaluating an etcd RangeRequest against one shard's store.

etcd's rules (server/etcdserver/txn/range.go), reproduced:

- revision 0 (or below) reads the current revision; a revision below the compact
  revision is "compacted", above the shard's readable revision "future"
  (checked by the caller, who knows those revisions).
- count is the number of live keys in the range at that revision, before
  the min/max revision filters and before limit.
- count_only returns no kvs, only count.
- Without sorting or filters, limit + 1 keys are read and `more` says whether
  the extra one existed. With sorting or filters, everything is read,
  filtered, sorted, then cut to limit, and `more` says whether anything was
  cut.
- Sort order NONE with a target other than KEY sorts ASCEND; KEY ASCEND and
  NONE keep the natural (key-ascending) order; KEY DESCEND reverses it.
  Ties keep key order (etcd's sort is unstable, so its tie order is
  unspecified).
- keys_only drops values.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from shard import keys, mvcc, slots
from shard.types import KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget

if TYPE_CHECKING:
    from shard.engine import KvReader


def has_revision_filters(r: RangeRequest) -> bool:
    return bool(r.min_mod_revision or r.max_mod_revision or r.min_create_revision or r.max_create_revision)


def effective_sort_order(r: RangeRequest) -> SortOrder:
    """The order etcd actually applies (NONE = the natural key order)."""
    order = r.sort_order
    if r.sort_target != SortTarget.KEY and order == SortOrder.NONE:
        order = SortOrder.ASCEND
    if r.sort_target == SortTarget.KEY and order == SortOrder.ASCEND:
        order = SortOrder.NONE
    return order


def _keep(r: RangeRequest) -> Callable[[KeyValue], bool]:
    def keep(kv: KeyValue) -> bool:
        if r.max_mod_revision and kv.mod_revision > r.max_mod_revision:
            return False
        if r.min_mod_revision and kv.mod_revision < r.min_mod_revision:
            return False
        if r.max_create_revision and kv.create_revision > r.max_create_revision:
            return False
        if r.min_create_revision and kv.create_revision < r.min_create_revision:
            return False
        return True

    return keep


_SORT_KEYS: dict[SortTarget, Callable[[KeyValue], object]] = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


def evaluate(
    view: KvReader,
    owned: slots.SlotRanges,
    slot_count: int,
    r: RangeRequest,
    at_rev: int | None,
    header_revision: int,
) -> RangeResponse:
    """The RangeResponse of r read at at_rev (None: the newest state),
    reported under header_revision. Revision checks are the caller's."""
    raw = mvcc.visible_raw(view, owned, slot_count, r.key, r.range_end, at_rev)
    if r.count_only:
        return RangeResponse(header_revision, (), False, sum(1 for _ in raw))

    order = effective_sort_order(r)
    filtered = has_revision_filters(r)

    # Values are dropped after sorting (a keys_only range may sort by value).
    drop_values = r.keys_only and not (order != SortOrder.NONE and r.sort_target == SortTarget.VALUE)

    def decode(it: Iterator[tuple[bytes, int, bytes]]) -> list[KeyValue]:
        return [mvcc.to_kv(k, rev, keys.decode_mvcc(v), drop_values) for k, rev, v in it]

    if r.limit > 0 and order == SortOrder.NONE and not filtered:
        head = decode(itertools.islice(raw, r.limit + 1))
        count = len(head) + sum(1 for _ in raw)
        more = len(head) > r.limit
        return RangeResponse(header_revision, tuple(head[: r.limit]), more, count)

    kvs = decode(raw)
    count = len(kvs)
    if filtered:
        kvs = list(filter(_keep(r), kvs))
    if order == SortOrder.DESCEND and r.sort_target == SortTarget.KEY:
        kvs.reverse()
    elif order != SortOrder.NONE:
        kvs.sort(key=_SORT_KEYS[r.sort_target], reverse=order == SortOrder.DESCEND)  # type: ignore[arg-type]
    more = False
    if r.limit > 0 and len(kvs) > r.limit:
        kvs = kvs[: r.limit]
        more = True
    if r.keys_only and not drop_values:
        kvs = [dataclasses.replace(kv, value=b"") for kv in kvs]
    return RangeResponse(header_revision, tuple(kvs), more, count)
