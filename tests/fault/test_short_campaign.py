"""The short fault campaign CI runs on every submission (issue #8): a real
cluster, concurrent etcd clients through the router, at least a kill -9 of a
shard leader, a SIGSTOP pause of one, the isolation of a node leading shards
(a network partition) and a kill -9 of the router (restarted on its port),
then every checker; zero violations.
A failing run keeps its directory (history.json, logs) and names it."""

from __future__ import annotations

import pytest

from flotilla.campaign.config import CampaignConfig
from flotilla.campaign.runner import run_campaign
from flotilla.campaign.summary import format_summary, summarize

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def test_short_campaign_has_no_violations(tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg = CampaignConfig(
        seed=8,
        ops=4000,  # enough to outlast one of each nemesis (with fast failover 1500 ops ended before the fourth)
        duration_s=25,
        nemeses=("kill_leader", "pause", "partition_leader", "kill_router"),
        clients=4,
        keys=6,
        fault_interval_s=(1.0, 2.0),
        base_dir=tmp_path_factory.mktemp("campaign"),
    )
    result = run_campaign(cfg)
    summary = summarize([result])
    print(format_summary(summary))
    for kind in cfg.nemeses:  # every run begins with one of each
        assert result.faults[kind] >= 1, result.faults
    assert result.ops_ok > 200, summary
    assert summary["violations_total"] == 0, "\n".join(str(v) for v in result.violations) + f"\nkept: {result.kept_dir}"
