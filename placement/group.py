"""This server's view of placement's Raft group (group 0 of its GroupHost):
leadership, proposing commands, and waiting for the applied state.

Every job of the leader (placement/nodes.py, placement/leasekeeper.py,
placement/rebalancer.py, placement/duties.py) reaches the group through a
`PlacementGroup`. A server that becomes leader is not *ready* until its duty
loop has done a ReadIndex for the new term (so its state has every entry
committed before the term) and reset the leader's memory: `require_leader`
refuses calls that depend on that memory until then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from placement.commands import Command, Rejected
from placement.codec import encode_command
from placement.errors import LeaderNotReady, NotLeaderError, RejectedError
from placement.machine import PlacementMachine
from placement.state import PlacementState
from raft.core import StateRole
from raft.runtime.clock import Clock
from raft.runtime.host import GroupHost

PLACEMENT_GROUP_ID = 0


class PlacementGroup:
    def __init__(self, node_id: int, host: GroupHost, machine: PlacementMachine, clock: Clock) -> None:
        self.node_id = node_id
        self.host = host
        self.machine = machine
        self.clock = clock
        self.peers: dict[int, str] = {}
        self.address = ""
        self.leader_term = 0
        """The term this server is ready to lead in (0: not ready)."""
        self.ready_at: float | None = None
        """When this server became ready to lead (monotonic), None while not."""
        self.kick = asyncio.Event()
        """Set to run the duty loop now rather than at its next interval."""
        self._applied_fut: asyncio.Future[None] | None = None
        machine.add_apply_listener(self._on_apply)

    @property
    def state(self) -> PlacementState:
        return self.machine.state

    def _on_apply(self) -> None:
        fut, self._applied_fut = self._applied_fut, None
        if fut is not None and not fut.done():
            fut.set_result(None)
        if self.state.ending or (self.ready_at is None and self.is_leader()):
            self.kick.set()  # ending leases; or a new leader (its first entry applied) to get ready

    async def wait_state(self, predicate: Callable[[PlacementState], bool], timeout_s: float) -> bool:
        """Wait until predicate(state) holds after some apply; False at the deadline."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate(self.state):
                    if self._applied_fut is None:
                        self._applied_fut = asyncio.get_running_loop().create_future()
                    await asyncio.shield(self._applied_fut)
        except TimeoutError:
            return False
        return True

    # -- leadership -------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.host.status(PLACEMENT_GROUP_ID).soft_state.role == StateRole.LEADER

    def leader_id(self) -> int:
        return self.host.leader_of(PLACEMENT_GROUP_ID)

    def leader_term_now(self) -> int:
        st = self.host.status(PLACEMENT_GROUP_ID)
        return st.hard_state.term if st.soft_state.role == StateRole.LEADER else 0

    def require_leader(self, *, ready: bool = True) -> None:
        if not self.is_leader():
            lid = self.leader_id()
            raise NotLeaderError(lid, self.address if lid == self.node_id else self.peers.get(lid, ""))
        if ready and (self.ready_at is None or self.leader_term != self.leader_term_now()):
            raise LeaderNotReady("leader not ready yet (catching up after the election); retry")

    # -- proposing ----------------------------------------------------------------------
    async def propose(self, cmd: Command, *, timeout_s: float = 5.0) -> object:
        self.require_leader(ready=False)
        return await self.host.propose(PLACEMENT_GROUP_ID, encode_command(cmd), timeout_s=timeout_s)

    async def propose_ok(self, cmd: Command) -> object:
        """Propose; raise RejectedError if the state machine refused it."""
        out = await self.propose(cmd)
        if isinstance(out, Rejected):
            raise RejectedError(out)
        return out

    async def read_barrier(self) -> None:
        await self.host.read_index(PLACEMENT_GROUP_ID)
