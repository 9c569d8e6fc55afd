"""A campaign's recorded history: every client operation with its invoke and
complete times (pure: no clocks, the runner passes readings in).

An operation's outcome is one of:

- ``ok``: the cluster answered; ``output`` holds what it said.
- ``fail``: the cluster answered with an error that means "not applied"
  (only used where that is certain; the runner is conservative).
- ``unknown``: an error or timeout where the write may or may not have been
  applied. For the linearizability checker its completion time is infinity
  (porcupine's convention); reads with unknown outcome say nothing and are
  left out of every check.

Times are seconds on one monotonic clock (``invoke``/``complete``) plus the
wall clock at invocation in ms (``wall_ms``), which bounded-staleness checks
compare with HLC revisions (shard/hlc.py: ``wall_ms_of``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["BankOp", "Op", "OpKind", "Outcome", "History", "FaultEvent", "WatchEvent", "WatchStream", "INF"]

INF = float("inf")


class OpKind(str, Enum):
    PUT = "put"
    GET = "get"  # linearizable read
    STALE_GET = "stale_get"  # bounded-staleness read (input: bound_ms)
    CAS = "cas"  # txn: compare value (or version == 0 for None) then put
    DELETE = "delete"
    LEASE_PUT = "lease_put"  # put attached to a lease (lease keys are outside the register model)
    LEASE_REVOKE = "lease_revoke"


class Outcome(str, Enum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass
class Op:
    """One client operation. ``value``: the value written (unique per write,
    so a value names its write); ``expect``: a CAS's expected value (None:
    the key is absent). ``output``: a read's value (None: absent), a CAS's
    success, a delete's deleted count. ``revision``: the header revision of a
    write, or the mod_revision of the kv a read returned."""

    id: int
    client: int
    kind: OpKind
    key: bytes
    invoke: float
    wall_ms: int
    complete: float = INF
    outcome: Outcome = Outcome.UNKNOWN
    value: bytes | None = None
    expect: bytes | None = None
    bound_ms: int = 0
    output: Any = None
    revision: int = 0
    error: str = ""

    @property
    def is_write(self) -> bool:
        return self.kind in (OpKind.PUT, OpKind.CAS, OpKind.DELETE)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["outcome"] = self.outcome.value
        d["complete"] = None if self.complete == INF else self.complete
        for k in ("key", "value", "expect"):
            if d[k] is not None:
                d[k] = d[k].decode("utf-8", "backslashreplace")
        if isinstance(d["output"], bytes):
            d["output"] = d["output"].decode("utf-8", "backslashreplace")
        return d


@dataclass
class BankOp:
    """One operation of the bank workload (flotilla/campaign/bank.py) over
    account keys whose values are ``b"<balance>:<tag>"``, the tag naming
    the write ("init", or "t<id>" for the transfer with that id).

    ``kind``:

    - ``"read"``: one account by a Get, or two by one read-only Txn
      (``snapshot``: the values claim to be one state);
    - ``"read_all"``: every account by one Range over the accounts' prefix
      (a scattered read at one revision; ``snapshot``);
    - ``"transfer"``: a Txn comparing both accounts' mod_revisions with
      ``expect`` (the (value, mod_revision) a read returned) and putting
      ``writes`` (success), else ranging both (failure: ``observed``).

    ``observed``: per key of ``keys``, the (value or None, mod_revision) the
    op returned. ``succeeded``: a transfer's Txn answer (None: unknown).
    ``revision``: the response header's revision (a transfer's commit revision)."""

    id: int
    client: int
    kind: str
    keys: tuple[bytes, ...]
    invoke: float
    wall_ms: int
    complete: float = INF
    outcome: Outcome = Outcome.UNKNOWN
    snapshot: bool = False
    amount: int = 0
    expect: tuple[tuple[bytes, int], ...] = ()
    writes: tuple[bytes, ...] = ()
    observed: tuple[tuple[bytes | None, int], ...] = ()
    succeeded: bool | None = None
    revision: int = 0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        def s(v: bytes | None) -> str | None:
            return None if v is None else v.decode("utf-8", "backslashreplace")

        return {
            "id": self.id, "client": self.client, "kind": self.kind, "keys": [s(k) for k in self.keys],
            "invoke": self.invoke, "wall_ms": self.wall_ms, "complete": None if self.complete == INF else self.complete,
            "outcome": self.outcome.value, "snapshot": self.snapshot, "amount": self.amount,
            "expect": [[s(v), r] for v, r in self.expect], "writes": [s(v) for v in self.writes],
            "observed": [[s(v), r] for v, r in self.observed], "succeeded": self.succeeded,
            "revision": self.revision, "error": self.error,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "BankOp":
        def b(x: str | None) -> bytes | None:
            return None if x is None else x.encode()

        return cls(
            id=d["id"], client=d["client"], kind=d["kind"], keys=tuple(k.encode() for k in d["keys"]),
            invoke=d["invoke"], wall_ms=d["wall_ms"], complete=INF if d["complete"] is None else d["complete"],
            outcome=Outcome(d["outcome"]), snapshot=d["snapshot"], amount=d["amount"],
            expect=tuple((v.encode(), r) for v, r in d["expect"]), writes=tuple(v.encode() for v in d["writes"]),
            observed=tuple((b(v), r) for v, r in d["observed"]), succeeded=d["succeeded"],
            revision=d["revision"], error=d["error"],
        )


@dataclass
class FaultEvent:
    kind: str
    start: float
    end: float
    detail: str = ""
    nodes: tuple[int, ...] = ()
    shard: int = 0


@dataclass
class WatchEvent:
    """One event a campaign watcher received (``kind`` 'put' or 'delete')."""

    watcher: int
    stream: int  # which (re)created watch stream delivered it
    kind: str
    key: bytes
    value: bytes
    mod_revision: int
    prev_value: bytes | None  # None: no prev_kv in the event
    prev_mod_revision: int


@dataclass
class WatchStream:
    """A watch stream a campaign watcher created: its start revision and the
    highest revision it knows complete (progress notifies, response headers)."""

    watcher: int
    stream: int
    start_revision: int
    high_water: int = 0
    canceled_reason: str = ""


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    watch_events: list[WatchEvent] = field(default_factory=list)
    watch_streams: list[WatchStream] = field(default_factory=list)
    final_reads: dict[bytes, tuple[bytes | None, int]] = field(default_factory=dict)
    """key -> (value, mod_revision) read linearizably after every fault healed."""
    bank: list[BankOp] = field(default_factory=list)
    """The bank workload's operations (empty for the register workload)."""
    bank_initial: dict[bytes, bytes] = field(default_factory=dict)
    """account key -> the value it held when the bank workload began."""

    def bank_invoke(self, client: int, kind: str, keys: tuple[bytes, ...], now: float, wall_ms: int, **kw: Any) -> BankOp:
        op = BankOp(id=len(self.bank), client=client, kind=kind, keys=keys, invoke=now, wall_ms=wall_ms, **kw)
        self.bank.append(op)
        return op

    def invoke(self, client: int, kind: OpKind, key: bytes, now: float, wall_ms: int, **kw: Any) -> Op:
        op = Op(id=len(self.ops), client=client, kind=kind, key=key, invoke=now, wall_ms=wall_ms, **kw)
        self.ops.append(op)
        return op

    @staticmethod
    def complete(op: Op, now: float, outcome: Outcome, output: Any = None, revision: int = 0, error: str = "") -> None:
        op.outcome = outcome
        op.output = output
        op.revision = revision
        op.error = error
        op.complete = now if outcome is not Outcome.UNKNOWN else INF

    def by_key(self) -> dict[bytes, list[Op]]:
        out: dict[bytes, list[Op]] = {}
        for op in self.ops:
            out.setdefault(op.key, []).append(op)
        return out

    @classmethod
    def load(cls, text: str) -> "History":
        """The inverse of dump (values as UTF-8 text, as the campaign writes them)."""
        d = json.loads(text)

        def b(x: str | None) -> bytes | None:
            return None if x is None else x.encode()

        h = cls()
        for o in d["ops"]:
            kind = OpKind(o["kind"])
            out = o["output"]
            if kind in (OpKind.GET, OpKind.STALE_GET) and isinstance(out, str):
                out = out.encode()
            h.ops.append(
                Op(
                    id=o["id"], client=o["client"], kind=kind, key=o["key"].encode(), invoke=o["invoke"],
                    wall_ms=o["wall_ms"], complete=INF if o["complete"] is None else o["complete"],
                    outcome=Outcome(o["outcome"]), value=b(o["value"]), expect=b(o["expect"]), bound_ms=o["bound_ms"],
                    output=out, revision=o["revision"], error=o["error"],
                )
            )
        h.faults = [FaultEvent(**{**f, "nodes": tuple(f["nodes"])}) for f in d["faults"]]
        h.watch_streams = [WatchStream(**w) for w in d["watch_streams"]]
        h.watch_events = [
            WatchEvent(**{**e, "key": e["key"].encode(), "value": e["value"].encode(), "prev_value": b(e["prev_value"])})
            for e in d["watch_events"]
        ]
        h.final_reads = {k.encode(): (b(v), r) for k, (v, r) in d["final_reads"].items()}
        h.bank = [BankOp.from_json(o) for o in d.get("bank", ())]
        h.bank_initial = {k.encode(): v.encode() for k, v in d.get("bank_initial", {}).items()}
        return h

    def dump(self) -> str:
        return json.dumps(
            {
                "ops": [o.to_json() for o in self.ops],
                "faults": [asdict(f) for f in self.faults],
                "watch_streams": [asdict(w) for w in self.watch_streams],
                "watch_events": [
                    {**asdict(e), "key": e.key.decode("utf-8", "replace"), "value": e.value.decode("utf-8", "replace"),
                     "prev_value": None if e.prev_value is None else e.prev_value.decode("utf-8", "replace")}
                    for e in self.watch_events
                ],
                "final_reads": {
                    k.decode("utf-8", "replace"): [None if v is None else v.decode("utf-8", "replace"), r]
                    for k, (v, r) in self.final_reads.items()
                },
                "bank": [o.to_json() for o in self.bank],
                "bank_initial": {
                    k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in self.bank_initial.items()
                },
            },
            indent=1,
        )
