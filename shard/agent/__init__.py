"""The store agent (runtime side): a store node's side of the conversation
with placement (`flotilla server --store --join ...`).

    agent.py      StoreAgent: composes the jobs below
    config.py     AgentConfig (pure)
    link.py       the placement client (rpc/placementclient.py) and the node's LeaseRegistry over it
    reports.py    Reporter: register, heartbeat (stats, alarms; steps and NOSPACE nodes back), shard reports
    hosting.py    MapFollower: watch the map, host what it assigns, peers' addresses
    destroy.py    DestroyPass: destroy replicas the map and their group no longer want
    steps.py      StepRunner: carry out operator steps as the shard's leader
    transfer.py   may_transfer: when a leader transfer may start (pure)

The agent decides; the node (shard/node/) acts: host_shard, destroy_replica,
split, prepare_merge, commit_merge, and the GroupHost's conf changes and
leader transfers.
"""

from __future__ import annotations

from shard.agent.agent import StoreAgent
from shard.agent.config import AgentConfig
from shard.agent.link import PlacementLeases
from shard.agent.transfer import TRANSFER_LAG_ENTRIES, may_transfer

__all__ = ["TRANSFER_LAG_ENTRIES", "AgentConfig", "PlacementLeases", "StoreAgent", "may_transfer"]
