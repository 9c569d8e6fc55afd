"""The configuration of a fault campaign run (flotilla/campaign/runner.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["CampaignConfig"]


@dataclass
class CampaignConfig:
    seed: int = 1
    ops: int = 2000
    duration_s: float = 60.0
    nemeses: tuple[str, ...] = ("kill_leader", "pause")
    clients: int = 4
    keys: int = 6
    stores: int = 3
    """Store nodes; shards have 3 replicas, so with more, moves can succeed."""
    fault_interval_s: tuple[float, float] = (1.0, 3.0)
    op_timeout_s: float = 5.0
    keep: bool = False
    base_dir: Path | None = None
    lin_max_steps: int = 2_000_000
    workload: str = "register"
    """"register": single-key puts, gets, CAS, deletes, leases (workload.py);
    "bank": transfers between accounts on every shard by Txn (bank.py)."""
    accounts: int = 8
    """Bank accounts (the bank workload), spread over every shard."""
    log: Callable[[str], None] = print
