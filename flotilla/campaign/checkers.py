"""The campaign's checkers over a recorded History (pure).

Each returns a list of Violation; an empty list means the property held.

- linearizability: per key, the register model of linearizability.py; a
  search that runs out of budget is a violation of kind "lin_timeout".
- acked-write loss: after every fault healed, each key's final value is the
  last acknowledged write or a later one (by revision).
- double apply: every write carries a unique value, so one value seen at two
  different mod_revisions (in reads or watch events) was applied twice.
- watch: per stream, revisions never go back, no event is delivered twice,
  no acknowledged write (by revision) up to the stream's high-water mark is
  missing (no gaps, also across resumed streams), and prev_kv names the
  previous event of the key.
- bounded staleness: a read with bound B invoked at wall time t returns a
  state no older than the newest write acknowledged before t - B - S, where
  S (clock_skew_ms) is the wall-clock skew the run injected. What Flotilla
  promises is B on clocks that agree: a leader whose clock runs ahead by d
  stamps writes (and closes timestamps) d in the future, and a replica whose
  clock runs behind by d judges "now - B" d too early, so with skews up to
  d on every node the promise is B + 2d (the runner passes S = 2 * the
  largest |offset| it applied; 0 without clock faults).
- convergence: every replica's state equals every other's.
- the bank workload's accounts (atomicity, every acknowledged transfer
  there, snapshots at one revision, linearizability): bankcheck.py.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

from flotilla.campaign.history import History, Op, OpKind, Outcome
from flotilla.campaign.linearizability import INF, RegOp, Result, check
from flotilla.campaign.violation import Violation

__all__ = [
    "Violation",
    "check_all",
    "check_linearizable",
    "check_acked_writes",
    "check_double_apply",
    "check_watches",
    "check_staleness",
    "check_convergence",
]


def _reg_op(op: Op) -> RegOp | None:
    if op.kind is OpKind.GET:
        if op.outcome is not Outcome.OK:
            return None
        return RegOp("get", op.invoke, op.complete, output=op.output, id=op.id)
    if op.outcome is Outcome.FAIL:
        return None  # certainly not applied
    complete = op.complete if op.outcome is Outcome.OK else INF
    if op.kind is OpKind.PUT:
        return RegOp("put", op.invoke, complete, arg=op.value, id=op.id)
    if op.kind is OpKind.DELETE:
        return RegOp("delete", op.invoke, complete, output=op.output if complete != INF else None, id=op.id)
    if op.kind is OpKind.CAS:
        return RegOp("cas", op.invoke, complete, arg=op.value, expect=op.expect, output=op.output, id=op.id)
    return None


def check_linearizable(history: History, *, max_steps: int = 2_000_000) -> list[Violation]:
    out: list[Violation] = []
    for key, ops in sorted(history.by_key().items()):
        reg = [r for r in (_reg_op(o) for o in ops) if r is not None]
        if not reg:
            continue
        res = check(reg, max_steps=max_steps)
        if res.result is Result.ILLEGAL:
            out.append(Violation("linearizability", key, res.detail))
        elif res.result is Result.TIMEOUT:
            out.append(Violation("lin_timeout", key, res.detail))
    return out


def _writes(history: History) -> dict[bytes, list[Op]]:
    """Acknowledged writes that changed the key, per key (puts, successful CAS, deletes that deleted)."""
    out: dict[bytes, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.outcome is not Outcome.OK:
            continue
        if op.kind in (OpKind.PUT, OpKind.LEASE_PUT) or (op.kind is OpKind.CAS and op.output) or (
            op.kind is OpKind.DELETE and op.output
        ):
            out[op.key].append(op)
    return out


def _value_writes(history: History) -> dict[bytes, Op]:
    """value -> the write that wrote it (acked or not: values are unique)."""
    return {
        op.value: op
        for op in history.ops
        if op.value is not None and op.kind in (OpKind.PUT, OpKind.CAS, OpKind.LEASE_PUT)
    }


def _absent_ok(history: History, key: bytes, writes: list[Op], floor_rev: int) -> bool:
    """May the key be absent at a state no older than floor_rev? Yes if an
    acked delete is at or after it, or a delete of unknown outcome exists."""
    if any(w.kind is OpKind.DELETE and w.revision >= floor_rev for w in writes):
        return True
    return any(o.kind is OpKind.DELETE and o.key == key and o.outcome is Outcome.UNKNOWN for o in history.ops)


def check_acked_writes(history: History) -> list[Violation]:
    out: list[Violation] = []
    by_value = _value_writes(history)
    for key, writes in sorted(_writes(history).items()):
        if any(w.kind is OpKind.LEASE_PUT for w in writes):
            continue  # lease keys go away with their lease
        if key not in history.final_reads:
            out.append(Violation("acked_write_loss", key, "no final read of the key"))
            continue
        value, mod_rev = history.final_reads[key]
        last = max(writes, key=lambda o: o.revision)
        if value is None:
            if not _absent_ok(history, key, writes, last.revision):
                out.append(Violation("acked_write_loss", key, f"final read found no key; last acked write #{last.id} rev {last.revision}"))
            continue
        if mod_rev < last.revision:
            w = by_value.get(value)
            out.append(
                Violation(
                    "acked_write_loss",
                    key,
                    f"final value {value!r} (rev {mod_rev}, write #{w.id if w else '?'}) is older than acked "
                    f"write #{last.id} {last.kind.value} rev {last.revision}",
                )
            )
        elif value not in by_value:
            out.append(Violation("acked_write_loss", key, f"final value {value!r} was never written"))
    return out


def check_double_apply(history: History) -> list[Violation]:
    revs: dict[bytes, set[int]] = defaultdict(set)
    keys: dict[bytes, bytes] = {}
    for op in history.ops:
        if op.kind in (OpKind.GET, OpKind.STALE_GET) and op.outcome is Outcome.OK and op.output is not None:
            revs[op.output].add(op.revision)
            keys[op.output] = op.key
    for e in history.watch_events:
        if e.kind == "put":
            revs[e.value].add(e.mod_revision)
            keys[e.value] = e.key
    for key, (value, rev) in history.final_reads.items():
        if value is not None:
            revs[value].add(rev)
            keys[value] = key
    return [
        Violation("double_apply", keys[v], f"value {v!r} seen at mod_revisions {sorted(r)}")
        for v, r in sorted(revs.items())
        if len(r) > 1
    ]


def check_watches(history: History, prefix_keys: set[bytes] | None = None) -> list[Violation]:
    """Per watcher (a sequence of streams, each resumed from the last revision
    seen plus one): ordered, no duplicates, no gaps, prev_kv correct."""
    out: list[Violation] = []
    acked: dict[int, Op] = {}
    for key, writes in _writes(history).items():
        if prefix_keys is not None and key not in prefix_keys:
            continue
        for w in writes:
            acked[w.revision] = w
    by_watcher: dict[int, list] = defaultdict(list)
    for e in history.watch_events:
        by_watcher[e.watcher].append(e)
    streams: dict[int, list] = defaultdict(list)
    for s in history.watch_streams:
        streams[s.watcher].append(s)
    for watcher, events in sorted(by_watcher.items()):
        seen: set[tuple[bytes, int]] = set()
        last_rev = 0
        last_of_key: dict[bytes, tuple[bytes, int, str]] = {}
        for e in events:
            k = (e.key, e.mod_revision)
            if k in seen:
                out.append(Violation("watch_duplicate", e.key, f"watcher {watcher} got rev {e.mod_revision} twice"))
                continue
            seen.add(k)
            if e.mod_revision < last_rev:
                out.append(
                    Violation("watch_order", e.key, f"watcher {watcher} got rev {e.mod_revision} after rev {last_rev}")
                )
            last_rev = max(last_rev, e.mod_revision)
            prev = last_of_key.get(e.key)
            if prev is not None and e.prev_value is not None:
                pv, pr, pkind = prev
                if pkind == "delete":
                    out.append(Violation("watch_prev_kv", e.key, f"rev {e.mod_revision}: prev_kv present after a delete"))
                elif (e.prev_value, e.prev_mod_revision) != (pv, pr):
                    out.append(
                        Violation(
                            "watch_prev_kv", e.key,
                            f"rev {e.mod_revision}: prev_kv ({e.prev_value!r}, {e.prev_mod_revision}) but previous event "
                            f"was ({pv!r}, {pr})",
                        )
                    )
            last_of_key[e.key] = (e.value, e.mod_revision, e.kind)
        # Gaps: acked writes inside [first stream start, high water] that never arrived.
        ss = streams.get(watcher, [])
        if not ss:
            continue
        start = min(s.start_revision for s in ss)
        high = max(max((s.high_water for s in ss), default=0), last_rev)
        got = {e.mod_revision for e in events}
        for rev, w in sorted(acked.items()):
            if start <= rev <= high and rev not in got:
                out.append(
                    Violation("watch_gap", w.key, f"watcher {watcher} never got acked {w.kind.value} #{w.id} rev {rev} (high water {high})")
                )
    return out


def check_staleness(history: History, clock_skew_ms: int = 0) -> list[Violation]:
    out: list[Violation] = []
    writes = _writes(history)
    by_value = _value_writes(history)
    for op in history.ops:
        if op.kind is not OpKind.STALE_GET or op.outcome is not Outcome.OK:
            continue
        floor_ms = op.wall_ms - op.bound_ms
        # The newest write acknowledged before the bound: its wall completion is
        # not recorded, so use monotonic order: complete <= invoke - bound.
        older = [w for w in writes.get(op.key, []) if w.complete <= op.invoke - (op.bound_ms + clock_skew_ms) / 1000]
        if not older:
            continue
        floor = max(older, key=lambda w: w.revision)
        if op.output is None:
            if not _absent_ok(history, op.key, writes.get(op.key, []), floor.revision):
                out.append(
                    Violation("stale_read", op.key, f"read #{op.id} (bound {op.bound_ms} ms) found no key; "
                              f"write #{floor.id} rev {floor.revision} was acked before t-bound ({floor_ms})")
                )
            continue
        if op.revision < floor.revision:
            w = by_value.get(op.output)
            out.append(
                Violation(
                    "stale_read", op.key,
                    f"read #{op.id} (bound {op.bound_ms} ms) returned rev {op.revision} (write #{w.id if w else '?'}), "
                    f"older than write #{floor.id} rev {floor.revision} acked {op.invoke - floor.complete:.3f} s before it",
                )
            )
    return out


def check_convergence(states: Mapping[int, Mapping[bytes, tuple[bytes | None, int]]]) -> list[Violation]:
    """states: replica -> key -> (value, mod_revision), of the keys that
    replica holds (its node has the key's shard). All holders of a key must
    agree."""
    out: list[Violation] = []
    keys = set().union(*(s.keys() for s in states.values())) if states else set()
    for key in sorted(keys):
        seen = {nid: s[key] for nid, s in states.items() if key in s}
        if len(set(seen.values())) > 1:
            out.append(Violation("divergence", key, ", ".join(f"node {n}: {v}" for n, v in sorted(seen.items()))))
    return out


def check_all(
    history: History,
    replica_states: Mapping[int, Mapping[bytes, tuple[bytes | None, int]]] | None = None,
    *,
    lin_max_steps: int = 2_000_000,
    clock_skew_ms: int = 0,
) -> list[Violation]:
    from flotilla.campaign.bankcheck import check_bank  # the bank checker, only for the bank workload

    register_keys = {o.key for o in history.ops if o.kind in (OpKind.PUT, OpKind.CAS, OpKind.DELETE, OpKind.GET)}
    return [
        *check_bank(history, lin_max_steps=lin_max_steps, clock_skew_ms=clock_skew_ms),
        *check_linearizable(history, max_steps=lin_max_steps),
        *check_acked_writes(history),
        *check_double_apply(history),
        *check_watches(history, register_keys),
        *check_staleness(history, clock_skew_ms),
        *check_convergence(replica_states or {}),
    ]
