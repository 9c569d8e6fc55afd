"""The router: the etcd v3 API gateway of Flotilla (DESIGN.md, "Processes").

Pure: ``slots`` (hash tags, replica choice), ``hlc``, ``merge`` (range and
watch merging). Then ``cache`` (the routing cache and its map sources),
``forward`` (calls to store nodes with retries), the etcd services (``kv``,
``watch``, ``lease``, ``maintenance``, ``cluster``), ``etcd_errors`` (the one
table of etcd's codes and texts) and ``server`` (the process, embeddable).
"""

from __future__ import annotations

__all__: list[str] = []
