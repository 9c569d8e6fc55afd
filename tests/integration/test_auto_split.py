"""Automatic split with real processes (issue #7): placement started with a
low split threshold (--split-keys) splits a shard under write load on its
own. Checked: the map shows more shards; a history of puts and linearizable
reads recorded while it happened (tests/integration/history.py) is
linearizable, so no read during the split was stale; and after it, every
key reads back its last acknowledged value (read_all, part of the history).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flotilla.cluster import Cluster, running, wait_until
from tests.integration.history import Load

pytestmark = pytest.mark.integration

SPLIT_KEYS = 24


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("autosplit"),
        initial_shards=1,
        placement_args=["--split-keys", str(SPLIT_KEYS)],
    )
    with running(c):
        yield c


def test_shard_splits_on_its_own_under_load_and_no_read_is_stale(cluster: Cluster) -> None:
    m0 = cluster.get_map()
    assert len(m0.shards) == 1
    load = Load(cluster, keys=tuple(b"auto-%d" % i for i in range(2 * SPLIT_KEYS + 8)), pause_s=0.005)
    with load:
        wait_until(lambda: len(cluster.get_map().shards) >= 2, timeout=120, what="the scheduler splits the shard")
        m = cluster.get_map()
        # keep the load running across the new shards for a moment: reads and writes routed by the new map
        acked = load.acked_puts()
        wait_until(lambda: load.acked_puts() >= acked + 20, timeout=60, what="writes go on after the split")
    load.read_all()
    load.check(min_acked=50, min_reads=20)
    assert len(m.shards) >= 2
    owned = sorted((r.start, r.end) for s in m.shards for r in s.descriptor.slots)
    assert owned[0][0] == 0 and owned[-1][1] == m.slot_count  # every slot still owned
    print(f"shards {len(m.shards)}, acked puts {load.acked_puts()}, reads {load.reads()}, errors {load.errors}")
