"""The bank workload's checkers (flotilla/campaign/bank.py) over a History
(pure: no clocks, no I/O). Each returns a list of Violation.

Account values are ``b"<balance>:<tag>"``: the tag names the write ("init",
or "t<id>" for transfer <id>), and a transfer writes both its accounts
only if both still hold the versions it read (a compare on each
mod_revision), so every version of an account names the version before it
(the one its transfer read). From each account's final value the chain of
versions back to "init" is therefore exact: it lists every transfer that
applied to the account, in order. No search over unknown outcomes is
needed to know which applied.

- ``check_bank_chains``: the chains exist (every value was written by the
  workload, by a transfer of that account, as that transfer wrote it); a
  transfer acknowledged committed is in both its accounts' chains (none is
  lost); a transfer acknowledged as not committed (its compare failed) is
  in none, and no read saw its values; a transfer in one account's chain is
  in the other's (all-applied or none-applied: atomicity of the final
  state); every version any read or watch event saw is in its account's
  chain (no version lost or forked); every sighting of a transfer's values
  (either account, any read, watch event or its own answer) has one
  mod_revision (both writes at one revision).
- ``check_bank_balances``: the final balances are the initial ones plus
  the acknowledged transfers plus some subset of the transfers whose
  outcome is unknown. The chains name a candidate subset (checked first);
  if it does not fit, a bounded search over the subsets (reachable sums,
  at most ``max_states``) looks for any other.
- ``check_bank_snapshots``: every read of all accounts (a Range over the
  prefix: one revision on every shard) sums to the initial total; no read
  that claims one state (all accounts, a read-only Txn of two, a
  transfer's failure branch) sees a transfer on one account and not on
  the other (by chain position); and each such read is the state at its
  header revision: no account shows a version above it, nor a version
  whose successor (in the chain) is at or below it.
- ``check_bank_linearizable``: per account, the register model of
  linearizability.py: a committed transfer is a compare-and-set of the
  value it read to the value it wrote (values are unique, so comparing
  the mod_revision is comparing the value), a transfer of unknown outcome
  one that may or may not have happened, a failed transfer's failure-branch
  ranges and every read are gets.
- ``check_bank_revision_order``: a transfer (or probe put) acknowledged
  before another write began has the lower revision (revisions follow real
  time across shards: the router's HLC), allowing for injected clock skew.
- ``check_bank_watch``: a watcher that got one account's event of a
  transfer got the other account's at the same revision.

``bank_figures`` counts what the run did (transfers committed, aborted,
unknown and of those applied; reads; the latency of the probe puts, the
plain puts the workload sends to every shard to see how long a txn lock
held writes up).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flotilla.campaign.violation import Violation
from flotilla.campaign.history import BankOp, History, OpKind, Outcome
from flotilla.campaign.linearizability import INF, RegOp, Result, check

__all__ = [
    "INIT",
    "Chains",
    "account_value",
    "bank_figures",
    "build_chains",
    "check_bank",
    "check_bank_balances",
    "check_bank_chains",
    "check_bank_linearizable",
    "check_bank_revision_order",
    "check_bank_snapshots",
    "check_bank_watch",
    "parse_value",
    "tag_of",
]

INIT = "init"


def tag_of(transfer_id: int) -> str:
    return f"t{transfer_id}"


def account_value(balance: int, tag: str) -> bytes:
    return f"{balance}:{tag}".encode()


def parse_value(value: bytes | None) -> tuple[int, str] | None:
    """(balance, tag), or None for a value the workload never writes."""
    if value is None:
        return None
    bal, sep, tag = value.decode("utf-8", "replace").partition(":")
    if not sep or not tag:
        return None
    try:
        return int(bal), tag
    except ValueError:
        return None


def _transfer_id(tag: str) -> int | None:
    if tag.startswith("t") and tag[1:].isdigit():
        return int(tag[1:])
    return None


@dataclass
class Chains:
    """Per account, the tags of its versions from "init" to the final value."""

    order: dict[bytes, list[str]] = field(default_factory=dict)
    pos: dict[bytes, dict[str, int]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    def applied(self) -> set[int]:
        """Transfers in some chain."""
        return {t for seq in self.order.values() for tag in seq if (t := _transfer_id(tag)) is not None}


def _s(v: bytes | None) -> str:
    return "∅" if v is None else v.decode("utf-8", "backslashreplace")


def _transfers(history: History) -> dict[int, BankOp]:
    return {o.id: o for o in history.bank if o.kind == "transfer"}


def build_chains(history: History) -> Chains:
    out = Chains()
    transfers = _transfers(history)
    for key in sorted(history.bank_initial):
        final = history.final_reads.get(key)
        seq: list[str] = []
        out.order[key] = seq
        out.pos[key] = {}
        if final is None:
            out.violations.append(Violation("bank_chain", key, "no final read of the account"))
            continue
        value = final[0]
        seen: set[str] = set()
        for _ in range(len(transfers) + 2):
            p = parse_value(value)
            if p is None:
                out.violations.append(Violation("bank_chain", key, f"value {_s(value)!r} was never written by the workload"))
                break
            tag = p[1]
            if tag in seen:
                out.violations.append(Violation("bank_chain", key, f"the chain of versions loops at {tag}"))
                break
            seen.add(tag)
            if tag == INIT:
                if value != history.bank_initial[key]:
                    out.violations.append(
                        Violation("bank_chain", key, f"initial version {_s(value)!r}, but the account began as {_s(history.bank_initial[key])!r}")
                    )
                    break
                seq.append(tag)
                break
            tid = _transfer_id(tag)
            t = transfers.get(tid) if tid is not None else None
            if t is None or key not in t.keys:
                out.violations.append(Violation("bank_chain", key, f"value {_s(value)!r} names no transfer of this account"))
                break
            i = t.keys.index(key)
            if t.writes[i] != value:
                out.violations.append(Violation("bank_chain", key, f"value {_s(value)!r} is not what transfer #{t.id} wrote ({_s(t.writes[i])!r})"))
                break
            seq.append(tag)
            value = t.expect[i][0]
        seq.reverse()
        out.pos[key] = {tag: i for i, tag in enumerate(seq)}
    return out


def _sightings(history: History) -> list[tuple[bytes, bytes | None, int, str]]:
    """Every (key, value, mod_revision, where) a read, answer or watch event showed of an account."""
    accounts = history.bank_initial
    out: list[tuple[bytes, bytes | None, int, str]] = []
    for o in history.bank:
        if o.outcome is not Outcome.OK:
            continue
        for k, (v, r) in zip(o.keys, o.observed):
            out.append((k, v, r, f"{o.kind} #{o.id}"))
    for e in history.watch_events:
        if e.key in accounts and e.kind == "put":
            out.append((e.key, e.value, e.mod_revision, f"watcher {e.watcher} event"))
    for k, (v, r) in history.final_reads.items():
        if k in accounts:
            out.append((k, v, r, "final read"))
    return out


def check_bank_chains(history: History, chains: Chains | None = None) -> list[Violation]:
    chains = chains or build_chains(history)
    out = list(chains.violations)
    transfers = _transfers(history)
    in_chain: dict[int, set[bytes]] = defaultdict(set)
    for key, seq in chains.order.items():
        for tag in seq:
            tid = _transfer_id(tag)
            if tid is not None:
                in_chain[tid].add(key)
    for tid, keys in sorted(in_chain.items()):
        t = transfers[tid]
        if t.outcome is Outcome.OK and not t.succeeded:
            out.append(Violation("bank_aborted_applied", t.keys[0], f"transfer #{tid} answered not succeeded, yet applied to {sorted(_s(k) for k in keys)}"))
        missing = [k for k in t.keys if k not in keys]
        if missing:
            out.append(
                Violation(
                    "bank_atomicity", missing[0],
                    f"transfer #{tid} ({t.outcome.value}) applied to {sorted(_s(k) for k in keys)} but not to {sorted(_s(k) for k in missing)}",
                )
            )
    for t in transfers.values():
        if t.outcome is Outcome.OK and t.succeeded and not in_chain.get(t.id):
            out.append(Violation("bank_lost_transfer", t.keys[0], f"transfer #{t.id} committed at rev {t.revision} is in no account's final chain"))
    revs: dict[str, set[int]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    for t in transfers.values():
        if t.outcome is Outcome.OK and t.succeeded:
            revs[tag_of(t.id)].add(t.revision)
            where[tag_of(t.id)].append(f"its answer {t.revision}")
    lost_seen: set[tuple[bytes, bytes | None]] = set()
    for key, value, rev, src in _sightings(history):
        p = parse_value(value)
        if p is None:
            if (key, value) not in lost_seen:
                lost_seen.add((key, value))
                out.append(Violation("bank_chain", key, f"{src} saw {_s(value)!r}, a value the workload never writes"))
            continue
        tag = p[1]
        if tag != INIT:
            revs[tag].add(rev)
            where[tag].append(f"{src} {_s(key)} {rev}")
        if tag not in chains.pos.get(key, {}) and (key, value) not in lost_seen and chains.order.get(key):
            lost_seen.add((key, value))
            tid = _transfer_id(tag)
            t = transfers.get(tid) if tid is not None else None
            if t is not None and t.outcome is Outcome.OK and not t.succeeded:
                out.append(Violation("bank_aborted_visible", key, f"{src} saw {_s(value)!r} of transfer #{tid}, answered not succeeded"))
            else:
                out.append(Violation("bank_lost_version", key, f"{src} saw {_s(value)!r} (rev {rev}), which is not in the account's final chain"))
    for tag, rs in sorted(revs.items()):
        if len(rs) > 1:
            tid = _transfer_id(tag)
            key = transfers[tid].keys[0] if tid in transfers else b""
            out.append(Violation("bank_revision_split", key, f"transfer {tag} seen at revisions {sorted(rs)}: {'; '.join(where[tag][:6])}"))
    return out


def check_bank_balances(history: History, chains: Chains | None = None, *, max_states: int = 200_000) -> list[Violation]:
    chains = chains or build_chains(history)
    accounts = sorted(history.bank_initial)
    if not accounts:
        return []
    idx = {k: i for i, k in enumerate(accounts)}
    final: list[int] = []
    for k in accounts:
        p = parse_value(history.final_reads.get(k, (None, 0))[0])
        if p is None:
            return [Violation("bank_balance", k, "no final balance (see bank_chain)")]
        final.append(p[0])
    initial = [parse_value(history.bank_initial[k])[0] for k in accounts]  # type: ignore[index]
    transfers = _transfers(history)

    def delta(t: BankOp) -> tuple[int, ...]:
        d = [0] * len(accounts)
        d[idx[t.keys[0]]] -= t.amount
        d[idx[t.keys[1]]] += t.amount
        return tuple(d)

    need = [f - i for f, i in zip(final, initial)]
    for t in transfers.values():
        if t.outcome is Outcome.OK and t.succeeded:
            for j, x in enumerate(delta(t)):
                need[j] -= x
    target = tuple(need)
    unknown = [t for t in transfers.values() if t.outcome is not Outcome.OK]
    zero = tuple([0] * len(accounts))
    if target == zero and not unknown:
        return []
    # The chains' subset first: the unknown transfers that applied.
    applied = chains.applied()
    cand = [0] * len(accounts)
    for t in unknown:
        if t.id in applied:
            for j, x in enumerate(delta(t)):
                cand[j] += x
    if tuple(cand) == target:
        return []
    reach: set[tuple[int, ...]] = {zero}
    for t in unknown:
        d = delta(t)
        reach |= {tuple(a + b for a, b in zip(v, d)) for v in reach}
        if len(reach) > max_states:
            return [
                Violation(
                    "bank_balance", b"",
                    f"final balances {final} need {list(target)} from {len(unknown)} transfers of unknown outcome; the chains' "
                    f"subset gives {cand}; the search ran out of its {max_states} states",
                )
            ]
    if target in reach:
        return []
    return [
        Violation(
            "bank_balance", b"",
            f"final balances {final} (sum {sum(final)}, initial sum {sum(initial)}) are not the initial ones plus the "
            f"{sum(1 for t in transfers.values() if t.outcome is Outcome.OK and t.succeeded)} committed transfers plus any "
            f"subset of the {len(unknown)} of unknown outcome (missing {list(target)})",
        )
    ]


def _snapshots(history: History) -> list[BankOp]:
    return [
        o for o in history.bank
        if o.outcome is Outcome.OK and o.observed and (o.snapshot or (o.kind == "transfer" and not o.succeeded))
    ]


def check_bank_snapshots(history: History, chains: Chains | None = None) -> list[Violation]:
    chains = chains or build_chains(history)
    out: list[Violation] = []
    accounts = set(history.bank_initial)
    total = sum(p[0] for v in history.bank_initial.values() if (p := parse_value(v)) is not None)
    transfers = _transfers(history)
    # The revision of each version (tag), where anything showed it.
    rev_of: dict[tuple[bytes, str], int] = {}
    for key, value, rev, _ in _sightings(history):
        p = parse_value(value)
        if p is not None and rev:
            rev_of.setdefault((key, p[1]), rev)
    for t in transfers.values():
        if t.outcome is Outcome.OK and t.succeeded:
            for k in t.keys:
                rev_of.setdefault((k, tag_of(t.id)), t.revision)
    for o in _snapshots(history):
        seen: dict[bytes, int] = {}
        for k, (v, _r) in zip(o.keys, o.observed):
            p = parse_value(v)
            if p is not None and p[1] in chains.pos.get(k, {}):
                seen[k] = chains.pos[k][p[1]]
        if o.kind == "read_all":
            got = {k for k, (v, _r) in zip(o.keys, o.observed) if v is not None}
            bal = [p[0] for _k, (v, _r) in zip(o.keys, o.observed) if (p := parse_value(v)) is not None]
            if got != accounts or sum(bal) != total:
                out.append(
                    Violation(
                        "bank_sum", b"",
                        f"read_all #{o.id} at rev {o.revision}: {len(got)} of {len(accounts)} accounts, sum {sum(bal)} != {total}: "
                        + ", ".join(f"{_s(k)}={_s(v)}@{r}" for k, (v, r) in zip(o.keys, o.observed)),
                    )
                )
        # Torn: a transfer after the version seen on k is visible on its other account.
        for k, p_k in seen.items():
            for tag in chains.order[k][p_k + 1 :]:
                t = transfers[int(tag[1:])]
                other = t.keys[1] if t.keys[0] == k else t.keys[0]
                if other in seen and chains.pos[other].get(tag, 1 << 60) <= seen[other]:
                    out.append(
                        Violation(
                            "bank_torn_read", k,
                            f"{o.kind} #{o.id} (rev {o.revision}) sees transfer #{t.id} on {_s(other)} but not on {_s(k)} "
                            f"(saw {_s(o.observed[o.keys.index(k)][0])!r})",
                        )
                    )
                    break
        # At its revision: no version above it, and the next version (if its revision is known) above it.
        if not o.revision:
            continue
        for k, (v, r) in zip(o.keys, o.observed):
            if r > o.revision:
                out.append(Violation("bank_not_at_revision", k, f"{o.kind} #{o.id} at rev {o.revision} saw {_s(v)!r} at mod_revision {r}"))
                continue
            if k not in seen:
                continue
            nxt = chains.order[k][seen[k] + 1 : seen[k] + 2]
            if nxt and (nr := rev_of.get((k, nxt[0]))) is not None and nr <= o.revision:
                out.append(
                    Violation(
                        "bank_not_at_revision", k,
                        f"{o.kind} #{o.id} at rev {o.revision} saw {_s(v)!r} (rev {r}), but the next version, of {nxt[0]}, is at rev {nr}",
                    )
                )
    return out


def check_bank_linearizable(history: History, *, max_steps: int = 2_000_000) -> list[Violation]:
    out: list[Violation] = []
    per_key: dict[bytes, list[RegOp]] = defaultdict(list)
    for o in history.bank:
        if o.kind == "transfer":
            if o.outcome is Outcome.OK and o.succeeded:
                for k, (ev, _r), w in zip(o.keys, o.expect, o.writes):
                    per_key[k].append(RegOp("cas", o.invoke, o.complete, arg=w, expect=ev, output=True, id=o.id))
            elif o.outcome is Outcome.OK:
                for k, (v, _r) in zip(o.keys, o.observed):
                    per_key[k].append(RegOp("get", o.invoke, o.complete, output=v, id=o.id))
            elif o.outcome is Outcome.UNKNOWN:
                for k, (ev, _r), w in zip(o.keys, o.expect, o.writes):
                    per_key[k].append(RegOp("cas", o.invoke, INF, arg=w, expect=ev, id=o.id))
        elif o.outcome is Outcome.OK:
            for k, (v, _r) in zip(o.keys, o.observed):
                per_key[k].append(RegOp("get", o.invoke, o.complete, output=v, id=o.id))
    for key in sorted(per_key):
        res = check(per_key[key], initial=history.bank_initial.get(key), max_steps=max_steps)
        if res.result is Result.ILLEGAL:
            out.append(Violation("linearizability", key, "bank account: " + res.detail))
        elif res.result is Result.TIMEOUT:
            out.append(Violation("lin_timeout", key, "bank account: " + res.detail))
    return out


def check_bank_revision_order(history: History, clock_skew_ms: int = 0) -> list[Violation]:
    """Writes only: a read's header may lag a revision seen on another shard (DESIGN.md, "Reads")."""
    writes: list[tuple[float, float, int, str, bytes]] = [
        (o.invoke, o.complete, o.revision, f"transfer #{o.id}", o.keys[0])
        for o in history.bank
        if o.kind == "transfer" and o.outcome is Outcome.OK and o.succeeded
    ]
    writes += [
        (o.invoke, o.complete, o.revision, f"put #{o.id}", o.key)
        for o in history.ops
        if o.kind is OpKind.PUT and o.outcome is Outcome.OK and o.revision
    ]
    slack = clock_skew_ms / 1000
    by_complete = sorted(writes, key=lambda w: w[1])
    out: list[Violation] = []
    best: tuple[float, float, int, str, bytes] | None = None
    j = 0
    for w in sorted(writes, key=lambda w: w[0]):
        while j < len(by_complete) and by_complete[j][1] + slack < w[0]:
            if best is None or by_complete[j][2] > best[2]:
                best = by_complete[j]
            j += 1
        if best is not None and w[2] <= best[2]:
            out.append(
                Violation(
                    "bank_revision_order", w[4],
                    f"{w[3]} began {w[0] - best[1]:.3f} s after {best[3]} (rev {best[2]}) was acknowledged, yet got rev {w[2]}",
                )
            )
            if len(out) >= 20:
                break
    return out


def check_bank_watch(history: History) -> list[Violation]:
    accounts = set(history.bank_initial)
    transfers = _transfers(history)
    got: dict[int, set[tuple[bytes, int]]] = defaultdict(set)
    for e in history.watch_events:
        if e.key in accounts:
            got[e.watcher].add((e.key, e.mod_revision))
    out: list[Violation] = []
    for e in history.watch_events:
        if e.key not in accounts or e.kind != "put":
            continue
        p = parse_value(e.value)
        tid = _transfer_id(p[1]) if p is not None else None
        t = transfers.get(tid) if tid is not None else None
        if t is None or e.key not in t.keys:
            continue
        other = t.keys[1] if t.keys[0] == e.key else t.keys[0]
        if (other, e.mod_revision) not in got[e.watcher]:
            out.append(
                Violation("bank_watch_torn", e.key, f"watcher {e.watcher} got transfer #{t.id}'s event at rev {e.mod_revision} but not {_s(other)}'s")
            )
    return out


def check_bank(history: History, *, lin_max_steps: int = 2_000_000, clock_skew_ms: int = 0) -> list[Violation]:
    if not history.bank_initial:
        return []
    chains = build_chains(history)
    return [
        *check_bank_chains(history, chains),
        *check_bank_balances(history, chains),
        *check_bank_snapshots(history, chains),
        *check_bank_linearizable(history, max_steps=lin_max_steps),
        *check_bank_revision_order(history, clock_skew_ms),
        *check_bank_watch(history),
    ]


def bank_figures(history: History, probe_keys: set[bytes] | None = None) -> dict[str, Any]:
    """What the bank workload did, and how long probe puts (plain puts to
    every shard) took: overall and after each router fault."""
    transfers = list(_transfers(history).values())
    applied = build_chains(history).applied() if history.bank_initial else set()
    unknown = [t for t in transfers if t.outcome is not Outcome.OK]
    probes = [o for o in history.ops if o.kind is OpKind.PUT and (probe_keys is None or o.key in probe_keys)]
    lat = sorted(o.complete - o.invoke for o in probes if o.outcome is Outcome.OK)
    after: list[dict[str, Any]] = []
    for f in history.faults:
        if f.kind not in ("kill_router", "crashpoint_router"):
            continue
        window = [o for o in probes if f.start <= o.invoke <= f.end + 10 and o.outcome is Outcome.OK]
        # Puts sent once the router serves again: how long a txn lock held them (the router was down before).
        served = [o for o in window if o.invoke >= f.end]
        after.append({
            "fault": f.kind,
            "detail": f.detail,
            "probe_puts_after": len(served),
            "max_put_latency_after_s": round(max((o.complete - o.invoke for o in served), default=0.0), 3),
            "first_put_ok_after_fault_start_s": round(min((o.complete for o in window), default=f.start) - f.start, 3),
        })
    return {
        "transfers": len(transfers),
        "committed": sum(1 for t in transfers if t.outcome is Outcome.OK and t.succeeded),
        "compare_failed": sum(1 for t in transfers if t.outcome is Outcome.OK and not t.succeeded),
        "unknown": len(unknown),
        "unknown_applied": sum(1 for t in unknown if t.id in applied),
        "reads_one": sum(1 for o in history.bank if o.kind == "read" and len(o.keys) == 1),
        "reads_pair_txn": sum(1 for o in history.bank if o.kind == "read" and len(o.keys) == 2),
        "reads_all": sum(1 for o in history.bank if o.kind == "read_all"),
        "reads_failed": sum(1 for o in history.bank if o.kind != "transfer" and o.outcome is not Outcome.OK),
        "probe_puts": len(probes),
        "probe_put_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "probe_put_p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
        "probe_put_max_s": round(lat[-1], 3) if lat else None,
        "after_router_faults": after,
    }
