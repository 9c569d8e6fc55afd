"""The bank workload's checkers (flotilla/campaign/bankcheck.py) on
hand-made histories: each property holds on a good history and is reported
on one that breaks it."""

from __future__ import annotations

from flotilla.campaign.bankcheck import (
    Chains,
    account_value,
    bank_figures,
    build_chains,
    check_bank,
    check_bank_balances,
    check_bank_chains,
    check_bank_linearizable,
    check_bank_revision_order,
    check_bank_snapshots,
    check_bank_watch,
)
from flotilla.campaign.history import BankOp, History, OpKind, Outcome, WatchEvent

A, B, C = b"acct/a", b"acct/b", b"acct/c"
INIT = account_value(100, "init")


def _bank() -> History:
    h = History()
    h.bank_initial = {A: INIT, B: INIT, C: INIT}
    return h


def _transfer(
    h: History, src: bytes, dst: bytes, amount: int, expect: tuple[tuple[bytes, int], tuple[bytes, int]], a: float, b: float,
    rev: int, *, outcome: Outcome = Outcome.OK, succeeded: bool | None = True,
    observed: tuple[tuple[bytes | None, int], ...] = (),
) -> BankOp:
    op = h.bank_invoke(0, "transfer", (src, dst), a, int(a * 1000), amount=amount, expect=expect)
    ba, bb = int(expect[0][0].split(b":")[0]), int(expect[1][0].split(b":")[0])
    op.writes = (account_value(ba - amount, f"t{op.id}"), account_value(bb + amount, f"t{op.id}"))
    op.outcome = outcome
    if outcome is Outcome.OK:
        op.complete, op.succeeded, op.revision, op.observed = b, succeeded, rev, observed
    return op


def _read_all(h: History, seen: dict[bytes, tuple[bytes, int]], a: float, b: float, rev: int) -> BankOp:
    keys = (A, B, C)
    op = h.bank_invoke(1, "read_all", keys, a, int(a * 1000), snapshot=True)
    op.outcome, op.complete, op.revision = Outcome.OK, b, rev
    op.observed = tuple(seen[k] for k in keys)
    return op


def _good() -> History:
    """t0: a -> b 10 at rev 10; then a read of everything."""
    h = _bank()
    _transfer(h, A, B, 10, ((INIT, 1), (INIT, 1)), 0, 1, 10)
    _read_all(h, {A: (b"90:t0", 10), B: (b"110:t0", 10), C: (INIT, 1)}, 2, 3, 12)
    h.final_reads = {A: (b"90:t0", 10), B: (b"110:t0", 10), C: (INIT, 1)}
    return h


def test_a_good_history_passes_every_check() -> None:
    h = _good()
    assert build_chains(h).order == {A: ["init", "t0"], B: ["init", "t0"], C: ["init"]}
    assert check_bank(h) == []
    f = bank_figures(h)
    assert (f["transfers"], f["committed"], f["unknown"], f["reads_all"]) == (1, 1, 0, 1)


def test_a_transfer_applied_on_one_account_only_is_reported() -> None:
    h = _good()
    h.bank.pop()  # the read
    h.final_reads[B] = (INIT, 1)
    kinds = {v.kind for v in check_bank(h)}
    assert {"bank_atomicity", "bank_balance"} <= kinds


def test_a_lost_committed_transfer_is_reported() -> None:
    h = _good()
    h.bank.pop()
    h.final_reads = {A: (INIT, 1), B: (INIT, 1), C: (INIT, 1)}
    kinds = {v.kind for v in check_bank(h)}
    assert "bank_lost_transfer" in kinds and "bank_balance" in kinds


def test_a_transfer_answered_failed_must_not_apply() -> None:
    h = _good()
    h.bank.pop()
    h.bank[0].succeeded = False
    h.bank[0].observed = ((INIT, 1), (INIT, 1))
    assert "bank_aborted_applied" in {v.kind for v in check_bank_chains(h)}


def test_unknown_transfers_may_apply_or_not_but_all_or_nothing() -> None:
    h = _bank()
    _transfer(h, A, B, 10, ((INIT, 1), (INIT, 1)), 0, 1, 0, outcome=Outcome.UNKNOWN)
    _transfer(h, B, C, 5, ((INIT, 1), (INIT, 1)), 0, 1, 0, outcome=Outcome.UNKNOWN)
    h.final_reads = {A: (b"90:t0", 10), B: (b"110:t0", 10), C: (INIT, 1)}  # t0 applied, t1 not
    assert check_bank(h) == []
    assert bank_figures(h)["unknown_applied"] == 1
    h.final_reads = {A: (INIT, 1), B: (INIT, 1), C: (INIT, 1)}  # neither
    assert check_bank(h) == []
    h.final_reads = {A: (b"90:t0", 10), B: (INIT, 1), C: (INIT, 1)}  # half of t0
    assert "bank_atomicity" in {v.kind for v in check_bank(h)}


def test_the_balance_search_finds_a_subset_without_the_chains() -> None:
    h = _bank()
    _transfer(h, A, B, 5, ((INIT, 1), (INIT, 1)), 0, 1, 0, outcome=Outcome.UNKNOWN)
    _transfer(h, A, C, 7, ((INIT, 1), (INIT, 1)), 0, 1, 0, outcome=Outcome.UNKNOWN)
    h.final_reads = {A: (b"93:t1", 9), B: (INIT, 1), C: (b"107:t1", 9)}
    assert check_bank_balances(h, Chains()) == []  # the search alone finds {t1}
    h.final_reads[C] = (b"108:t1", 9)
    (v,) = check_bank_balances(h, Chains())
    assert v.kind == "bank_balance"


def test_a_read_that_sees_half_a_transfer_is_torn() -> None:
    h = _good()
    h.bank[1].observed = ((b"90:t0", 10), (INIT, 1), (INIT, 1))
    kinds = {v.kind for v in check_bank_snapshots(h)}
    assert {"bank_torn_read", "bank_sum", "bank_not_at_revision"} <= kinds


def test_a_read_must_be_the_state_at_its_revision() -> None:
    h = _good()
    h.bank[1].revision = 9  # saw t0's writes (rev 10) yet claims rev 9
    assert {v.kind for v in check_bank_snapshots(h)} == {"bank_not_at_revision"}
    h = _good()
    _read_all(h, {A: (INIT, 1), B: (INIT, 1), C: (INIT, 1)}, 0.5, 4, 11)  # rev 11 is after t0 at rev 10
    assert {v.kind for v in check_bank_snapshots(h)} == {"bank_not_at_revision"}


def test_a_read_after_an_acknowledged_transfer_must_see_it() -> None:
    h = _good()
    assert check_bank_linearizable(h) == []
    _read_all(h, {A: (INIT, 1), B: (INIT, 1), C: (INIT, 1)}, 5, 6, 20)
    (v, *_) = check_bank_linearizable(h)
    assert v.kind == "linearizability"


def test_a_later_write_with_a_lower_revision_is_reported() -> None:
    h = _good()
    _transfer(h, B, C, 1, ((b"110:t0", 10), (INIT, 1)), 2, 3, 8)
    (v,) = check_bank_revision_order(h)
    assert v.kind == "bank_revision_order"
    assert check_bank_revision_order(h, clock_skew_ms=2000) == []  # within the skew allowance
    p = h.invoke(5, OpKind.PUT, b"probe/p0", 4, 4000, value=b"v")
    h.complete(p, 5, Outcome.OK, revision=7)
    assert len(check_bank_revision_order(h)) == 2


def test_both_writes_of_a_transfer_at_one_revision() -> None:
    h = _good()
    h.final_reads[B] = (b"110:t0", 11)
    assert "bank_revision_split" in {v.kind for v in check_bank_chains(h)}


def test_a_watcher_must_get_both_events_of_a_transfer() -> None:
    h = _good()
    ev = {"watcher": 0, "stream": 1, "kind": "put", "mod_revision": 10, "prev_value": None, "prev_mod_revision": 0}
    h.watch_events.append(WatchEvent(key=A, value=b"90:t0", **ev))
    (v,) = check_bank_watch(h)
    assert v.kind == "bank_watch_torn"
    h.watch_events.append(WatchEvent(key=B, value=b"110:t0", **ev))
    assert check_bank_watch(h) == []


def test_a_lost_version_seen_by_a_read_is_reported() -> None:
    """Two transfers both read init and both committed (a lost update):
    one of them is missing from the final chain."""
    h = _good()
    _transfer(h, A, C, 3, ((INIT, 1), (INIT, 1)), 0, 1.5, 11)
    kinds = {v.kind for v in check_bank(h)}
    assert "bank_lost_transfer" in kinds or "linearizability" in kinds


def test_the_history_round_trips_through_json() -> None:
    h = _good()
    _transfer(h, B, C, 2, ((b"110:t0", 10), (INIT, 1)), 4, 5, 0, outcome=Outcome.UNKNOWN)
    back = History.load(h.dump())
    assert back.bank == h.bank and back.bank_initial == h.bank_initial
    assert check_bank(back) == check_bank(h) == []


def test_the_bank_checkers_are_pure() -> None:
    """As tests/unit/test_purity.py checks the other campaign checkers."""
    from pathlib import Path

    from tests.unit.test_purity import forbidden_imports

    path = Path(__file__).resolve().parents[3] / "flotilla/campaign/bankcheck.py"
    assert forbidden_imports(path.read_text(), str(path)) == []
