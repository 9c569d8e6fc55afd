"""Calling Flotilla's own gRPC services, from any role.

A shared leaf package (DESIGN.md, "Dependencies"): it imports nothing of
ours but flotillapb, so the router, the store (shard/), placement and the
`flotilla` command may all use it.

- ``rpc.channels``: the channel options every client of a Flotilla
  process uses (reconnect within a second of a server's restart);
- ``rpc.placementclient``: the client of the placement leader (retries,
  `placement-leader` hints, the map watch stream);
- ``rpc.polling``: gRPC's I/O engine in server processes (set before
  gRPC starts).

This package's namespace is empty: import from the modules.
"""

from __future__ import annotations

__all__: list[str] = []
