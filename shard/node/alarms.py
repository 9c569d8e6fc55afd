"""The node's space quota at run time: measuring the space used on a timer,
raising the NOSPACE alarm, keeping the alarms on disk across restarts, and
defragmenting. The quota's rules (cost, admit, alarms) are pure, in
shard/quota.py; the measurement is a SpaceMeter (shard/space.py)."""

from __future__ import annotations

import contextlib
import logging

from shard.node.state import NodeState
from shard.quota import AlarmType, SpaceQuota
from shard.space import SpaceMeter

log = logging.getLogger(__name__)


class SpaceAlarms:
    def __init__(self, state: NodeState) -> None:
        self._s = state
        self.quota = SpaceQuota(state.cfg.quota_bytes)
        """The node's quota and alarms: its shard leaders refuse growing writes while NOSPACE is active."""
        self.space: SpaceMeter | None = None
        """Measures the space used, every space_check_interval_s; None: no measurement."""
        self._saved_alarms: tuple[int, ...] | None = None

    async def run(self) -> None:
        """Measure the space used on a timer (never per request): over the
        quota raises the NOSPACE alarm (shard/quota.py)."""
        while True:
            self.measure_space()
            self.save_alarms()
            await self._s.clock.sleep(self._s.cfg.space_check_interval_s)

    def _load_alarms(self, space: SpaceMeter) -> None:
        """Arm what the node saved before a restart (once per meter)."""
        saved = space.load_alarms()
        for a in saved:
            with contextlib.suppress(ValueError):  # a type newer than this build: not ours to act on
                self.quota.activate(AlarmType(a))
        self._saved_alarms = saved

    def save_alarms(self) -> None:
        """Keep the active alarms on disk when they changed (an alarm stays
        across a restart until disarmed, as in etcd); the saved ones are
        loaded first. Called by the space loop, and at once by the Alarm RPC."""
        if self.space is None:
            return
        if self._saved_alarms is None:
            self._load_alarms(self.space)
        now = tuple(int(a) for a in self.quota.active())
        if now != self._saved_alarms:
            self.space.save_alarms(now)
            self._saved_alarms = now

    def measure_space(self) -> int:
        """Measure now (with a SpaceMeter); the space used as last measured."""
        if self.space is not None and self.quota.observe(self.space.used_bytes()):
            log.warning(
                "node=%d raised the NOSPACE alarm: %d bytes used, quota %d bytes; writes that add data are refused "
                "until the alarm is disarmed", self._s.node_id, self.quota.used_bytes, self.quota.quota_bytes,
            )
        return self.quota.used_bytes

    async def defragment(self) -> tuple[int, int]:
        """Give the space of deleted versions back (etcd's Defragment): the
        space used before and after, measured."""
        before = self.measure_space()
        if self.space is not None:
            await self.space.defragment()
        return before, self.measure_space()
