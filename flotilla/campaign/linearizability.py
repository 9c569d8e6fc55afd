"""A Wing–Gong linearizability checker for single-key registers, with Lowe's
memoization (as porcupine does it): pure, no clocks.

The model is a register holding bytes or None (absent) with four operations:

- ``put(v)``        -> state = v
- ``delete``        -> output = 1 if the key existed else 0; state = None
- ``get``           -> output must equal state
- ``cas(e, v)``     -> output True iff state == e, and then state = v

An operation whose outcome is unknown (a write that timed out) has
completion time infinity: it may be linearized anywhere after its invocation,
or not at all. Unknown reads carry no information and are dropped.

The search is depth-first over "which op is linearized next": an op may go
next only if it was invoked before every remaining op completed. Visited
(linearized-set, state) pairs are cached, so each is explored once. The
search has a step budget; running out is a failure (``Result.TIMEOUT``),
never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

__all__ = ["RegOp", "Result", "CheckResult", "check", "INF"]

INF = float("inf")


class Result(str, Enum):
    OK = "ok"
    ILLEGAL = "illegal"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class RegOp:
    """kind: 'put' | 'delete' | 'get' | 'cas'. ``arg``: the value written (put,
    cas), ``expect``: cas's expected value. ``output``: get's value, cas's
    success, delete's count (None for delete: not checked). ``complete`` is INF
    for an op whose outcome is unknown."""

    kind: str
    invoke: float
    complete: float
    arg: bytes | None = None
    expect: bytes | None = None
    output: Any = None
    id: int = 0


@dataclass
class CheckResult:
    result: Result
    steps: int
    detail: str = ""
    partial: list[int] = field(default_factory=list)
    """On failure: ids of the longest linearizable prefix found."""

    @property
    def ok(self) -> bool:
        return self.result is Result.OK


def _step(op: RegOp, state: bytes | None) -> tuple[bool, bytes | None]:
    k = op.kind
    if k == "put":
        return True, op.arg
    if k == "get":
        return op.output == state, state
    if k == "delete":
        if op.output is not None and op.output != (0 if state is None else 1):
            return False, state
        return True, None
    if k == "cas":
        hit = state == op.expect
        if op.complete != INF and op.output is not None and bool(op.output) != hit:
            return False, state
        return True, (op.arg if hit else state)
    raise ValueError(f"unknown register op {k!r}")


def check(ops: Sequence[RegOp], *, initial: bytes | None = None, max_steps: int = 2_000_000) -> CheckResult:
    """Is there a linearization of ``ops`` (one key) from ``initial``?"""
    ops = sorted(ops, key=lambda o: (o.invoke, o.complete))
    n = len(ops)
    if n == 0:
        return CheckResult(Result.OK, 0)
    must = 0  # bitmask of ops that must be linearized (known outcome)
    for i, o in enumerate(ops):
        if o.complete != INF:
            must |= 1 << i
    seen: set[tuple[int, bytes | None]] = set()
    # Stack of (done mask, state, path length); paths rebuilt via parent map for the report.
    stack: list[tuple[int, bytes | None, tuple[int, ...]]] = [(0, initial, ())]
    steps = 0
    best: tuple[int, ...] = ()
    while stack:
        done, state, path = stack.pop()
        if done & must == must:
            return CheckResult(Result.OK, steps)
        if (done, state) in seen:
            continue
        seen.add((done, state))
        steps += 1
        if steps > max_steps:
            return CheckResult(
                Result.TIMEOUT, steps, f"search budget of {max_steps} steps exhausted after {len(best)} of {n} ops",
                [ops[i].id for i in best],
            )
        if len(path) > len(best):
            best = path
        # Candidates: remaining ops invoked before the earliest remaining completion.
        min_ret = INF
        cands: list[int] = []
        for i in range(n):
            if done >> i & 1:
                continue
            o = ops[i]
            if o.invoke > min_ret:
                break  # sorted by invoke: no later op can be a candidate or lower min_ret
            cands.append(i)
            if o.complete < min_ret:
                min_ret = o.complete
        for i in reversed(cands):
            o = ops[i]
            if o.invoke > min_ret:
                continue
            legal, nxt = _step(o, state)
            if legal:
                stack.append((done | (1 << i), nxt, path + (i,)))
    nxt_ops = [ops[i] for i in range(n) if not any(i == j for j in best)][:4]
    detail = (
        f"no linearization: {len(best)} of {n} ops linearize at best; then none of "
        + ", ".join(f"#{o.id} {o.kind}({_s(o.expect) + '->' if o.kind == 'cas' else ''}{_s(o.arg)})={o.output!r} "
                    f"[{o.invoke:.3f},{o.complete:.3f}]" for o in nxt_ops)
        + " fits"
    )
    return CheckResult(Result.ILLEGAL, steps, detail, [ops[i].id for i in best])


def _s(v: bytes | None) -> str:
    return "∅" if v is None else v.decode("utf-8", "backslashreplace")
