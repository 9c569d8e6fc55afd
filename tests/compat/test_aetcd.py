"""The Python `aetcd` client's lock (PyPI; installed with the test extra,
pyproject.toml) against a router joined to placement (3 placement servers,
3 store nodes, 4 shards: flotilla/cluster.py), issue #15: concurrent holders
never overlap, a holder whose lease expires loses the lock, and a waiter's
failed create-if-absent txn leaves the key on the holder's lease.

aetcd_client.py runs the client in its own process (aetcd's protobuf files
cannot share a descriptor pool with flotillapb's), bounded in time. Skips,
saying why, when aetcd is not installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.cluster import Cluster
from flotilla.storecluster import wait_until
from tests.integration.routerproc import cluster_with_router

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).parent / "aetcd_client.py"

if importlib.util.find_spec("aetcd") is None:
    pytest.skip("aetcd is not installed: pip install -e '.[test]' (scripts/test.sh does)", allow_module_level=True)


def _client(endpoint: str, *args: str, timeout: float = 150) -> list[dict]:  # type: ignore[type-arg]
    """aetcd_client.py's steps (one JSON object a line) after it printed "ok"."""
    p = subprocess.run([sys.executable, str(SCRIPT), endpoint, *args], capture_output=True, text=True, timeout=timeout)
    print(p.stdout)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines and lines[-1] == "ok", f"aetcd_client.py {' '.join(args)} failed ({p.returncode}):\n{p.stderr}\n{p.stdout}"
    return [json.loads(line) for line in lines[:-1]]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("aetcd")
    with cluster_with_router(Cluster(tmp, initial_shards=4), tmp) as router:
        probe = "import asyncio, aetcd\nasync def m():\n  async with aetcd.Client(port=%s, timeout=5) as c:\n    await c.get(b'warmup')\nasyncio.run(m())"
        port = router.address.rsplit(":", 1)[1]
        wait_until(
            lambda: subprocess.run([sys.executable, "-c", probe % port], capture_output=True, timeout=30).returncode == 0,
            timeout=60,
            what="aetcd reaching the router",
        )
        yield router.address


def test_aetcd_lock_holders_never_overlap(endpoint: str) -> None:
    """Three clients take aetcd's lock three times each and hold it 50 ms;
    each held section's start and end, on the script's one monotonic
    clock: no two overlap."""
    (lock,) = _client(endpoint, "lock", "py-lock/a", "3", "3", "50")
    spans = sorted((s["start"], s["end"], s["who"]) for s in lock["spans"])
    assert sorted(w for _, _, w in spans) == sorted([0, 1, 2] * 3), spans
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        assert end <= start, f"client {b} entered at {start:.4f} before client {a} left at {end:.4f}: {spans}"


def test_aetcd_lock_holder_whose_lease_expires_loses_the_lock(endpoint: str) -> None:
    (expiry,) = _client(endpoint, "lease-expiry", "py-lock/expiry")
    assert expiry["waited_s"] < 40, expiry


def test_aetcd_waiters_failed_create_if_absent_leaves_the_key_on_the_holders_lease(endpoint: str) -> None:
    """Issue #15: k held under L1; a waiter's If(create(k) = 0) Then(put k
    --lease=L2) fails; L1 still lists k, L2 lists nothing, the key is the
    holder's; aetcd's own waiter fails the same way and waits; revoking L2
    leaves A's lock, revoking L1 deletes k and the waiter gets the lock."""
    steps = _client(endpoint, "create-if-absent", "py-lock/cia")
    assert [s["step"] for s in steps] == ["failed_txn", "handed_over"]
