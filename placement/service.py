"""The Placement gRPC service (placement.proto): decode, call, encode.

`abort_with` is the one place placement errors (placement/errors.py) become
gRPC statuses. Lease rejections carry etcd's code and text, the rows of
router/etcd_errors.py (a shared leaf: DESIGN.md, "Dependencies"), so a
router relays them unchanged. A follower answers UNAVAILABLE with the
leader's address in the `placement-leader` trailing metadata
(rpc/placementclient.py follows it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio

from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from placement import convert
from placement.commands import KeyChange, RejectCode
from placement.errors import LeaderNotReady, NotLeaderError, OperatorError, PlacementError, RejectedError
from placement.model import NodeKind
from placement.rebalancer import op_to_pb
from placement.server import PlacementServer
from raft.core import ProposalDropped
from router.etcd_errors import ROWS as ETCD_ROWS
from rpc.placementclient import LEADER_METADATA_KEY

_EXPECTED = (PlacementError, ProposalDropped, TimeoutError)
"""What an RPC may meet: answered with a status by abort_with; anything else is a bug."""


_REJECT_STATUS: dict[RejectCode, tuple[grpc.StatusCode, str | None]] = {
    # etcd's own: code and text, since clients match the text.
    RejectCode.LEASE_NOT_FOUND: ETCD_ROWS["lease_not_found"],
    RejectCode.LEASE_EXISTS: ETCD_ROWS["lease_exist"],
    RejectCode.LEASE_TTL_TOO_LARGE: ETCD_ROWS["lease_ttl_too_large"],
    # etcd's auth rows (placement/authbook.py, placement/authservice.py).
    RejectCode.ROOT_USER_NOT_EXIST: ETCD_ROWS["root_user_not_exist"],
    RejectCode.ROOT_ROLE_NOT_EXIST: ETCD_ROWS["root_role_not_exist"],
    RejectCode.USER_ALREADY_EXIST: ETCD_ROWS["user_already_exist"],
    RejectCode.USER_EMPTY: ETCD_ROWS["user_empty"],
    RejectCode.USER_NOT_FOUND: ETCD_ROWS["user_not_found"],
    RejectCode.ROLE_ALREADY_EXIST: ETCD_ROWS["role_already_exist"],
    RejectCode.ROLE_NOT_FOUND: ETCD_ROWS["role_not_found"],
    RejectCode.ROLE_EMPTY: ETCD_ROWS["role_empty"],
    RejectCode.AUTH_FAILED: ETCD_ROWS["auth_failed"],
    RejectCode.PERMISSION_DENIED: ETCD_ROWS["permission_denied"],
    RejectCode.ROLE_NOT_GRANTED: ETCD_ROWS["role_not_granted"],
    RejectCode.PERMISSION_NOT_GRANTED: ETCD_ROWS["permission_not_granted"],
    RejectCode.AUTH_NOT_ENABLED: ETCD_ROWS["auth_not_enabled"],
    RejectCode.INVALID_AUTH_MGMT: ETCD_ROWS["invalid_auth_mgmt"],
    RejectCode.AUTH_OLD_REVISION: ETCD_ROWS["auth_old_revision"],
    RejectCode.PERMISSION_NOT_GIVEN: ETCD_ROWS["permission_not_given"],
    # placement's own: the state's message says what to change.
    RejectCode.INVALID: (grpc.StatusCode.INVALID_ARGUMENT, None),
    RejectCode.NOT_BOOTSTRAPPED: (grpc.StatusCode.FAILED_PRECONDITION, None),
    RejectCode.ALREADY_BOOTSTRAPPED: (grpc.StatusCode.ALREADY_EXISTS, None),
    RejectCode.NO_STORE_NODES: (grpc.StatusCode.FAILED_PRECONDITION, None),
    RejectCode.NODE_NOT_FOUND: (grpc.StatusCode.NOT_FOUND, None),
}


async def abort_with(context: grpc.aio.ServicerContext, err: BaseException) -> None:  # type: ignore[type-arg]
    """The one place placement errors become gRPC statuses."""
    if isinstance(err, NotLeaderError):
        if err.address:
            context.set_trailing_metadata(((LEADER_METADATA_KEY, err.address),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
    if isinstance(err, LeaderNotReady):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"placement: {err}")
    if isinstance(err, RejectedError):
        code, text = _REJECT_STATUS[err.rejected.code]
        await context.abort(code, text or f"placement: {err.rejected.message}")
    if isinstance(err, OperatorError):
        await context.abort(err.code, str(err))
    if isinstance(err, ProposalDropped):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"placement: proposal dropped ({err}); retry")
    if isinstance(err, TimeoutError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "placement: timed out; the outcome is unknown")
    raise err


class PlacementService(placement_pb2_grpc.PlacementServicer):
    def __init__(self, server: PlacementServer) -> None:
        self.s = server

    def _header(self) -> epb.ResponseHeader:
        return epb.ResponseHeader(cluster_id=self.s.state.cluster_id, member_id=self.s.node_id)

    async def Bootstrap(self, request: ppb.BootstrapRequest, context: grpc.aio.ServicerContext) -> ppb.BootstrapResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            created = await self.s.bootstrapper.bootstrap(request.slot_count or 1024, request.initial_shards, request.replicas or 3)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.BootstrapResponse(already_bootstrapped=not created, map=convert.map_to_pb(self.s.state))

    async def GetCluster(self, request: ppb.GetClusterRequest, context: grpc.aio.ServicerContext) -> ppb.GetClusterResponse:  # type: ignore[type-arg]  # noqa: N802
        st = self.s.state
        servers = {**self.s.peers, self.s.node_id: self.s.address}
        return ppb.GetClusterResponse(
            cluster_id=st.cluster_id,
            slot_count=st.slot_count,
            map_version=st.map_version,
            leader_node_id=self.s.group.leader_id(),
            placement_servers=[spb.NodeAddress(node_id=n, address=a) for n, a in sorted(servers.items())],
        )

    async def RegisterNode(self, request: ppb.RegisterNodeRequest, context: grpc.aio.ServicerContext) -> ppb.RegisterNodeResponse:  # type: ignore[type-arg]  # noqa: N802
        if request.kind not in (NodeKind.STORE, NodeKind.ROUTER) or not request.address:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "placement: RegisterNode needs kind STORE or ROUTER and an address")
        try:
            nid = await self.s.nodes.register_node(request.node_id, NodeKind(request.kind), request.address, convert.labels_from_pb(request.labels))
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.RegisterNodeResponse(node_id=nid, map_version=self.s.state.map_version, cluster_id=self.s.state.cluster_id)

    async def StoreHeartbeat(self, request: ppb.StoreHeartbeatRequest, context: grpc.aio.ServicerContext) -> ppb.StoreHeartbeatResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            state, acked = await self.s.nodes.heartbeat(request)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.StoreHeartbeatResponse(
            map_version=self.s.state.map_version,
            state=int(state),
            steps=self.s.rebalancer.steps_for(request.node_id),
            nospace_nodes=self.s.nodes.nospace_nodes(),
            acked_seq=acked,
        )

    async def ReportShard(self, request: ppb.ReportShardRequest, context: grpc.aio.ServicerContext) -> ppb.ReportShardResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            out = await self.s.nodes.report_shard(convert.shard_from_pb(request.descriptor, request.term))
        except _EXPECTED as exc:
            await abort_with(context, exc)
        resp = ppb.ReportShardResponse(outcome=int(out.outcome), map_version=self.s.state.map_version)
        if out.current is not None:
            resp.current.CopyFrom(convert.shard_to_pb(out.current, self.s.state.nodes))
        return resp

    async def GetMap(self, request: ppb.GetMapRequest, context: grpc.aio.ServicerContext) -> ppb.GetMapResponse:  # type: ignore[type-arg]  # noqa: N802
        if request.linearizable:
            try:
                await self.s.group.read_barrier()
            except TimeoutError as exc:
                await abort_with(context, exc)
        return ppb.GetMapResponse(
            map=convert.map_to_pb(self.s.state),
            shard_stats=self.s.nodes.leader_shard_stats(),
            suspect_node_ids=self.s.rebalancer.suspects(self.s.clock.monotonic()),
        )

    async def WatchMap(self, request: ppb.WatchMapRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[ppb.WatchMapResponse]:  # type: ignore[override, type-arg]  # noqa: N802
        # No await between subscribing and taking the changes since the
        # watcher's version (or the first part of the whole map): no change
        # is missed. Parts of a large map are built one at a time, each sent
        # before the next is built; changes applied meanwhile queue in the
        # subscriber and follow the last part (convert.iter_map_parts).
        sub = self.s.hub.subscribe()
        missed = self.s.hub.since(request.since_map_version, self.s.state.map_version)
        try:
            if missed is not None:
                for item in missed:
                    yield item
            else:
                for part in convert.iter_map_parts(self.s.state):
                    yield part
            while True:
                item = await sub.get()
                if item is None:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "placement: map watcher fell behind; watch again")
                yield item
        finally:
            self.s.hub.unsubscribe(sub)

    async def LeaseGrant(self, request: epb.LeaseGrantRequest, context: grpc.aio.ServicerContext) -> epb.LeaseGrantResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            lease = await self.s.leases.grant(request.TTL, request.ID)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return epb.LeaseGrantResponse(header=self._header(), ID=lease.lease_id, TTL=lease.ttl_s)

    async def LeaseRevoke(self, request: epb.LeaseRevokeRequest, context: grpc.aio.ServicerContext) -> epb.LeaseRevokeResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            await self.s.leases.revoke(request.ID)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return epb.LeaseRevokeResponse(header=self._header())

    async def LeaseKeepAlive(self, request_iterator: AsyncIterator[epb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[epb.LeaseKeepAliveResponse]:  # type: ignore[override, type-arg]  # noqa: N802
        async for req in request_iterator:
            try:
                ttl = self.s.leases.keep_alive(req.ID)
            except PlacementError as exc:
                await abort_with(context, exc)
            yield epb.LeaseKeepAliveResponse(header=self._header(), ID=req.ID, TTL=ttl)

    async def LeaseTimeToLive(self, request: epb.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext) -> epb.LeaseTimeToLiveResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            out = self.s.leases.time_to_live(request.ID)
        except PlacementError as exc:
            await abort_with(context, exc)
        if out is None:
            return epb.LeaseTimeToLiveResponse(header=self._header(), ID=request.ID, TTL=-1)
        left, granted, keys = out
        return epb.LeaseTimeToLiveResponse(header=self._header(), ID=request.ID, TTL=left, grantedTTL=granted, keys=list(keys) if request.keys else [])

    async def LeaseLeases(self, request: epb.LeaseLeasesRequest, context: grpc.aio.ServicerContext) -> epb.LeaseLeasesResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            await self.s.group.read_barrier()
        except TimeoutError as exc:
            await abort_with(context, exc)
        return epb.LeaseLeasesResponse(header=self._header(), leases=[epb.LeaseStatus(ID=lid) for lid in sorted(self.s.state.leases)])

    async def LeaseAttach(self, request: ppb.LeaseAttachRequest, context: grpc.aio.ServicerContext) -> ppb.LeaseAttachResponse:  # type: ignore[type-arg]  # noqa: N802
        changes = [KeyChange(c.lease_id, bytes(c.key), c.detach) for c in request.changes]
        try:
            missing = await self.s.leases.attach(changes)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.LeaseAttachResponse(lease_not_found=list(missing))

    async def SetPeers(self, request: ppb.SetPeersRequest, context: grpc.aio.ServicerContext) -> ppb.SetPeersResponse:  # type: ignore[type-arg]  # noqa: N802
        for p in request.peers:
            if p.node_id != self.s.node_id:
                self.s.peers[p.node_id] = p.address
                self.s.host.set_peer(p.node_id, p.address)
        return ppb.SetPeersResponse()

    async def Status(self, request: ppb.StatusRequest, context: grpc.aio.ServicerContext) -> ppb.StatusResponse:  # type: ignore[type-arg]  # noqa: N802
        return self.s.status()

    async def Dashboard(self, request: ppb.DashboardRequest, context: grpc.aio.ServicerContext) -> ppb.DashboardResponse:  # type: ignore[type-arg]  # noqa: N802
        # The leader's document only: a follower's dashboard asks here for what only the leader holds.
        try:
            self.s.require_leader()
        except _EXPECTED as exc:
            await abort_with(context, exc)
        doc = self.s.dashboard(request.since_sample)
        return ppb.DashboardResponse(json=json.dumps(doc, separators=(",", ":")).encode())

    # -- rebalancing (placement/rebalancer.py) ------------------------------------------------
    async def ListOperators(self, request: ppb.ListOperatorsRequest, context: grpc.aio.ServicerContext) -> ppb.ListOperatorsResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            self.s.require_leader()
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.ListOperatorsResponse(operators=self.s.rebalancer.list())

    async def _operator(self, context: grpc.aio.ServicerContext, start: Callable[[], object]) -> ppb.OperatorResponse:  # type: ignore[type-arg]
        try:
            op = start()
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.OperatorResponse(operator=op_to_pb(op, self.s.clock.monotonic()))  # type: ignore[arg-type]

    async def CancelOperator(self, request: ppb.CancelOperatorRequest, context: grpc.aio.ServicerContext) -> ppb.CancelOperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            rb = self.s.rebalancer.cancel(request.id)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        resp = ppb.CancelOperatorResponse()
        if rb is not None:
            resp.rollback.CopyFrom(op_to_pb(rb, self.s.clock.monotonic()))
        return resp

    async def Split(self, request: ppb.SplitRequest, context: grpc.aio.ServicerContext) -> ppb.OperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        return await self._operator(context, lambda: self.s.rebalancer.split(request.shard_id, request.at_slot))

    async def Merge(self, request: ppb.MergeRequest, context: grpc.aio.ServicerContext) -> ppb.OperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        # shard_id is the target (it keeps its id and takes the other's slots).
        return await self._operator(context, lambda: self.s.rebalancer.merge(request.shard_id, request.other_shard_id))

    async def Move(self, request: ppb.MoveRequest, context: grpc.aio.ServicerContext) -> ppb.OperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        return await self._operator(context, lambda: self.s.rebalancer.move(request.shard_id, request.from_node, request.to_node))

    async def TransferLeader(self, request: ppb.TransferLeaderRequest, context: grpc.aio.ServicerContext) -> ppb.OperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        return await self._operator(context, lambda: self.s.rebalancer.transfer_leader(request.shard_id, request.node_id))

    async def Drain(self, request: ppb.DrainRequest, context: grpc.aio.ServicerContext) -> ppb.DrainResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            state = await self.s.rebalancer.drain(request.node_id, request.undo)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.DrainResponse(state=int(state))
