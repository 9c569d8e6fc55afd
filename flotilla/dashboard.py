"""The web dashboard of a placement server (wiring only): served under
/dashboard/ on the process's metrics listener (`--listen-metrics-urls`;
flotilla/metrics.py adds these routes when the process has the placement
role). DESIGN.md, "Dashboard", says why there and not on a port of its own.

    GET /dashboard/                 the page (flotilla/dashboard_ui/index.html)
    GET /dashboard/dashboard.js     its script, /dashboard/dashboard.css its style
    GET /dashboard/api/state?since=N
                                    the document the page polls every second
                                    (placement/dashboard.py): nodes, shards,
                                    operators, and the heat map samples
                                    numbered N and later

Plain HTML, CSS and JavaScript read from the package: no build step, nothing
fetched from elsewhere. The leader answers with its own document; a follower
asks the leader for it (Placement.Dashboard over the placement servers' gRPC
port, as any placement call) and, when no leader answers, shows its own
applied map with a warning (no figures, operators or heat map: those live in
the leader's memory).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc.aio
from aiohttp import web

from flotillapb import placement_pb2 as ppb
from rpc.placementclient import PlacementClient, PlacementUnavailable

if TYPE_CHECKING:
    from placement.server import PlacementServer

log = logging.getLogger(__name__)

UI_DIR = Path(__file__).with_name("dashboard_ui")
FILES = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
PROXY_TIMEOUT_S = 2.0


class Dashboard:
    def __init__(self, pnode: PlacementServer) -> None:
        self.p = pnode
        self._client: PlacementClient | None = None
        self._client_for: tuple[str, ...] = ()
        self._stale_clients: list[PlacementClient] = []
        """Clients of an earlier set of peers, closed with the listener."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/dashboard", self._redirect)
        app.router.add_get("/dashboard/", self._index)
        app.router.add_get("/dashboard/api/state", self._state)
        app.router.add_get("/dashboard/{name}", self._file)
        app.on_cleanup.append(self._close)

    # -- the document -----------------------------------------------------------------------
    def _leader_client(self) -> PlacementClient | None:
        """A client of the other placement servers (it follows the leader hint)."""
        others = tuple(sorted(a for nid, a in self.p.peers.items() if nid != self.p.node_id and a))
        if not others:
            return None
        if self._client is None or others != self._client_for:
            old, self._client = self._client, PlacementClient(others, timeout_s=PROXY_TIMEOUT_S, rounds=1)
            self._client_for = others
            if old is not None:
                self._stale_clients.append(old)
        return self._client

    async def state(self, since: int) -> dict[str, Any]:
        """The leader's document: built here on the leader, fetched from it on a follower."""
        p = self.p
        if p.group.is_leader() and p.ready_at is not None:
            return p.dashboard(since)
        client = self._leader_client()
        why = "this placement server has no peers to ask"
        if client is not None:
            try:
                resp: ppb.DashboardResponse = await client.call("Dashboard", ppb.DashboardRequest(since_sample=since))
                doc: dict[str, Any] = json.loads(resp.json)
                doc["proxied_by"] = p.node_id
                return doc
            except (PlacementUnavailable, grpc.aio.AioRpcError) as exc:
                why = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
        doc = p.dashboard(since)
        doc["warning"] = (
            f"placement server {p.node_id} could not reach the placement leader ({why}): showing its own map, "
            f"without heartbeat figures, operators or heat map"
        )
        return doc

    async def _state(self, request: web.Request) -> web.StreamResponse:
        try:
            since = max(0, int(request.query.get("since", "0")))
        except ValueError:
            raise web.HTTPBadRequest(text="since: want a sample number") from None
        doc = await self.state(since)
        return web.Response(
            body=json.dumps(doc, separators=(",", ":")).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    # -- the page -----------------------------------------------------------------------------
    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard/")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return self._serve("index.html")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request.match_info["name"])

    def _serve(self, name: str) -> web.StreamResponse:
        kind = FILES.get(name)
        if kind is None:
            raise web.HTTPNotFound()
        return web.Response(body=(UI_DIR / name).read_bytes(), content_type=kind, charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def _close(self, app: web.Application) -> None:
        clients = [*self._stale_clients, *([self._client] if self._client is not None else [])]
        self._client, self._stale_clients = None, []
        for c in clients:
            await c.close()
