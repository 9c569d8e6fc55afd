"""The seam between the runtime and an application's replicated state machine.

shard/ and placement/ implement `StateMachine`. The runtime calls it on the
event loop, in log order, one group at a time:

- `apply(entries, wb)` for committed NORMAL entries (payloads already
  unwrapped from the runtime's proposal envelope; no-op entries of new
  leaders are not passed). It stages its effects *and its applied index* in
  `wb` (the process's RocksDB WriteBatch for this round), so both land
  atomically, and returns one result per entry (handed to whoever proposed
  it). It must be deterministic: same entries, same state, same results on
  every replica.
- `applied_index()` is what it has durably applied (read back at restart);
  the runtime replays the log from there.
- `on_conf_change(index, wb)`, optional: called after the runtime applied
  a conf change entry (before `on_applied_index`), to count it in the
  replicated state (a shard's epoch).
- `snapshot_stream() -> (index, chunks)` and `restore_chunks(chunks, index,
  wb)`, optional together: a streaming state machine. The log store then
  keeps no snapshot data for the group; a snapshot is taken when it is sent
  (at the applied index, from a consistent view, read lazily by the
  transport), and a received one, spooled to a file by the transport, is
  restored from the file in pieces.
- `snapshot()` returns the state at `applied_index()`; `restore(data, index,
  wb)` replaces the state by a snapshot's.
- `release_staged()`, optional: called once the batch holding what the
  calls above staged is written, so the state machine forgets what it kept
  of it (a shard's staged view, which otherwise held the round's WriteBatch
  and its writes until the group's next apply: an idle group's stayed; issue #20).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from raft.core.types import Entry


class WriteBatchLike(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class StateMachine(Protocol):
    def applied_index(self) -> int: ...

    def apply(self, entries: Sequence[Entry], wb: Any) -> list[object]: ...

    def on_applied_index(self, index: int, wb: Any) -> None:
        """Record that everything up to index is applied (also for entries
        that carried nothing for the application, like no-ops and conf changes)."""
        ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes, index: int, wb: Any) -> None: ...


def release_staged(sm: StateMachine) -> None:
    """Tell sm its staged writes are written (StateMachine.release_staged, optional)."""
    release = getattr(sm, "release_staged", None)
    if release is not None:
        release()
