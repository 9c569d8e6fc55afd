"""Which store nodes the router believes answer (pure: times are passed in).

A node that fails to answer a call (the connection refused or broken, or no
answer within the attempt timeout: killed, paused, cut off) becomes
*suspect* for every shard, not only the shard of the request that found it:
the router's next requests go to other replicas at once instead of each
spending an attempt timeout on the same dead node. A suspect node is probed
again: once its probe is due, exactly one request may try it (the others
keep skipping it while that probe is out); the delay between probes doubles
while the node keeps failing, up to ``max_probe_after_s``, and a replica
naming the node as its shard's leader brings the probe forward, unless the
node failed within the last ``probe_after_s`` (a replica names its dead
leader until it notices; a restarted and re-elected node is back long
before a doubled delay ends). Any answer from
the node, an error included, clears the suspicion.

This is the router's own view, learned from its calls; placement's
node states (up, down) come much later and are not consulted here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Suspicion:
    probe_at: float
    backoff_s: float
    failed_at: float


class NodeHealth:
    def __init__(self, *, probe_after_s: float = 0.5, max_probe_after_s: float = 4.0) -> None:
        if probe_after_s <= 0 or max_probe_after_s < probe_after_s:
            raise ValueError(f"need 0 < probe_after_s <= max_probe_after_s, got {probe_after_s}, {max_probe_after_s}")
        self.probe_after_s = probe_after_s
        self.max_probe_after_s = max_probe_after_s
        self._suspects: dict[int, _Suspicion] = {}

    def failed(self, node_id: int, now: float) -> None:
        """A call to node_id got no answer."""
        s = self._suspects.get(node_id)
        backoff = self.probe_after_s if s is None else min(self.max_probe_after_s, s.backoff_s * 2)
        self._suspects[node_id] = _Suspicion(now + backoff, backoff, now)

    def answered(self, node_id: int) -> None:
        """node_id answered (anything): it is alive and reachable."""
        if self._suspects:
            self._suspects.pop(node_id, None)

    def probe_soon(self, node_id: int, now: float) -> None:
        """Word that node_id may be up (a replica names it as its shard's
        leader): unless it failed within the last probe_after_s (a replica
        names a dead leader until it notices), it may be probed at once."""
        s = self._suspects.get(node_id)
        if s is not None and s.probe_at > now and now - s.failed_at >= self.probe_after_s:
            s.probe_at = now

    def suspect(self, node_id: int) -> bool:
        return node_id in self._suspects

    def due(self, node_id: int, now: float) -> bool:
        """Not suspected, or its probe is due (nothing is reserved)."""
        s = self._suspects.get(node_id)
        return s is None or now >= s.probe_at

    def usable(self, node_id: int, now: float) -> bool:
        """May a request be sent to node_id now? True for a node not
        suspected; for a suspect, True only for the one request that takes a
        due probe (the next probe is then pushed back, so concurrent
        requests keep away while it is out)."""
        s = self._suspects.get(node_id)
        if s is None:
            return True
        if now < s.probe_at:
            return False
        s.probe_at = now + s.backoff_s
        return True

    def suspects(self) -> list[int]:
        return sorted(self._suspects)
