"""Spectators: a downsampled whole-world view and live statistics, a few times a second.

Theory of operation
-------------------
A spectator (``{"t":"spectate","v":1}`` instead of hello, :mod:`server.protocol`) watches the
whole world: region borders, every entity's position coloured by its owning worker, and the
server's figures.  Three parties make a view, and the tick pays for the smallest part only:

1. **The ticker asks for a sample** at most :data:`VIEW_RATE` times a second, and only while
   some spectator is connected: one extra job (:func:`world_job`) in that tick's step.  With no
   spectator the step is exactly what it was.
2. **Each worker samples its own shards** (:class:`SpectatorHook`, a
   :class:`~server.snapshots.SnapshotHook` that also answers world jobs): every k-th entity, at
   most ``ceil(cap / regions)`` per shard, as integers ``[x, y, code]`` in world units (code:
   ``-1 - id`` for a player's entity, whose id the hub needs, the kind otherwise).  It reads
   the kernels' columns with a stride (no sort, no copy of the rows it skips,
   :func:`_columns`); an unknown kernel goes through ``shard.rows()``.  No encoding, no
   statistics: a few hundred integers per shard, in parallel on the workers (about 0.5 ms for
   all of arena-20k's 16 shards on one core of the 2-core VM, either kernel).
3. **The gateways build and send the view, off the tick's path.**  The hub publishes the
   workers' samples on a :class:`ViewBoard` (one reference swap, after the tick was timed, with
   the entities lent to sessions: a player slot nobody holds is drawn as a plain entity) and
   asks each gateway that has spectators to push.  The first gateway loop that asks for the
   sample in a codec builds the :class:`~server.protocol.View` (the samples plus
   :func:`live_stats` of the server's ``/stats``) and encodes it, once per sample and codec under
   the board's lock; every spectator, on every gateway, is sent those same bytes through its
   bounded snapshot queue (oldest dropped when full, like snapshots).

So spectators cost the tick one strided read of each shard a few times a second, whatever their
number; ``paratick bench spectators`` measures the tick with 0 and with 10 spectators.

Importable in a subinterpreter (the hook runs in every worker): standard library only at import.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from server import host
from server.protocol import CODECS, View
from server.snapshots import Job, SnapshotHook
from sim.entities import NPC, PLAYER

#: Views per second sent to each spectator: enough for a map that visibly moves and a chart of
#: MSPT, and 6x fewer samples than ticks at 30 Hz.
VIEW_RATE = 5.0
#: Entities at most in one view: a canvas shows a few thousand dots legibly, and 2,000 entities
#: encode to about 30 KB of JSON (150 KB/s per spectator at 5 Hz).  Bigger worlds are strided.
MAX_VIEW_ENTITIES = 2000
#: Spectators at most, by default (``--max-spectators``): watching is for people, not crowds.
MAX_SPECTATORS = 8
#: The session id a world sample comes back under in the hook's results (real ids are >= 0).
WORLD_SESSION = -1
#: The codec name of a world job (no client codec: the sample is not encoded by the worker).
WORLD_CODEC = "world"


def world_job(cap: int, regions: int) -> Job:
    """The job asking every worker for a sample of its shards (``cap`` entities in all)."""
    return Job(entity=-1, session=WORLD_SESSION, codec=WORLD_CODEC,
               base=max(1, math.ceil(cap / max(1, regions))), ack=0)


def sample_shard(shard: Any, per_shard: int) -> tuple[int, list[int]]:
    """(entities owned, flat ``[x, y, code, ...]``) of every k-th entity of ``shard``, at most
    ``per_shard`` of them, x and y rounded to world units; ``code`` is ``-1 - id`` for a player
    entity (:func:`merge_samples` tells held slots from unused ones) and the kind otherwise."""
    n = len(shard)
    if n == 0:
        return 0, []
    stride = max(1, math.ceil(n / per_shard))
    cols = _columns(shard, stride)
    if cols is None:  # another kernel: through the shard contract (sorts and copies every row)
        cols = ((r[2], r[3], r[1], r[0]) for r in shard.rows()[::stride])
    flat: list[int] = []
    for x, y, kind, eid in cols:
        flat += (round(x), round(y), -1 - int(eid) if kind == PLAYER else int(kind))
    return n, flat[:3 * per_shard]


def _columns(shard: Any, stride: int) -> Iterable[tuple[Any, Any, Any, Any]] | None:
    """Every ``stride``-th entity's (x, y, kind, id) read from a kernel's own columns, or None.

    ``shard.rows()`` sorts and converts every row: 5 ms a sample for arena-20k's 16 numpy shards
    on the 2-core VM against 0.4 ms for a strided read, which a p99 would show.  The kernels
    expose no strided read, so this reads their columns where it knows them (python: the
    ``xs``/``ys``/``kinds`` columns; numpy: the ``_f``/``_i`` arrays of a shard or of its group) and
    falls back to ``rows()`` otherwise; tests/server/test_spectators.py holds both paths equal.
    Entities handed over during the last tick and not yet settled may be missed: a view does
    not need them.
    """
    kernel = getattr(shard, "kernel", None)
    xs = getattr(shard, "xs", None)
    if kernel == "python" and xs is not None:
        return zip(xs[::stride], shard.ys[::stride], shard.kinds[::stride], shard.ids[::stride],
                   strict=True)
    if kernel != "numpy":
        return None
    from sim.kernels import numpy as nk  # loaded already: this shard is a numpy one

    group = getattr(shard, "_group", None)
    src = shard if group is None else group
    f, i = getattr(src, "_f", None), getattr(src, "_i", None)
    if f is None or i is None:
        return None
    if group is None:
        fx, fy = f[nk.FX, ::stride], f[nk.FY, ::stride]
        kinds, ids = i[nk.IKIND, ::stride], i[nk.IID, ::stride]
    else:
        idx = (group._lab == shard.region).nonzero()[0][::stride]
        fx, fy = f[nk.FX].take(idx), f[nk.FY].take(idx)
        kinds, ids = i[nk.IKIND].take(idx), i[nk.IID].take(idx)
    return zip(fx.tolist(), fy.tolist(), kinds.tolist(), ids.tolist(), strict=True)


class SpectatorHook(SnapshotHook):
    """:class:`~server.snapshots.SnapshotHook` that also answers world jobs (one per worker).

    A world job's result is ``(WORLD_SESSION, [tick, region, owned, x, y, code, x, y, code...])``
    per shard of this worker; player jobs are handled exactly as by the base class.
    """

    def run(self, tick: int, shards: Iterable[Any], jobs: Iterable[Iterable[Any]],
            ) -> list[tuple[int, Any]]:
        shards = list(shards)
        players: list[Iterable[Any]] = []
        per_shard = 0
        for job in jobs:
            _, sid, codec, base, _ = job
            if sid == WORLD_SESSION and codec == WORLD_CODEC:
                per_shard = max(per_shard, int(base))
            else:
                players.append(job)
        out: list[tuple[int, Any]] = list(super().run(tick, shards, players)) if players else []
        if per_shard:
            for s in shards:
                owned, flat = sample_shard(s, per_shard)
                out.append((WORLD_SESSION, [tick, s.region, owned, *flat]))
        return out


# ---- the hub's side ------------------------------------------------------------------------------
def _num(x: Any) -> float | None:
    return x if isinstance(x, int | float) and math.isfinite(x) else None


def _p(d: Any, key: str) -> float | None:
    return _num(d.get(key)) if isinstance(d, Mapping) else None


def live_stats(stats: Mapping[str, Any], spectators: int) -> dict[str, Any]:
    """The figures a spectator shows, taken from the server's ``/stats`` (one home per idea).

    Keys: ``tick``; ``tick_rate`` (target, Hz) and ``ticks_per_s`` (achieved, recent window);
    ``dilation`` (world seconds per wall second, at most 1: the server catches up rather than
    slowing its clock, so below 1 means ticks were dropped); ``budget_ms``; ``mspt``
    (``p50``/``p99`` of the whole tick); ``deadline_misses``; ``backend``, ``kernel``,
    ``build`` (``python``, ``free_threaded``, ``gil_enabled`` of the server process);
    ``shards`` (per region: ``region``, ``worker``, ``entities``, ``p50``, ``p99``);
    ``workers`` (per worker: ``worker``, ``gil_enabled``, ``p50``, ``p99``); ``players``
    (connections playing), ``spectators``, ``connections`` (open in all) and ``gateways``
    (per gateway: ``index``, ``connections``).  Percentiles are milliseconds, null when empty.
    """
    ticker = stats.get("ticker") or {}
    rt = stats.get("runtime") or {}
    target = _num(ticker.get("tick_rate_target")) or 0.0
    rate = _num(rt.get("ticks_per_s"))
    dilation = min(1.0, rate / target) if rate is not None and target > 0 else None
    conns = stats.get("connections") or {}
    build = stats.get("build") or host.interpreter()
    return {
        "tick": stats.get("tick", 0),
        "tick_rate": target, "ticks_per_s": rate, "dilation": dilation,
        "budget_ms": _num(ticker.get("budget_ms")),
        "mspt": {"p50": _p(ticker, "mspt_p50"), "p99": _p(ticker, "mspt_p99")},
        "deadline_misses": ticker.get("deadline_misses", 0),
        "backend": rt.get("backend", ""), "kernel": rt.get("kernel", ""),
        "build": {"python": build.get("version", ""),
                  "free_threaded": bool(build.get("free_threaded")),
                  "gil_enabled": bool(build.get("gil_enabled"))},
        "shards": [{"region": s.get("region"), "worker": s.get("worker"),
                    "entities": s.get("entities", 0), "p50": _p(s.get("mspt"), "p50"),
                    "p99": _p(s.get("mspt"), "p99")} for s in rt.get("shards", ())],
        "workers": [{"worker": w.get("worker"), "gil_enabled": w.get("gil_enabled"),
                     "p50": _p(w.get("mspt"), "p50"), "p99": _p(w.get("mspt"), "p99")}
                    for w in rt.get("workers", ())],
        "players": conns.get("playing", 0), "spectators": spectators,
        "connections": conns.get("open", 0),
        "gateways": [{"index": g.get("index"), "connections": g.get("connections", 0)}
                     for g in stats.get("gateways", ())],
    }


def merge_samples(samples: Sequence[Sequence[int]], cap: int,
                  players: Collection[int] = frozenset(),
                  ) -> tuple[int, tuple[tuple[int, int, int, int], ...], int]:
    """(tick, view entities ``(x, y, kind, region)``, entities in the world) from the workers'
    per-shard samples (``[tick, region, owned, x, y, code, ...]``, :func:`sample_shard`), at
    most ``cap`` entities.  ``players``: the entities lent to sessions; a player slot nobody
    holds becomes an ordinary entity (kind NPC) in the view, the others kind PLAYER."""
    tick = max((int(s[0]) for s in samples), default=0)
    total = 0
    ents: list[tuple[int, int, int, int]] = []
    for s in sorted(samples, key=lambda s: s[1]):
        region = int(s[1])
        total += int(s[2])
        flat = s[3:]
        for i in range(0, len(flat) - 2, 3):
            code = flat[i + 2]
            kind = code if code >= 0 else PLAYER if -1 - code in players else NPC
            ents.append((flat[i], flat[i + 1], kind, region))
    return tick, tuple(ents[:cap]), total


class ViewBoard:
    """The latest world sample, and the view built from it once per codec (any thread).

    Args:
        stats: returns the server's statistics (``GameServer.stats``).
        spectators: returns how many spectators are connected.
        cap: entities at most in a view.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]], spectators: Callable[[], int], *,
                 cap: int = MAX_VIEW_ENTITIES) -> None:
        self._stats = stats
        self._spectators = spectators
        self.cap = cap
        self._lock = threading.Lock()
        self._samples: tuple[Any, ...] = ()
        self._players: frozenset[int] = frozenset()
        self._seq = 0
        #: codec name -> (sample seq, tick, encoded view)
        self._built: dict[str, tuple[int, int, bytes | str]] = {}
        self._view: tuple[int, View] | None = None
        self.builds = 0  # views built (once per published sample with a spectator to see it)

    def publish(self, samples: Sequence[Any], players: Collection[int] = frozenset()) -> None:
        """The workers' samples of one tick and the entities lent to sessions then (called by
        the ticker thread after the tick)."""
        with self._lock:
            self._samples = tuple(samples)
            self._players = frozenset(players)
            self._seq += 1

    def payload(self, codec_name: str) -> tuple[int, bytes | str] | None:
        """(tick, encoded view) of the newest sample in ``codec_name``; None before any."""
        with self._lock:
            if not self._samples:
                return None
            seq = self._seq
            built = self._built.get(codec_name)
            if built is not None and built[0] == seq:
                return built[1], built[2]
            if self._view is None or self._view[0] != seq:
                tick, ents, total = merge_samples(self._samples, self.cap, self._players)
                view = View(tick=tick, entities=ents, total=total,
                            stats=live_stats(self._stats(), self._spectators()))
                self._view = (seq, view)
                self.builds += 1
            view = self._view[1]
            data = CODECS[codec_name].encode(view)
            self._built[codec_name] = (seq, view.tick, data)
            return view.tick, data


__all__ = ["MAX_SPECTATORS", "MAX_VIEW_ENTITIES", "VIEW_RATE", "WORLD_SESSION", "SpectatorHook",
           "ViewBoard", "live_stats", "merge_samples", "sample_shard", "world_job"]
