"""The Python `aetcd` client's lock (PyPI, asyncio) against an etcd endpoint;
run by tests/compat/test_aetcd.py in its own process:

    python aetcd_client.py <host:port> lock <name> <clients> <rounds> <hold ms>
    python aetcd_client.py <host:port> lease-expiry <name>
    python aetcd_client.py <host:port> create-if-absent <name>

It imports aetcd and the standard library only: aetcd registers its own
copies of etcd's protobuf files (etcdserverpb, mvccpb, authpb), which cannot
share a process's descriptor pool with flotillapb's. Prints one JSON line
per step and "ok" at the end; exits 1 on the first failure (the reason on
stderr). Every wait has a deadline and every loop a bound.

aetcd's Lock: acquire() grants a lease L and runs
If(create(name) = 0) Then(put name uuid --lease=L) Else(get name); when that
fails it watches for the key's delete from the revision it read, then tries
again with a new lease, until its timeout (acquire returns False then).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"check failed: {what}")


def step(name: str, **data: Any) -> None:
    print(json.dumps({"step": name, **data}), flush=True)


async def until(cond: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Returns once cond() holds, polling every 50 ms; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    for _ in range(10_000):
        if await cond():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)  # sleep-ok: polling interval of a deadline-bounded wait
    raise AssertionError(f"{what}: not within {timeout_s} s")


def client(endpoint: str) -> aetcd.Client:
    host, port = endpoint.rsplit(":", 1)
    return aetcd.Client(host=host, port=int(port), timeout=10)


async def lock_holders(endpoint: str, name: bytes, clients: int, rounds: int, hold_ms: int) -> None:
    """`clients` clients take the lock `rounds` times each and hold it for
    hold_ms; each records when its held section began and ended (one
    process, one monotonic clock)."""
    spans: list[dict[str, Any]] = []
    cs = [client(endpoint) for _ in range(clients)]

    async def holder(who: int, c: aetcd.Client) -> None:
        for _ in range(rounds):
            lock = c.lock(name, ttl=30)
            check(await lock.acquire(timeout=60), f"client {who} acquired the lock within 60 s")
            start = time.monotonic()
            check(await lock.is_acquired(), f"client {who} holds the lock after acquire()")
            await asyncio.sleep(hold_ms / 1000)  # sleep-ok: the held work, not a wait for something
            end = time.monotonic()
            spans.append({"who": who, "start": start, "end": end})
            check(await lock.release(), f"client {who} released the lock it held")

    try:
        await asyncio.wait_for(asyncio.gather(*(holder(i, c) for i, c in enumerate(cs))), timeout=120)
        check(await cs[0].get(name) is None, "the lock key is gone after the last release")
    finally:
        for c in cs:
            await c.close()
    step("lock", spans=spans)


async def lease_expiry(endpoint: str, name: bytes) -> None:
    """A holds the lock on a 2 s lease it does not refresh; B waits. While
    A's lease lives B does not have the lock; once it expires, B takes it
    and A no longer holds it."""
    a, b = client(endpoint), client(endpoint)
    try:
        la = a.lock(name, ttl=2)
        check(await la.acquire(timeout=10), "A acquired the lock")
        assert la.lease is not None
        lease_a = la.lease
        lb = b.lock(name, ttl=30)
        t0 = time.monotonic()
        waiter = asyncio.create_task(lb.acquire(timeout=40))
        # While A's lease still has at least a second to live, B must still be waiting.
        ttl = await lease_a.remaining_ttl()
        if ttl >= 1:
            check(not waiter.done(), f"B is waiting while A's lease has {ttl} s left")
            check(await la.is_acquired(), "A holds the lock while its lease lives")
        check(await asyncio.wait_for(waiter, timeout=45), "B acquired the lock once A's lease expired")
        waited = time.monotonic() - t0
        check(not await la.is_acquired(), "A, whose lease expired, no longer holds the lock")
        check(await lb.is_acquired(), "B holds the lock")
        check(await lease_a.remaining_ttl() <= 0, "A's lease has expired")
        kv = await b.get(name)
        check(kv is not None and lb.lease is not None and kv.lease == lb.lease.id, "the lock key is on B's lease")
        step("lease_expiry", ttl_seen=ttl, waited_s=round(waited, 3))
        check(await lb.release(), "B released the lock")
    finally:
        await a.close()
        await b.close()


async def create_if_absent(endpoint: str, name: bytes) -> None:
    """Issue #15's case: with the lock key k held by A under lease L1, a
    waiter's If(create(k) = 0) Then(put k --lease=L2) fails its compare and
    must leave k on L1 (the key used to move to L2, so revoking L1 left it
    alive and waiters waited for ever). Then B's lock helper makes the same
    failed attempt and waits; revoking L1 deletes k and B gets the lock."""
    a, b, w = client(endpoint), client(endpoint), client(endpoint)
    try:
        la = a.lock(name, ttl=60)
        check(await la.acquire(timeout=10), "A acquired the lock")
        assert la.lease is not None
        l1 = la.lease
        l2 = await w.lease(60)
        tx = w.transactions
        succeeded, _ = await w.transaction(
            compare=[tx.create(name) == 0],
            success=[tx.put(name, b"waiter", lease=l2)],
            failure=[tx.get(name)],
        )
        check(succeeded is False, "the waiter's create-if-absent txn failed its compare")
        check(list(await l1.keys()) == [name], f"L1 still lists the key (it lists {list(await l1.keys())})")
        check(list(await l2.keys()) == [], f"L2 lists no key (it lists {list(await l2.keys())})")
        kv = await w.get(name)
        check(kv is not None and kv.lease == l1.id and kv.value == la.uuid, "the key is A's, on L1")
        step("failed_txn", l1=l1.id, l2=l2.id)

        # B's own helper: its first attempt fails the same way (with its own new lease), then it waits.
        lb = b.lock(name, ttl=60)
        waiter = asyncio.create_task(lb.acquire(timeout=40))

        async def b_tried() -> bool:
            check(not waiter.done() or waiter.result() is not True, "B acquired the lock while A held it")
            return hasattr(lb, "revision")  # set by aetcd's Lock when an attempt fails

        await until(b_tried, 20, "B's first (failed) attempt")
        kv = await w.get(name)
        check(kv is not None and kv.lease == l1.id and kv.value == la.uuid, "after B's failed attempt the key is still A's, on L1")
        check(list(await l1.keys()) == [name], "after B's failed attempt L1 still lists the key")
        check(not waiter.done(), "B waits while A holds the lock")

        await l2.revoke()
        check(await la.is_acquired(), "revoking L2 (the waiter's lease) left A's lock alone")
        await l1.revoke()
        check(await asyncio.wait_for(waiter, timeout=45), "B acquired the lock after L1 was revoked")
        check(not await la.is_acquired(), "A's lock went with L1")
        kv = await w.get(name)
        check(kv is not None and lb.lease is not None and kv.lease == lb.lease.id and kv.value == lb.uuid, "the key is B's, on B's lease")
        step("handed_over", b_lease=lb.lease.id)
        check(await lb.release(), "B released the lock")
    finally:
        for c in (a, b, w):
            await c.close()


async def main(argv: list[str]) -> None:
    endpoint, command, *args = argv
    if command == "lock":
        await lock_holders(endpoint, args[0].encode(), int(args[1]), int(args[2]), int(args[3]))
    elif command == "lease-expiry":
        await lease_expiry(endpoint, args[0].encode())
    elif command == "create-if-absent":
        await create_if_absent(endpoint, args[0].encode())
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python aetcd_client.py <host:port> lock|lease-expiry|create-if-absent ...")
    asyncio.run(main(sys.argv[1:]))
    print("ok", flush=True)
