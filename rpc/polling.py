"""gRPC's I/O engine in Flotilla's server processes, chosen before gRPC starts.

By default gRPC 1.85 does a channel's and a server's socket I/O on its
EventEngine threads and hands each completed operation to the asyncio
poller thread, which wakes the event loop: one more thread hop, on both
sides, for every message. Its experiments ``event_engine_client`` and
``event_engine_listener`` turned off, the poller thread does the I/O itself.
Measured on a 2-core host (issue #18): a grpc.aio stream ping-pong between
two processes takes 170 us and 120 us of the client's CPU, against 300 us
and 200 us by default; a store sends and receives 8 Raft messages per put,
and the single-client put's p50 fell by about a fifth (bench put --clients 1).

Only servers take this (``flotilla server``, ``flotilla raftnode``: cli.py);
the bench's clients keep gRPC's defaults, so their figures stay comparable
with etcd's measured by the same client. A GRPC_EXPERIMENTS the user set is
kept. gRPC reads the variable once, when it starts, so this must run before
the process imports grpc; a gRPC without these experiments logs "Unknown
experiment" and runs its default engine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

__all__ = ["SERVER_EXPERIMENTS", "use_server_polling"]

SERVER_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def use_server_polling(environ: MutableMapping[str, str] | None = None) -> bool:
    """Ask gRPC for the poller-thread I/O (SERVER_EXPERIMENTS) unless the
    user chose GRPC_EXPERIMENTS or gRPC is already imported (too late to
    apply: nothing changes). Returns whether it set the variable."""
    env = os.environ if environ is None else environ
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in env:
        return False
    env["GRPC_EXPERIMENTS"] = SERVER_EXPERIMENTS
    return True
