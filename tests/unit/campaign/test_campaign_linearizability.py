"""The Wing–Gong register checker on known histories (porcupine's style of
tests): linearizable ones pass, the classic anomalies fail, and a search over
its budget is a failure, never a pass."""

from __future__ import annotations

import random

from flotilla.campaign.linearizability import INF, RegOp, Result, check


def put(v: str, a: float, b: float, i: int = 0) -> RegOp:
    return RegOp("put", a, b, arg=v.encode(), id=i)


def get(v: str | None, a: float, b: float, i: int = 0) -> RegOp:
    return RegOp("get", a, b, output=None if v is None else v.encode(), id=i)


def cas(e: str | None, v: str, ok: bool | None, a: float, b: float, i: int = 0) -> RegOp:
    return RegOp("cas", a, b, arg=v.encode(), expect=None if e is None else e.encode(), output=ok, id=i)


def delete(n: int | None, a: float, b: float, i: int = 0) -> RegOp:
    return RegOp("delete", a, b, output=n, id=i)


def test_empty_and_sequential_histories_are_linearizable() -> None:
    assert check([]).ok
    assert check([put("a", 0, 1), get("a", 2, 3), put("b", 4, 5), get("b", 6, 7)]).ok
    assert check([get(None, 0, 1), put("a", 2, 3), delete(1, 4, 5), get(None, 6, 7), delete(0, 8, 9)]).ok


def test_concurrent_read_may_see_either_value() -> None:
    assert check([put("a", 0, 1), put("b", 2, 10), get("a", 3, 4)]).ok
    assert check([put("a", 0, 1), put("b", 2, 10), get("b", 3, 4)]).ok
    # Two concurrent reads disagreeing is fine only in one order.
    assert check([put("a", 0, 1), put("b", 2, 10), get("b", 3, 4), get("a", 5, 6)]).result is Result.ILLEGAL


def test_stale_read_is_not_linearizable() -> None:
    # put b completed before the read began, yet the read saw a.
    r = check([put("a", 0, 1, 1), put("b", 2, 3, 2), get("a", 4, 5, 3)])
    assert r.result is Result.ILLEGAL
    assert "no linearization" in r.detail and r.partial == [1, 2]


def test_read_of_a_value_never_written_fails() -> None:
    assert check([put("a", 0, 1), get("z", 2, 3)]).result is Result.ILLEGAL
    assert check([get("a", 0, 1)]).result is Result.ILLEGAL
    assert check([get("a", 0, 1)], initial=b"a").ok


def test_lost_update_two_successful_cas_from_one_value() -> None:
    # Both CAS a->x and a->y succeed: one update was lost.
    h = [put("a", 0, 1), cas("a", "x", True, 2, 5), cas("a", "y", True, 2, 5), get("y", 6, 7)]
    assert check(h).result is Result.ILLEGAL
    # One succeeds, one fails: fine in either order of reads.
    assert check([put("a", 0, 1), cas("a", "x", True, 2, 5), cas("a", "y", False, 2, 5), get("x", 6, 7)]).ok
    assert check([put("a", 0, 1), cas("a", "x", False, 2, 5), cas("a", "y", True, 2, 5), get("y", 6, 7)]).ok


def test_failed_cas_must_have_seen_another_value() -> None:
    assert check([put("a", 0, 1), cas("a", "x", False, 2, 3)]).result is Result.ILLEGAL
    assert check([cas(None, "x", True, 0, 1), get("x", 2, 3)]).ok
    assert check([put("a", 0, 1), cas(None, "x", True, 2, 3)]).result is Result.ILLEGAL


def test_delete_count_is_checked() -> None:
    assert check([put("a", 0, 1), delete(0, 2, 3)]).result is Result.ILLEGAL
    assert check([delete(1, 0, 1)]).result is Result.ILLEGAL
    assert check([put("a", 0, 5), delete(0, 1, 2)]).ok  # delete before the concurrent put


def test_unknown_write_may_take_effect_late_or_never() -> None:
    # A put that timed out (complete = INF) may appear much later...
    assert check([put("a", 0, 1), put("b", 2, INF), get("a", 5, 6), get("b", 7, 8)]).ok
    # ...or never.
    assert check([put("a", 0, 1), put("b", 2, INF), get("a", 5, 6), get("a", 7, 8)]).ok
    # But not before it was invoked.
    assert check([put("a", 0, 1), get("b", 2, 3), put("b", 4, INF)]).result is Result.ILLEGAL
    # And once seen, it cannot un-happen.
    assert check([put("a", 0, 1), put("b", 2, INF), get("b", 5, 6), get("a", 7, 8)]).result is Result.ILLEGAL


def test_unknown_cas_output_is_not_checked() -> None:
    assert check([put("a", 0, 1), cas("a", "x", None, 2, INF), get("x", 5, 6)]).ok
    assert check([put("a", 0, 1), cas("z", "x", None, 2, INF), get("x", 5, 6)]).result is Result.ILLEGAL


def test_touching_intervals_are_concurrent() -> None:
    # The read completes exactly when the put is invoked: still concurrent (<= rule).
    assert check([put("a", 0, 1), get("b", 2, 3), put("b", 3, 4)]).ok


def _random_linearizable(rng: random.Random, n: int) -> list[RegOp]:
    """Ops applied atomically at distinct points, intervals widened around them."""
    state: bytes | None = None
    out = []
    for i in range(n):
        t = float(i)
        a, b = t - rng.random() * 3, t + rng.random() * 3
        k = rng.choice(["put", "get", "cas", "delete"])
        if k == "put":
            state = f"v{i}".encode()
            out.append(RegOp("put", a, b, arg=state, id=i))
        elif k == "get":
            out.append(RegOp("get", a, b, output=state, id=i))
        elif k == "cas":
            exp = rng.choice([state, b"nope"])
            hit = exp == state
            if hit:
                state = f"v{i}".encode()
            out.append(RegOp("cas", a, b, arg=f"v{i}".encode(), expect=exp, output=hit, id=i))
        else:
            out.append(RegOp("delete", a, b, output=0 if state is None else 1, id=i))
            state = None
    return out


def test_random_linearizable_histories_pass() -> None:
    rng = random.Random(1)
    for _ in range(30):
        assert check(_random_linearizable(rng, 60)).ok


def test_random_histories_with_a_corrupted_read_fail() -> None:
    rng = random.Random(2)
    failed = 0
    for _ in range(30):
        h = _random_linearizable(rng, 40)
        reads = [i for i, o in enumerate(h) if o.kind == "get"]
        if not reads:
            continue
        i = rng.choice(reads)
        h[i] = RegOp("get", h[i].invoke, h[i].complete, output=b"never-written", id=h[i].id)
        assert check(h).result is Result.ILLEGAL
        failed += 1
    assert failed > 20


def test_budget_exhaustion_is_a_timeout_not_a_pass() -> None:
    # Many concurrent puts and a final impossible read: the search must explore a lot.
    h = [put(f"v{i}", 0, 100, i) for i in range(16)] + [get("never", 101, 102, 99)]
    r = check(h, max_steps=500)
    assert r.result is Result.TIMEOUT and not r.ok and "budget" in r.detail
    assert check(h[:-1] + [get("v15", 101, 102, 99)], max_steps=500).ok  # a fitting read is found fast
