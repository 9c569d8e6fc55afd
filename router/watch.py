"""The etcd Watch service: one client stream, many shard streams merged.

For each watch the client creates, the router opens a ``Store.Watch`` stream
on one replica of every shard that may hold keys of the watched range (one
shard for a single key or a range inside one hash tag), from the watch's
start revision, with prev_kv and the NOPUT/NODELETE filters passed through.
``merge.WatchMerger`` releases the shards' events in revision order, up to
the least frontier (last event, or progress revision: the shard's closed
timestamp) over the shards, so the client sees one history with growing
revisions. The cost: an event waits until every other shard of the watch has
reported progress past it, about one closed-timestamp interval when they are
idle (the router asks shards for progress every ``shard_progress_ms``).

- start_revision 0 means "from now" on every shard; events are released once
  every shard has said where its "now" was.
- A shard stream that breaks or reports a routing error is resumed on
  another replica (or the shards that now own its slots, after a split)
  from its frontier + 1.
- A start revision below a shard's compaction cancels the watch the way
  etcd does: a response with compact_revision set and canceled = true.
- progress_notify: an empty response at the merged frontier whenever no
  event was sent for ``progress_notify_interval_s`` (etcd: 10 minutes).
- A progress request (WatchProgressRequest) gets one response with
  watch_id -1 at the least frontier over the stream's watches.
- Fragmenting large responses is not done: each response carries whole
  revisions.
- Memory per client is bounded, as etcd bounds it (its watch stream's
  buffered send channel, "victim" watchers and syncVictimsLoop): the
  responses waiting to be sent to one client stream hold at most
  ``send_queue_bytes`` of events (one response may go past it when nothing
  else waits, so a large revision still goes through). A watch whose
  released events do not fit is paused: its shard streams are closed and
  what it had not yet queued is dropped, remembering the revision up to
  which every event was queued. Once the client has taken the queue down to
  half, every paused watch is resumed from the next revision on every shard
  it reads (the shards' history), so no event is lost and none is sent
  twice. If that revision was compacted meanwhile, the watch is canceled
  with compact_revision set, as etcd cancels a watcher that fell behind a
  compaction. Progress notifications that do not fit are skipped (a later
  one says more). ``WatchSession.queued_bytes`` is the measure, and
  ``max_queued_bytes`` / ``pauses`` what a test can read.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from router import merge, slots
from router.cache import RoutingCache, ShardRoute
from router.etcd_errors import from_kv_error
from router.forward import Forwarder

log = logging.getLogger(__name__)


SINGLE_SHARD_PROGRESS_MS = 1000
"""Progress interval of the shard stream of a watch that reads one shard (see WatchSession._progress_ms)."""


@dataclass(frozen=True, slots=True)
class WatchConfig:
    progress_notify_interval_s: float = 600.0
    shard_progress_ms: int = 100
    send_queue_bytes: int = 4 * 1024 * 1024
    """Events waiting to be sent to one client stream, at most (serialized size)."""
    handover_timeout_s: float = 10.0
    """How long a watch waits for the map to show who owns a split (or merged) shard's slots."""


@dataclass(frozen=True, slots=True)
class _Batch:
    shard_id: int
    events: tuple[Any, ...] = ()
    progress_revision: int = 0
    compact_revision: int = 0
    moved: tuple[int, ...] = ()  # the shard's slots now belong to these shards
    cancel_reason: str = ""  # the shard refused the watch for good
    gen: int = 0  # the shard stream that sent it (a restarted stream's older batches are dropped)


class _Watch:
    def __init__(self, watch_id: int, create: epb.WatchCreateRequest, shard_ids: list[int]) -> None:
        self.watch_id = watch_id
        self.create = create
        self.merger = merge.WatchMerger(shard_ids, create.start_revision)
        self.queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.gens: dict[int, int] = {}
        """Per shard: the generation of its current stream task."""
        self.originals: dict[int, ShardRoute | None] = {}
        """Per shard: the route (slots) its stream task watches, as it was when
        the watch first read that shard, so that a restarted task still hands
        over slots that moved meanwhile."""
        self.runner: asyncio.Task[None] | None = None
        self.delivered = max(0, create.start_revision - 1)
        """Every event of the watch with a revision up to this is queued for the client (0: none yet, from now)."""
        self.resume_from = 0
        """While paused: the revision to resume every shard stream from."""

    def restart(self, start: int) -> None:
        """Fresh state to resume from `start` on the same shards (after a pause)."""
        self.merger = merge.WatchMerger(self.merger.sources, start)
        self.queue = asyncio.Queue()
        self.delivered = start - 1


def _chunks(events: list[Any], target_bytes: int) -> list[list[Any]]:
    """Events cut into responses of about target_bytes, never inside a revision."""
    out: list[list[Any]] = []
    cur: list[Any] = []
    size = 0
    for ev in events:
        n = ev.ByteSize() + 4
        if cur and size + n > target_bytes and merge.event_revision(ev) != merge.event_revision(cur[-1]):
            out.append(cur)
            cur, size = [], 0
        cur.append(ev)
        size += n
    if cur:
        out.append(cur)
    return out


class WatchSession:
    """One client's Watch stream."""

    def __init__(self, fwd: Forwarder, cache: RoutingCache, cfg: WatchConfig, stamp: Any) -> None:
        self._fwd = fwd
        self._cache = cache
        self._cfg = cfg
        self._stamp = stamp
        self._out: asyncio.Queue[tuple[epb.WatchResponse, int] | None] = asyncio.Queue()
        self._watches: dict[int, _Watch] = {}
        self._victims: dict[int, _Watch] = {}
        self._next_id = 0
        self._turn = itertools.count()
        self.queued_bytes = 0
        """Serialized size of the event responses waiting to be sent."""
        self.max_queued_bytes = 0
        self.max_response_bytes = 0
        self.pauses = 0
        self.resumes = 0
        self.permit: Callable[[epb.WatchCreateRequest], Awaitable[str]] | None = None
        """With auth (router/auth.py): etcd's cancel reason for a create the caller may not make, "" if allowed."""

    def _header(self, revision: int) -> epb.ResponseHeader:
        h = epb.ResponseHeader()
        self._stamp(h, revision)
        return h

    async def run(self, requests: AsyncIterator[epb.WatchRequest]) -> AsyncIterator[epb.WatchResponse]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                item = await self._out.get()
                if item is None:
                    return
                resp, size = item
                self.queued_bytes -= size
                if self._victims and self.queued_bytes <= self._cfg.send_queue_bytes // 2:
                    self._resume_victims()
                yield resp
        finally:
            reader.cancel()
            for w in list(self._watches.values()):
                self._stop(w)

    def _send(self, resp: epb.WatchResponse) -> None:
        """Queue a control response (created, canceled, progress): never refused."""
        self._out.put_nowait((resp, 0))

    def _offer(self, resp: epb.WatchResponse) -> bool:
        """Queue an event response if it fits under send_queue_bytes (or
        nothing else waits); False: it does not, and nothing was queued."""
        size = resp.ByteSize()
        self.max_response_bytes = max(self.max_response_bytes, size)
        if self.queued_bytes > 0 and self.queued_bytes + size > self._cfg.send_queue_bytes:
            return False
        self.queued_bytes += size
        self.max_queued_bytes = max(self.max_queued_bytes, self.queued_bytes)
        self._out.put_nowait((resp, size))
        return True

    def _pause(self, w: _Watch, resume_from: int) -> None:
        """The client is not taking events fast enough: close the watch's
        shard streams and drop what it had not queued (etcd's victim)."""
        for t in w.tasks.values():
            t.cancel()
        w.tasks = {}
        w.resume_from = resume_from
        self._victims[w.watch_id] = w
        self.pauses += 1
        log.debug("watch=%d paused: %d bytes waiting for the client; resumes from revision %d", w.watch_id, self.queued_bytes, resume_from)

    def _resume_victims(self) -> None:
        victims, self._victims = self._victims, {}
        for wid, w in victims.items():
            if self._watches.get(wid) is not w:
                continue  # canceled meanwhile
            w.restart(w.resume_from)
            for sid in w.merger.sources:
                self._start_stream(w, sid, w.resume_from, w.originals.get(sid))
            w.runner = asyncio.create_task(self._merge(w))
            self.resumes += 1

    async def _read(self, requests: AsyncIterator[epb.WatchRequest]) -> None:
        try:
            async for req in requests:
                which = req.WhichOneof("request_union")
                if which == "create_request":
                    reason = "" if self.permit is None else await self.permit(req.create_request)
                    if reason:  # etcd: created and canceled at once, watch id -1, the refusal as reason
                        self._send(epb.WatchResponse(header=self._header(self._fwd.last_revision), watch_id=-1, created=True,
                                                     canceled=True, cancel_reason=reason))
                        continue
                    self._create(req.create_request)
                elif which == "cancel_request":
                    self._cancel(req.cancel_request.watch_id)
                elif which == "progress_request":
                    rev = min((w.delivered if w.watch_id in self._victims else w.merger.frontier() for w in self._watches.values()), default=self._fwd.last_revision)
                    self._send(epb.WatchResponse(header=self._header(rev), watch_id=-1))
        except grpc.aio.AioRpcError:
            self._out.put_nowait(None)  # the client's stream broke: the session ends
        # The client closed its side (half-close): like etcd's watch server,
        # keep serving the watches it made until it cancels the call.

    def _create(self, create: epb.WatchCreateRequest) -> None:
        if not create.key:
            create.key = b"\x00"  # as etcd: the smallest key
        wid = create.watch_id
        if wid == 0:
            while self._next_id in self._watches:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        elif wid in self._watches:
            self._send(
                epb.WatchResponse(
                    header=self._header(self._fwd.last_revision),
                    watch_id=-1,
                    created=True,
                    canceled=True,
                    cancel_reason="mvcc: duplicate watch ID",
                )
            )
            return
        try:
            shard_ids = [s.shard_id for s in self._cache.shards_for_range(create.key, create.range_end)]
        except Exception as exc:  # noqa: BLE001 - the map is empty: say so on the stream
            self._send(epb.WatchResponse(watch_id=wid, created=True, canceled=True, cancel_reason=str(exc)))
            return
        w = _Watch(wid, create, shard_ids)
        self._watches[wid] = w
        self._send(epb.WatchResponse(header=self._header(self._fwd.last_revision), watch_id=wid, created=True))
        for sid in shard_ids:
            self._start_stream(w, sid, create.start_revision)
        w.runner = asyncio.create_task(self._merge(w))

    def _cancel(self, wid: int) -> None:
        w = self._watches.get(wid)
        if w is None:
            return
        self._stop(w)
        self._send(epb.WatchResponse(header=self._header(w.merger.frontier()), watch_id=wid, canceled=True))

    def _stop(self, w: _Watch) -> None:
        self._watches.pop(w.watch_id, None)
        self._victims.pop(w.watch_id, None)
        for t in w.tasks.values():
            t.cancel()
        if w.runner is not None and w.runner is not asyncio.current_task():
            w.runner.cancel()

    async def _merge(self, w: _Watch) -> None:
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        notify = w.create.progress_notify
        interval = self._cfg.progress_notify_interval_s
        while True:
            try:
                timeout = max(0.0, last_sent + interval - loop.time()) if notify else None
                async with asyncio.timeout(timeout):
                    b = await w.queue.get()
            except TimeoutError:
                # Skipped when the client is behind: a later notification says more.
                self._offer(epb.WatchResponse(header=self._header(w.merger.frontier()), watch_id=w.watch_id))
                last_sent = loop.time()
                continue
            if b.gen != w.gens.get(b.shard_id, 0):
                continue  # from a stream task restarted since
            if b.compact_revision:
                self._stop(w)
                self._send(
                    epb.WatchResponse(
                        header=self._header(self._fwd.last_revision),
                        watch_id=w.watch_id,
                        compact_revision=b.compact_revision,
                        canceled=True,
                    )
                )
                return
            if b.cancel_reason:
                self._stop(w)
                self._send(
                    epb.WatchResponse(
                        header=self._header(self._fwd.last_revision), watch_id=w.watch_id, canceled=True, cancel_reason=b.cancel_reason
                    )
                )
                return
            if b.moved:
                start = w.merger.source_frontier(b.shard_id) + 1
                released = w.merger.replace(b.shard_id, b.moved)
                w.tasks.pop(b.shard_id, None)
                w.originals.pop(b.shard_id, None)
                for sid in b.moved:
                    running = w.tasks.pop(sid, None)
                    if running is None:
                        self._start_stream(w, sid, start)
                        continue
                    # A merge into a shard this watch reads: the moved shard's
                    # events after its frontier, up to its freeze, are now
                    # history of the target's slots, which the target's
                    # running stream (live since before the merge) never
                    # reads. Restart it from the lower frontier of the two
                    # (replace lowered it in the merger); what it sends again
                    # is dropped as already released.
                    running.cancel()
                    self._start_stream(w, sid, w.merger.source_frontier(sid) + 1, w.originals.get(sid))
            else:
                released = w.merger.add(b.shard_id, b.events, b.progress_revision)
            chunks = _chunks(released, max(1, self._cfg.send_queue_bytes // 4))
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                rev = max(w.merger.frontier(), merge.event_revision(chunk[-1])) if last else merge.event_revision(chunk[-1])
                resp = epb.WatchResponse(header=self._header(rev), watch_id=w.watch_id)
                resp.events.extend(chunk)
                if not self._offer(resp):
                    # Everything up to w.delivered is queued; this chunk (and
                    # all after it) comes again from the shards.
                    self._pause(w, w.delivered + 1 if w.delivered > 0 else merge.event_revision(chunk[0]))
                    return
                w.delivered = max(w.delivered, merge.event_revision(chunk[-1]))
                last_sent = loop.time()
            # Every event up to the frontier is released, and what was released is queued.
            w.delivered = max(w.delivered, w.merger.frontier())

    def _progress_ms(self, w: _Watch) -> int:
        """How often an idle shard stream reports progress. A watch over
        several shards needs it to release events in revision order (every
        shard's frontier must pass them), so often; a watch over one shard
        releases its events as they come and needs progress only for its
        progress notifications and requests: at most every second, so that
        thousands of one-key watches do not cost thousands of messages every
        shard_progress_ms."""
        if len(w.merger.sources) > 1:
            return self._cfg.shard_progress_ms
        notify_ms = int(self._cfg.progress_notify_interval_s * 1000)
        return max(self._cfg.shard_progress_ms, min(SINGLE_SHARD_PROGRESS_MS, notify_ms))

    def _pick(self, route: ShardRoute, avoid: set[int]) -> int:
        candidates = [n for n in route.replicas if n not in avoid] or list(route.replicas)
        if route.leader and route.leader not in avoid:
            return route.leader  # the freshest events; followers would also do
        return candidates[next(self._turn) % len(candidates)]

    def _start_stream(self, w: _Watch, shard_id: int, start: int, original: ShardRoute | None = None) -> None:
        """(Re)start the stream task of one shard of a watch from `start`, as
        a new generation; `original`: the slots it is to watch (default: the
        shard's route now)."""
        gen = w.gens[shard_id] = w.gens.get(shard_id, -1) + 1
        if original is None:
            original = self._cache.shard(shard_id)
        w.originals[shard_id] = original
        w.tasks[shard_id] = asyncio.create_task(self._shard_stream(w, shard_id, start, gen, original))

    async def _shard_stream(self, w: _Watch, shard_id: int, start: int, gen: int, original: ShardRoute | None) -> None:
        """Events of one shard for one watch, resumed after breaks."""
        avoid: set[int] = set()
        while True:
            route = self._cache.shard(shard_id)
            if route is None or (original is not None and route.slot_ranges != original.slot_ranges):
                # Split or merged away, seen in the map before (or instead of)
                # an epoch error from the node: a stream that broke with
                # UNAVAILABLE at the split would otherwise reopen on the
                # shrunken shard and miss the moved slots' events.
                await self._moved(w, shard_id, original, gen)
                return
            node = self._pick(route, avoid)
            address = self._cache.address(node)
            create = epb.WatchCreateRequest()
            create.CopyFrom(w.create)
            create.start_revision = start
            create.watch_id = 0
            header = route.header()
            header.hlc = self._fwd.hlc.now(self._fwd.now_ms())
            req = spb.ShardWatchRequest(header=header, request=create, progress_interval_ms=self._progress_ms(w))
            routing = None
            try:
                stub = store_pb2_grpc.StoreStub(self._fwd.channels.channel(address))
                async for r in stub.Watch(req):
                    self._fwd.hlc.observe(r.header.hlc)
                    self._cache.note_closed_ts(shard_id, r.header.node_id, r.header.closed_ts)
                    if r.header.HasField("error"):
                        if r.header.error.HasField("kv"):
                            reason = from_kv_error(r.header.error.kv).message
                            w.queue.put_nowait(_Batch(shard_id, cancel_reason=reason, gen=gen))
                            return
                        routing = r.header.error.routing
                        break
                    if r.compact_revision:
                        w.queue.put_nowait(_Batch(shard_id, compact_revision=r.compact_revision, gen=gen))
                        return
                    events = tuple(r.events)
                    if events:
                        start = max(start, merge.event_revision(events[-1]) + 1)
                    if r.progress_revision:
                        start = max(start, r.progress_revision + 1)
                    if events or r.progress_revision:
                        w.queue.put_nowait(_Batch(shard_id, events, r.progress_revision, gen=gen))
            except grpc.aio.AioRpcError as exc:
                log.debug("watch=%d shard=%d stream from node %d broke: %s", w.watch_id, shard_id, node, exc.code())
            avoid.add(node)
            if len(avoid) >= len(route.replicas):
                avoid.clear()
            which = routing.WhichOneof("error") if routing is not None else None
            if which in ("epoch_not_match", "wrong_shard", "shard_not_found"):
                await self._cache.refresh()
                now = self._cache.shard(shard_id)
                if now is None or now.slot_ranges != (original.slot_ranges if original else now.slot_ranges):
                    await self._moved(w, shard_id, original, gen)
                    return
            await asyncio.sleep(0.05)

    async def _moved(self, w: _Watch, shard_id: int, original: ShardRoute | None, gen: int) -> None:
        """The shard's slots (those this watch reads) changed owners: hand over
        to their owners now. A slot whose new owner the map does not show yet
        is waited for (refreshing the map), within ``handover_timeout_s``;
        past that the watch is canceled rather than silently missing its
        events (the client re-creates it from its last revision)."""
        watched: list[int] = []
        if original is not None:
            one = slots.range_slot(w.create.key, w.create.range_end, self._cache.slot_count)
            watched = [one] if one is not None else [s for lo, hi in original.slot_ranges for s in range(lo, hi)]
            watched = [s for s in watched if any(lo <= s < hi for lo, hi in original.slot_ranges)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.handover_timeout_s
        while True:
            owners: set[int] = set()
            unknown = False
            for slot in watched:
                try:
                    owners.add(self._cache.shard_of_slot(slot).shard_id)
                except Exception:  # noqa: BLE001 - no known owner yet
                    unknown = True
            if not unknown:
                break
            if loop.time() >= deadline:
                w.queue.put_nowait(_Batch(shard_id, cancel_reason="watch could not follow a shard split or merge; re-create it", gen=gen))
                return
            await self._cache.refresh()
            await asyncio.sleep(0.05)  # sleep-ok: a bounded poll for the map to show the new owner
        w.queue.put_nowait(_Batch(shard_id, moved=tuple(sorted(owners)), gen=gen))


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    def __init__(self, fwd: Forwarder, cache: RoutingCache, cfg: WatchConfig, stamp: Any) -> None:
        self._fwd = fwd
        self._cache = cache
        self._cfg = cfg
        self._stamp = stamp
        self.sessions: set[WatchSession] = set()
        """The client streams being served (their queues are what tests measure)."""
        self.permit: Callable[[grpc.aio.ServicerContext], Callable[[epb.WatchCreateRequest], Awaitable[str]]] | None = None
        """With auth: per stream, the check of its create requests (router/auth.py watch_permit)."""

    async def Watch(  # noqa: N802
        self, request_iterator: AsyncIterator[epb.WatchRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.WatchResponse]:
        session = WatchSession(self._fwd, self._cache, self._cfg, self._stamp)
        if self.permit is not None:
            session.permit = self.permit(context)
        self.sessions.add(session)
        try:
            async for resp in session.run(request_iterator):
                yield resp
        finally:
            self.sessions.discard(session)
