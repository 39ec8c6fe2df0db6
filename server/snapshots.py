"""Per-client snapshots, built inside the shard workers in parallel.

Theory of operation
-------------------
The runtime instantiates one :class:`SnapshotHook` per worker (``hook="server.snapshots:
SnapshotHook"``) and, on a tick with snapshot jobs, calls ``hook.run(tick, shards, jobs)`` after
every shard of that worker has advanced with ``view=True`` and absorbed its neighbours' borders.
Jobs are broadcast to every worker; each worker handles only the jobs whose entity one of *its*
shards owns, so every job is handled exactly once and the AOI query plus the encoding run in
parallel, never on the event-loop thread.  The I/O side only writes the returned bytes.

For a job the hook:

1. finds the shard owning the entity and the entity's position;
2. collects the view rows within ``view_radius`` of it from a per-shard uniform grid (built once
   per shard and tick, cell = view radius, so a query reads 3x3 cells); ``shard.view_rows()``
   holds the shard's own entities plus the neighbours' view rows, and ``view_radius`` <= region
   size (WorldConfig validates it) guarantees that this covers the whole circle;
3. quantises them (:func:`server.protocol.quantise`) and diffs against the client's acknowledged
   baseline if this worker still holds it in the client's bounded ring (:data:`RING`); a delta is
   sent when it lists fewer entities than a full snapshot, else the full snapshot;
4. encodes with the client's codec and returns ``(session id, payload)``.  Each entity is
   encoded once per tick and codec (:meth:`Codec.fragment <server.protocol.Codec.fragment>`,
   cached beside the quantised rows) and spliced into every snapshot that lists it, byte for
   byte what encoding the whole message would give.  With msgpack's pure-Python fallback (what
   a subinterpreter gets) that cut the cost of a snapshot 2.6x on the 2-core VM's GIL build
   (fallback forced in the main interpreter, interleaved A/B; bench/snapshots.py measures the
   hook inside a real subinterpreter too).

Deltas are tried only while they pay.  In a world where nearly everything moves, a delta lists
nearly every entity and is rarely the smaller message (on the load benchmark's world, under 1 % of
tries), yet keeping baselines and comparing against them cost more than building the snapshot.
So each worker counts its tries (a job whose acked baseline it still holds) and the deltas they
gave: after :data:`DELTA_WINDOW` tries with fewer than :data:`DELTA_MIN_SHARE` deltas, it drops
its rings and sends only full snapshots for :data:`DELTA_REST` ticks, built straight from the
entities' cached fragments (no per-client dict, ring or comparison), then keeps baselines and
tries again.  A full snapshot is always valid, so clients see no difference but the bytes.
Trying is the dear part: the per-client path indexes every view row of the worker's shards in
Python, which with 20,000 entities made each tick of a trial ~100 ms (free-threaded build,
2-core VM, at start-up and every 20 s after).  So where numpy loads, a trial takes a sample
(:meth:`SnapshotHook._probe`): about :data:`PROBE_JOBS` clients a tick, chosen by session id so
that the same ones keep their baselines, indexed from only the rows in their areas of interest,
while the others' full snapshots are batched; :data:`PROBE_TRIES` tries judge, and only if
deltas pay there does every client get them.
The bar is a quarter of the tries: a try cost about 2.4x a batched full snapshot when it was
set (35 against 15 µs, ``bench snapshots``, GIL build, 2-core VM; about 4x since the batch
works on arrays: 47 against 12 µs), and under 400 bots, where a third of them
stand idle, deltas won about 10 % of tries: enough to pass a 5 % bar and keep every worker on
the slow path, too few to pay for it in bytes.

While deltas rest (or are off), and where numpy loads (worker threads and processes; not a
subinterpreter), a worker builds the full snapshots of all its jobs at once
(:meth:`SnapshotHook._full_batch`): its shards' view rows as one array (a numpy shard gives
its own, ``view_array()``, without a Python object per row), sorted by AOI cell once, every
job's 3x3 cells as ranges of that order, the distance test over all (client, row) pairs in a
few array operations; then every row that some client lists quantised and msgpack-encoded at
once (:mod:`server.wirearrays`), every client's entities gathered into one buffer, and per client a
slice of it between the codec's header and tail.  The pairs come out in the order the
per-client loop of :class:`_Index` visits them (cells in (x, y) order, rows in view-row order
within a cell) and pass the same float comparison, and the array encoder writes the bytes
msgpack writes, so the snapshots are identical (tests compare both engines).  For one worker's
215 clients on the load benchmark's world (2,400 entities, 2x1 regions, numpy kernel, GIL
build, 2-core VM) a batch took 3.86 ms with a list of cached fragments per client and 1.92 ms
this way.

Rings are per worker: after a handoff to a shard of another worker, the first snapshot there is
full (the new worker has no baseline), which costs one frame and keeps workers free of shared
state.  A ring not used for :data:`RING_TTL` ticks is dropped, so a worker's memory is bounded by
the server's connection cap times :data:`RING`.

Importable in a subinterpreter: no numpy, no module-level state.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from server.protocol import CODECS, SUBPROTOCOL_MSGPACK, Codec, MsgpackCodec, WireEntity, quantise
from sim.entities import V_ID, V_X, V_Y

#: Snapshots kept per client as delta baselines.  A client acks a snapshot about one round trip
#: after it was sent; 32 snapshots at 20 Hz cover 1.6 s of round trip before deltas fall back
#: to full snapshots.
RING = 32
#: Drop a client's ring after this many ticks without a job (disconnected or handed to another
#: worker); 10 s at 30 Hz, the default reconnect grace period.
RING_TTL = 300
#: Delta tries counted before a worker judges whether deltas pay.
DELTA_WINDOW = 256
#: Fewer deltas than this share of the tries: they do not pay, rest.
DELTA_MIN_SHARE = 0.25
#: Ticks a worker sends only full snapshots once deltas did not pay (20 s at 30 Hz).
DELTA_REST = 600
#: Clients a worker tries deltas on per tick before they are judged to pay (about; chosen by
#: session id: :meth:`SnapshotHook._probe`), and the tries that judge them then (not
#: :data:`DELTA_WINDOW`: a tick that tries is dearer, so the trial is kept short).
PROBE_JOBS = 4
PROBE_TRIES = 64
#: The 3x3 cells around a client's, in the order :meth:`_Index.near` visits them.
_DX = (-1, -1, -1, 0, 0, 0, 1, 1, 1)
_DY = (-1, 0, 1, -1, 0, 1, -1, 0, 1)

class Job(NamedTuple):
    """One client's snapshot, asked of the worker that owns its entity.

    It crosses the runtime's channels as a plain msgpack array, and a hook reads a job by
    position (``eid, sid, codec, base, ack = job``): a hook is handed tuples, lists or Jobs
    alike.  The server builds its per-tick jobs as plain tuples in this order, which cost
    less than a named tuple each (one per client snapshot).
    """

    entity: int          # the client's entity (the centre of its area of interest)
    session: int         # whose snapshot it is (returned with the payload)
    codec: str           # the client's subprotocol
    base: int            # newest snapshot tick the client acknowledged, or -1
    ack: int             # newest input seq applied to the world, or -1


class _Fragments:
    """One codec's encoded entities for one tick of one worker: entity id -> bytes or str."""

    __slots__ = ("cache", "encode")

    def __init__(self, codec: Codec) -> None:
        self.cache: dict[int, Any] = {}
        self.encode = codec.fragmenter()

    def add(self, row: Sequence[Any], wire: dict[int, WireEntity]) -> Any:
        """Encode the entity of view row ``row`` and cache it (``wire``: the tick's quantised
        entities by id, shared by the codecs; the row is quantised there once)."""
        eid = row[V_ID]
        w = wire.get(eid)
        if w is None:
            w = wire[eid] = quantise(row)
        f = self.cache[eid] = self.encode(w)
        return f


class _Index:
    """One shard's view rows for one tick: owned positions and a cell grid.

    Rows are quantised lazily, once per tick, when they first fall in some client's area of
    interest: quantising all of them up front cost more than the queries for a few dozen clients.
    The quantised and encoded entities are shared by the indices of one worker's shards (an
    entity near a border is in its neighbours' view rows too, the same row at the same tick).
    """

    __slots__ = ("cell", "frags", "grid", "own", "wire")

    def __init__(self, rows: Sequence[Sequence[Any]], owned: int, cell: float,
                 wire: dict[int, WireEntity], frags: dict[str, _Fragments]) -> None:
        self.cell = cell
        inv = 1.0 / cell
        # view_rows() lists the shard's own entities first (sim.shard.Shard.view_rows).
        self.own: dict[int, Sequence[Any]] = {r[V_ID]: r for r in rows[:owned]}
        self.wire = wire
        #: codec name -> entities encoded alone, filled lazily like ``wire``.
        self.frags = frags
        grid: dict[tuple[int, int], list[Sequence[Any]]] = {}
        ix, iy = V_X, V_Y
        for r in rows:
            key = (int(r[ix] * inv), int(r[iy] * inv))
            bucket = grid.get(key)
            if bucket is None:
                grid[key] = [r]
            else:
                bucket.append(r)
        self.grid = grid

    def near(self, x: float, y: float, radius: float) -> dict[int, WireEntity]:
        """Quantised entities within ``radius`` of (x, y), by id (cells are >= radius wide)."""
        inv = 1.0 / self.cell
        cx, cy = int(x * inv), int(y * inv)
        r2 = radius * radius
        out: dict[int, WireEntity] = {}
        grid = self.grid
        wire = self.wire
        iid, ix, iy = V_ID, V_X, V_Y  # locals: the loop below runs for every client and tick
        for gx in (cx - 1, cx, cx + 1):
            for gy in (cy - 1, cy, cy + 1):
                bucket = grid.get((gx, gy))
                if bucket is None:
                    continue
                for r in bucket:
                    dx = r[ix] - x
                    dy = r[iy] - y
                    if dx * dx + dy * dy <= r2:
                        eid = r[iid]
                        w = wire.get(eid)
                        if w is None:
                            w = wire[eid] = quantise(r)
                        out[eid] = w
        return out

    def fragments(self, x: float, y: float, radius: float, codec: Codec) -> list[Any]:
        """The encoded entities within ``radius`` of (x, y), in :meth:`near`'s order: what a full
        snapshot lists, without the per-client dict a delta needs."""
        inv = 1.0 / self.cell
        cx, cy = int(x * inv), int(y * inv)
        r2 = radius * radius
        out: list[Any] = []
        grid = self.grid
        wire = self.wire
        got = self.frags.get(codec.name)
        if got is None:
            got = self.frags[codec.name] = _Fragments(codec)
        cache = got.cache
        iid, ix, iy = V_ID, V_X, V_Y
        for gx in (cx - 1, cx, cx + 1):
            for gy in (cy - 1, cy, cy + 1):
                bucket = grid.get((gx, gy))
                if bucket is None:
                    continue
                for r in bucket:
                    dx = r[ix] - x
                    dy = r[iy] - y
                    if dx * dx + dy * dy <= r2:
                        f = cache.get(r[iid])
                        out.append(got.add(r, wire) if f is None else f)
        return out


class SnapshotHook:
    """Runtime hook building per-client snapshots (one instance per worker).

    Args:
        view_radius: area-of-interest radius in world units (the world's ``view_radius``).
        ring: baselines kept per client (:data:`RING`).
        ring_ttl: ticks after which an unused ring is dropped (:data:`RING_TTL`).
        delta_window, delta_min_share, delta_rest: when deltas are judged not to pay and for
            how long the worker then sends full snapshots only (:data:`DELTA_WINDOW`,
            :data:`DELTA_MIN_SHARE`, :data:`DELTA_REST`).
        deltas: False sends full snapshots only, keeping no baselines (what a worker does
            while deltas do not pay).
        batch: build full snapshots a batch at a time where numpy loads (False: one client at
            a time, as in a subinterpreter; the bytes are the same).
    """

    def __init__(self, *, view_radius: float, ring: int = RING, ring_ttl: int = RING_TTL,
                 delta_window: int = DELTA_WINDOW, delta_min_share: float = DELTA_MIN_SHARE,
                 delta_rest: int = DELTA_REST, deltas: bool = True, batch: bool = True,
                 ) -> None:
        if not view_radius > 0:
            raise ValueError(f"view_radius must be > 0, got {view_radius!r}")
        self.view_radius = float(view_radius)
        self.ring = max(1, int(ring))
        self.ring_ttl = max(1, int(ring_ttl))
        #: session id -> (last tick used, OrderedDict tick -> {entity id: wire entity})
        self._rings: dict[int, tuple[int, OrderedDict[int, dict[int, WireEntity]]]] = {}
        self.delta_window = max(1, int(delta_window))
        self.delta_min_share = float(delta_min_share)
        self.delta_rest = max(0, int(delta_rest))
        #: ``rests``: times deltas were judged not to pay; ``tries``: jobs that found their
        #: acked baseline.
        self.stats = {"full": 0, "delta": 0, "jobs": 0, "tries": 0, "rests": 0}
        self._swept = 0
        self._tries = self._wins = 0
        #: Full snapshots only before this tick.
        self._rest_until = -1 if deltas else 1 << 62
        numpy: Any = None
        if batch:
            with contextlib.suppress(ImportError):  # a subinterpreter: numpy does not load
                import numpy
        #: numpy, where it loads and ``batch``: full snapshots are then built a batch at a time.
        self._np: Any = numpy
        #: Deltas tried on a sample of the clients only (:meth:`_probe`): at the start and after
        #: every rest, until they are judged to pay (where numpy loads).
        self._probing = True

    @property
    def sessions(self) -> frozenset[int]:
        """Session ids this worker holds delta baselines for."""
        return frozenset(self._rings)

    def run(self, tick: int, shards: Iterable[Any], jobs: Iterable[Iterable[Any]],
            ) -> list[tuple[int, bytes | str]]:
        """Build the snapshots for the jobs whose entity these shards own.

        Returns:
            ``[(session id, payload), ...]``; payload is bytes (msgpack) or str (JSON).
        """
        resting = tick < self._rest_until
        if resting and self._np is not None:
            batch = self._full_batch(tick, shards, jobs)
            self._expire(tick)
            return batch
        if self._probing and self._np is not None:
            return self._probe(tick, list(shards), jobs if isinstance(jobs, list) else list(jobs))
        return self._per_client(tick, [(rows, len(s)) for s in shards for rows in (s.view_rows(),)],
                                jobs)

    def _per_client(self, tick: int, views: Sequence[tuple[Sequence[Any], int]],
                    jobs: Iterable[Iterable[Any]]) -> list[tuple[int, bytes | str]]:
        """Snapshots one client at a time, deltas where they pay: ``views`` are each shard's
        view rows and how many of them (the first) it owns."""
        resting = tick < self._rest_until
        wire: dict[int, WireEntity] = {}
        frags: dict[str, _Fragments] = {}
        indices = [_Index(rows, owned, self.view_radius, wire, frags) for rows, owned in views]
        out: list[tuple[int, bytes | str]] = []
        radius = self.view_radius
        stats = self.stats
        for eid, sid, codec_name, base, ack in jobs:
            for idx in indices:
                me = idx.own.get(eid)
                if me is not None:
                    break
            else:
                continue  # another worker owns this entity
            if resting:
                codec = CODECS.get(codec_name)
                if codec is None:
                    continue
                stats["jobs"] += 1
                stats["full"] += 1
                out.append((sid, codec.dumps_snapshot(
                    tick, ack, None, idx.fragments(me[V_X], me[V_Y], radius, codec), ())))
                continue
            current = idx.near(me[V_X], me[V_Y], radius)
            payload = self._encode(tick, sid, codec_name, base, ack, current, idx)
            if payload is not None:
                out.append((sid, payload))
        window = min(self.delta_window, PROBE_TRIES) if self._probing else self.delta_window
        if not resting and self._tries >= window:
            if self._wins < self.delta_min_share * self._tries:
                self._rest_until = tick + self.delta_rest
                self._rings.clear()
                self._probing = True  # after the rest, a sample tries again
                stats["rests"] += 1
            else:
                self._probing = False  # they pay: every client gets them
            self._tries = self._wins = 0
        self._expire(tick)
        return out

    def _probe(self, tick: int, shards: list[Any], jobs: list[Any],
               ) -> list[tuple[int, bytes | str]]:
        """Deltas tried on a sample of the clients, the others' full snapshots batched.

        The sample (about :data:`PROBE_JOBS` jobs, chosen by session id so that the same clients
        are tried tick after tick and their acked baselines are in their rings) goes through
        :meth:`_per_client` with only the view rows within its areas of interest, as tuples:
        the same rows in the same order as the whole shard's would give them, so the same
        bytes.  The rest goes through :meth:`_full_batch`.  Output in job order.
        """
        np = self._np
        every = probe_every(len(jobs))
        tried = [job for job in jobs if job[1] % every == 0]
        if len(tried) == len(jobs):
            return self._per_client(tick, [(s.view_rows(), len(s)) for s in shards], jobs)
        arrays = [_view_array(np, s) for s in shards]
        r2 = self.view_radius * self.view_radius
        wanted = np.fromiter((job[0] for job in tried), np.int64, len(tried))
        views: list[tuple[Sequence[Any], int]] = []
        for s, a in zip(shards, arrays, strict=True):
            own = len(s)
            at, found = _lookup(np, a[:own, V_ID].astype(np.int64), wanted)
            me = at.compress(found)  # the rows of the tried clients this shard owns
            keep = np.zeros(len(a), bool)
            x, y = a[:, V_X], a[:, V_Y]
            for cx, cy in zip(x.take(me).tolist(), y.take(me).tolist(), strict=True):
                dx = x - cx  # _Index.near's test, the same float operations
                dy = y - cy
                keep |= dx * dx + dy * dy <= r2
            sel = keep.nonzero()[0]
            rows = [(int(e), int(k), px, py, vx, vy, h, int(sc))
                    for e, k, px, py, vx, vy, h, sc in a.take(sel, axis=0).tolist()]
            views.append((rows, int(np.count_nonzero(sel < own))))
        done = dict(self._per_client(tick, views, tried))
        done.update(self._full_batch(tick, shards, [job for job in jobs
                                                    if job[1] % every != 0], arrays))
        return [(job[1], done[job[1]]) for job in jobs if job[1] in done]

    def _full_batch(self, tick: int, shards: Iterable[Any], jobs: Iterable[Iterable[Any]],
                    views: Sequence[Any] | None = None) -> list[tuple[int, bytes | str]]:
        """Full snapshots for the jobs these shards own, all at once (module docstring): the
        same bytes, in the same order, as the per-client loop.  ``views``: the shards' view
        rows as arrays (:func:`_view_array`), where the caller has them already."""
        np = self._np
        from sim.kernels.numpy import expand_ranges

        radius = self.view_radius
        r2 = radius * radius
        inv = 1.0 / radius
        stats = self.stats
        todo: list[Any] = jobs if isinstance(jobs, list) else list(jobs)
        # Every shard's view rows one after another, as numbers; the rows of the entities
        # these shards own (each shard's first len(shard) rows), by id.
        arrays: list[Any] = []
        owned_rows: list[Any] = []
        first = [0]
        shards = list(shards)
        for s, view in zip(shards, views if views is not None
                           else [_view_array(np, s) for s in shards], strict=True):
            start = first[-1]
            owned_rows.append(np.arange(start, start + len(s)))
            arrays.append(view)
            first.append(start + len(view))
        batch: list[tuple[int, int]] = []  # (job, the row of its entity)
        mine = np.concatenate(owned_rows) if owned_rows else np.empty(0, np.int64)
        if len(mine) and todo:
            # Each job's entity among the owned ids.
            a = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            at, found = _lookup(np, a[:, V_ID].take(mine).astype(np.int64),
                                np.fromiter((job[0] for job in todo), np.int64, len(todo)))
            rows, ok = mine.take(at).tolist(), found.tolist()
            batch = [(j, rows[j]) for j, job in enumerate(todo) if ok[j] and job[2] in CODECS]
        done: list[tuple[int, bytes | str] | None] = [None] * len(todo)
        if batch:
            x = a[:, V_X].copy()
            y = a[:, V_Y].copy()
            gx = np.trunc(x * inv).astype(np.int64)  # int(): what _Index does
            gy = np.trunc(y * inv).astype(np.int64)
            # One grid for all shards, each shard's cells apart from the others' (a client
            # queries its own shard's rows only, as the per-client loop does).
            base_x, base_y = int(gx.min()) - 1, int(gy.min()) - 1
            span_x, span = int(gx.max()) - base_x + 2, int(gy.max()) - base_y + 2
            shard = np.repeat(np.arange(len(arrays)), np.diff(first))
            key = (shard * span_x + (gx - base_x)) * span + (gy - base_y)
            order = key.argsort(kind="stable")
            skey = key.take(order)
            me = np.array([i for _, i in batch], np.int64)
            cells = key.take(me)[:, None] + (np.array(_DX) * span + np.array(_DY))
            lo = skey.searchsorted(cells.ravel(), "left")
            num, at = expand_ranges(lo, skey.searchsorted(cells.ravel(), "right") - lo)
            owner = num // 9  # the client (position in batch) of each candidate pair
            cand = order.take(at)
            dx = x.take(cand) - x.take(me).take(owner)
            dy = y.take(cand) - y.take(me).take(owner)
            keep = (dx * dx + dy * dy <= r2).nonzero()[0]
            cand = cand.take(keep)
            ends = np.bincount(owner.take(keep), minlength=len(batch)).cumsum()
            self._encode_batch(tick, todo, batch, a, cand, ends, done)
        out = [d for d in done if d is not None]
        stats["jobs"] += len(out)
        stats["full"] += len(out)
        return out

    def _encode_batch(self, tick: int, todo: Sequence[Sequence[Any]],
                      batch: Sequence[tuple[int, int]], a: Any, cand: Any, ends: Any,
                      done: list[tuple[int, bytes | str] | None]) -> None:
        """Encode :meth:`_full_batch`'s snapshots into ``done``: client ``k`` of ``batch``
        lists rows ``cand[ends[k - 1]:ends[k]]`` of ``a`` (view rows as an array)."""
        np = self._np
        from server.wirearrays import gather, pack_entities, quantise_rows

        names = {todo[j][2] for j, _ in batch}  # each job's codec (eid, sid, codec, base, ack)
        # Only the rows some client lists are quantised and encoded: in a large world with few
        # clients most rows are in nobody's view (20,000 entities and 100 clients: encoding
        # every row was most of the snapshots' cost).
        listed = np.zeros(len(a), bool)
        listed[cand] = True
        need = listed.nonzero()[0]
        if len(need) < len(a):
            cand = (listed.cumsum() - 1).take(cand)  # each listed row's place among them
            a = a.take(need, axis=0)
        q = quantise_rows(a)
        if SUBPROTOCOL_MSGPACK in names:
            # Every row encoded in a few array operations, and every msgpack client's
            # fragments gathered into one buffer: a slice of it per client.
            codec = CODECS[SUBPROTOCOL_MSGPACK]
            assert isinstance(codec, MsgpackCodec)
            head, tail = codec.snapshot_head, codec.snapshot_tail(())
            body, sizes = gather(pack_entities(q), cand)
            cut = np.concatenate(([0], sizes.cumsum())).take(np.concatenate(([0], ends))).tolist()
            c = 0
            for (j, _), b, lo, hi in zip(batch, ends.tolist(), cut[:-1], cut[1:], strict=True):
                _, sid, name, _, ack = todo[j]
                if name == SUBPROTOCOL_MSGPACK:
                    done[j] = (sid, b"".join((head(tick, ack, None, b - c), body[lo:hi], tail)))
                c = b
            names.discard(SUBPROTOCOL_MSGPACK)
        if not names:
            return
        # Other codecs: each row in some client's view encoded once.
        picked: list[int] = cand.tolist()
        needed = sorted(set(picked))
        wire = dict(zip(needed, map(tuple, q.take(needed, axis=0).tolist()), strict=True))
        by_codec = {name: dict(zip(needed, map(CODECS[name].fragmenter(), wire.values()),
                                   strict=True)) for name in names}
        c = 0
        for (j, _), b in zip(batch, ends.tolist(), strict=True):
            _, sid, name, _, ack = todo[j]
            if name in by_codec:
                encoded = by_codec[name]
                done[j] = (sid, CODECS[name].dumps_snapshot(
                    tick, ack, None, [encoded[i] for i in picked[c:b]], ()))
            c = b

    def _encode(self, tick: int, sid: int, codec_name: str, base: int, ack: int,
                current: dict[int, WireEntity], idx: _Index) -> bytes | str | None:
        codec = CODECS.get(codec_name)
        if codec is None:
            return None
        got = idx.frags.get(codec_name)
        if got is None:
            got = idx.frags[codec_name] = _Fragments(codec)
        cache, fragment = got.cache, got.encode
        self.stats["jobs"] += 1
        entry = self._rings.get(sid)
        ring = entry[1] if entry is not None else OrderedDict()
        self._rings[sid] = (tick, ring)
        old = ring.get(base) if base >= 0 else None
        ents: Iterable[WireEntity] = current.values()
        gone: list[int] = []
        sent_base: int | None = None
        if old is not None:
            self._tries += 1
            self.stats["tries"] += 1
            changed = [w for k, w in current.items() if old.get(k) != w]
            gone = [k for k in old if k not in current]
            if len(changed) + len(gone) < len(current):
                ents, sent_base = changed, base
                self._wins += 1
            else:
                gone = []
        self.stats["delta" if sent_base is not None else "full"] += 1
        # Each entity is encoded once per tick and codec, then spliced into every snapshot
        # that lists it (the same bytes codec.dumps(snapshot_map(...)) would give).
        frags = []
        for w in ents:
            f = cache.get(w[0])
            if f is None:
                f = cache[w[0]] = fragment(w)
            frags.append(f)
        ring[tick] = current
        # Baselines older than the acked one can never be used again: the client acks in order.
        if base >= 0:
            for t in [t for t in ring if t < base]:
                del ring[t]
        while len(ring) > self.ring:
            ring.popitem(last=False)
        return codec.dumps_snapshot(tick, ack, sent_base, frags, gone)

    def _expire(self, tick: int) -> None:
        # Sweep at most every 64 ticks (not on ``tick % 64 == 0``: ticks without jobs skip it).
        if tick - self._swept < 64:
            return
        self._swept = tick
        stale = [sid for sid, (last, _) in self._rings.items() if tick - last > self.ring_ttl]
        for sid in stale:
            del self._rings[sid]


def probe_every(jobs: int) -> int:
    """A trial tries the clients whose session id is a multiple of this (:meth:`SnapshotHook.
    _probe`): the largest power of two up to ``jobs / PROBE_JOBS``.  A power of two, so that as
    the count of jobs moves from tick to tick the sample only halves or doubles: the clients of
    the smaller sample are in the larger one, and are tried on every tick they have a job."""
    return 1 << max(0, (jobs // PROBE_JOBS).bit_length() - 1)


def _lookup(np: Any, ids: Any, wanted: Any) -> tuple[Any, Any]:
    """Where each of ``wanted`` is in ``ids`` (distinct, in any order), and whether it is
    there at all: one sort and a binary search for all of them (a dict of every id cost more
    than the search, rebuilt every tick)."""
    if not len(ids):
        return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
    by_id = ids.argsort(kind="stable")
    at = by_id.take(ids.take(by_id).searchsorted(wanted).clip(0, len(ids) - 1))
    return at, ids.take(at) == wanted


def _view_array(np: Any, shard: Any) -> Any:
    """A shard's view rows as an ``(n, 8)`` float64 array (a numpy shard gives its own)."""
    as_array = getattr(shard, "view_array", None)
    if as_array is not None:
        return as_array()
    return np.array(shard.view_rows(), np.float64).reshape(-1, 8)
