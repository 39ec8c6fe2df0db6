"""Prometheus exposition of the server's statistics (what ``GET /metrics`` returns).

Theory of operation
-------------------
``GET /stats`` is one JSON tree built for people; Prometheus needs typed families with base units.
:func:`render` turns a snapshot of that tree (the dict :meth:`GameServer.stats
<server.app.GameServer.stats>` returns) plus the server's histograms into the text format, through
``prometheus_client``: a :class:`StatsCollector` yields ``GaugeMetricFamily``,
``CounterMetricFamily`` and ``HistogramMetricFamily`` objects from that snapshot, and
``generate_latest`` writes them from a :class:`~prometheus_client.registry.CollectorRegistry` made
for the call.  Nothing is registered globally: the library's default registry would be process
state shared by every server in the process (tests run several), and its default collectors
describe the process, not the game.

Each JSON field is mapped by meaning, not by shape (the tables below say how):

* values that only grow (accepted, dropped, bytes, messages, timeouts, errors) are counters and
  end in ``_total``; values that go up and down (open connections, playing, peak, tick rate) and
  configured caps are gauges;
* times are seconds and sizes bytes (the JSON's ``_ms`` fields are divided by 1,000);
* per-shard series carry ``region`` (and ``worker``, the worker that ticks it), per-worker series
  ``worker``, error messages ``code``;
* tick durations and input latencies are histograms (:class:`Histogram`, fed by the server), so
  percentiles are computed by the query over any window and across servers.  The runtime's own
  per-shard and per-worker windows (percentiles, max and mean of the last ticks,
  :mod:`server.runtime.metrics`) stay gauges named ``*_window_seconds`` with a ``stat`` label
  (``p50``, ``p95``, ``p99``, ``max``, ``mean``): a ``quantile`` label is reserved for summaries
  (``promtool check metrics`` rejects it on a gauge) and these are not summaries, whose
  ``_sum``/``_count`` would have to be cumulative;
* identities are labels, never values: ``paratick_build_info`` and ``paratick_worker_info`` are
  info-style gauges whose value is always 1; process ids are not exported at all;
* ``settings`` and ``world`` are configuration: only the player cap and the snapshot rate are
  exported (the tick rate target and budget come from the ticker).

A field missing from the snapshot, or null (an empty window), is left out rather than exported
as 0 or NaN, so a dashboard shows a gap instead of a wrong value.
"""

from __future__ import annotations

import bisect
import itertools
import math
import platform
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from importlib import metadata
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from server import host
from server.protocol import ErrorCode

__all__ = [
    "CONTENT_TYPE",
    "GC_BUCKETS",
    "GC_PAUSE",
    "INPUT_LATENCY",
    "LATENCY_BUCKETS",
    "TICK_BUCKETS",
    "TICK_DURATION",
    "Histogram",
    "HistogramSource",
    "StatsCollector",
    "render",
    "server_histograms",
]

#: The ``Content-Type`` of :func:`render`'s output (the format ``generate_latest`` writes).
CONTENT_TYPE: str = CONTENT_TYPE_LATEST

#: Name of the histogram of every tick's wall time (the ticker's ``_tick_once``).
TICK_DURATION = "paratick_tick_duration_seconds"
#: Name of the histogram of input latency: input received -> start of the tick that applied it.
INPUT_LATENCY = "paratick_input_latency_seconds"

#: Name of the histogram of the server process's garbage-collector pauses (server.gcwatch).
GC_PAUSE = "paratick_gc_pause_seconds"

#: Tick duration bucket upper bounds (seconds).  Fine steps up to the 33.3 ms budget of the
#: default 30 Hz (30 and 35 ms bracket it; exact misses are ``paratick_tick_deadline_misses_total``)
#: so p50/p99 of a healthy server resolve to a few ms; past twice the budget a tick is a failure
#: and coarse buckets up to 1 s (a stall) suffice.  16 series with +Inf.
TICK_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025,
                                   0.03, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
#: Input latency bucket upper bounds (seconds).  An input waits for the next tick boundary, so
#: 0 .. one tick period (33.3 ms at 30 Hz) spread evenly is healthy; above it the ticker is late
#: or the event loop lags.  Up to 2 s, beyond which a player has long given up.
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03,
                                      0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.0)

#: Collector pause bucket upper bounds (seconds): a young collection takes well under a
#: millisecond; a full one on a busy GIL-build server tens of milliseconds, a stall for every
#: client on it.
GC_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5, 1.0)

_HISTOGRAM_HELP = {
    TICK_DURATION: "Wall time of each server tick (inputs swapped in, runtime step, snapshot "
                   "jobs), in seconds.",
    INPUT_LATENCY: "Time from an input message's arrival to the start of the tick that applied "
                   "it, in seconds (inputs superseded before a tick are not observed).",
    GC_PAUSE: "Pauses of the server process's cyclic garbage collector (every thread of the "
              "process waits), in seconds; /stats has them per generation.",
}


class Histogram:
    """Cumulative counts of observations in fixed buckets, safe to share between threads.

    The ticker thread observes while the event loop renders ``/metrics``; on a free-threaded
    build both run at once, so every access takes one lock (held for a bisect and two additions;
    :meth:`observe_many` takes it once for a batch).

    Args:
        buckets: upper bounds in seconds, strictly increasing and finite; ``+Inf`` is implied.

    Raises:
        ValueError: empty, unsorted, repeated or non-finite bounds.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds:
            raise ValueError("a histogram needs at least one bucket bound")
        if not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"bucket bounds must be finite (+Inf is implied), got {bounds}")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"bucket bounds must be strictly increasing, got {bounds}")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Count one observation.

        A negative or NaN value (clocks read on two threads) is counted as 0, so that ``_sum``
        never decreases: Prometheus treats a decreasing counter as a reset.
        """
        if not seconds >= 0.0:
            seconds = 0.0
        i = bisect.bisect_left(self.bounds, seconds)  # first bound >= value: le is inclusive
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def observe_many(self, values: Iterable[float]) -> None:
        """Count a batch of observations under one lock acquisition (e.g. one tick's inputs)."""
        clean = [v if v >= 0.0 else 0.0 for v in values]
        slots = [bisect.bisect_left(self.bounds, v) for v in clean]
        with self._lock:
            for i in slots:
                self._counts[i] += 1
            self._sum += sum(clean)

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]:
        """A consistent copy: ``(buckets, sum, count)``.

        ``buckets`` is cumulative, one ``(le, count)`` per bound and a last ``(inf, count)``,
        the shape of Prometheus' ``_bucket`` series.
        """
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        return cumulative(self.bounds, counts, total)


class HistogramSource(Protocol):
    """What :func:`render` reads of a histogram: :meth:`Histogram.snapshot`'s shape (also
    :class:`server.gcwatch.GcWatch`, whose counts the collector itself writes)."""

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]: ...


def cumulative(bounds: Sequence[float], counts: Sequence[int], total: float,
               ) -> tuple[list[tuple[float, int]], float, int]:
    """``(buckets, sum, count)`` from per-bucket counts (the last one is ``+Inf``'s)."""
    out: list[tuple[float, int]] = []
    running = 0
    for le, n in zip((*bounds, math.inf), counts, strict=True):
        running += n
        out.append((le, running))
    return out, total, running


def server_histograms() -> dict[str, Histogram]:
    """Fresh histograms for one server, keyed by metric name (:func:`render`'s argument)."""
    return {TICK_DURATION: Histogram(TICK_BUCKETS), INPUT_LATENCY: Histogram(LATENCY_BUCKETS)}


# ---- the mapping from /stats fields to metric families ------------------------------------------
# (path in the stats tree, exposed name, help, scale).  Counter names are written with their
# `_total` so that the exposed name can be found here with grep; prometheus_client adds it back.
_Field = tuple[tuple[str, ...], str, str, float]

_GAUGES: tuple[_Field, ...] = (
    (("tick",), "paratick_world_tick", "Tick number the world has reached.", 1),
    (("uptime_s",), "paratick_uptime_seconds", "Seconds since the server started.", 1),
    (("ticker", "tick_rate_target"), "paratick_tick_rate_target_hertz",
     "Ticks per second the ticker aims for.", 1),
    (("ticker", "budget_ms"), "paratick_tick_budget_seconds",
     "Wall time one tick may take at the target rate (1 / target), in seconds.", 1e-3),
    (("ticker", "tick_rate_actual"), "paratick_tick_rate_average_hertz",
     "Ticks per second averaged since the ticker started; rate(paratick_ticks_total[1m]) "
     "gives the recent rate.", 1),
    (("connections", "open"), "paratick_connections_open",
     "Websocket connections open (handshake done), playing or not.", 1),
    (("connections", "playing"), "paratick_connections_playing",
     "Connections that said hello and control a player entity.", 1),
    (("connections", "peak"), "paratick_connections_peak",
     "Most connections open at once since the server started.", 1),
    (("connections", "addresses"), "paratick_connection_addresses",
     "Distinct client IP addresses with an open connection.", 1),
    (("connections", "max"), "paratick_connections_max",
     "Connection cap in force (the setting, lowered to what the descriptor limit allows).", 1),
    (("connections", "max_per_address"), "paratick_connections_per_address_max",
     "Per-address connection cap in force.", 1),
    (("connections", "transports"), "paratick_transports_open",
     "TCP transports open, handshakes and HTTP requests included.", 1),
    (("sessions", "active"), "paratick_sessions_active",
     "Sessions holding a player entity (connected, or within the reconnect grace).", 1),
    (("sessions", "free"), "paratick_sessions_free",
     "Player entities free for a new session.", 1),
    (("settings", "players"), "paratick_players_max",
     "Player entities pre-spawned: the session cap.", 1),
    (("settings", "snapshot_rate"), "paratick_snapshot_rate_target_hertz",
     "Snapshots per second sent to each playing client.", 1),
    (("runtime", "ticks_per_s"), "paratick_runtime_tick_rate_hertz",
     "Lockstep ticks per second over the runtime's recent window of ticks.", 1),
    (("runtime", "entities"), "paratick_entities",
     "Entities in the world (players and NPCs), all shards.", 1),
    (("gc", "pause_ms_max"), "paratick_gc_pause_max_seconds",
     "Longest pause of the server process's garbage collector since it started, in seconds.",
     1e-3),
)

_COUNTERS: tuple[_Field, ...] = (
    (("ticker", "ticks"), "paratick_ticks_total", "Ticks run by the server's ticker.", 1),
    (("gc", "collected"), "paratick_gc_objects_collected_total",
     "Objects the server process's garbage collector found unreachable and freed.", 1),
    (("ticker", "deadline_misses"), "paratick_tick_deadline_misses_total",
     "Ticks that started after their deadline.", 1),
    (("ticker", "skipped"), "paratick_ticks_skipped_total",
     "Ticks never run: a backlog dropped after a stall so the world clock keeps real time.", 1),
    (("ticker", "catch_up_ticks"), "paratick_ticks_catch_up_total",
     "Late ticks run back to back to catch up with the schedule.", 1),
    (("connections", "accepted"), "paratick_connections_accepted_total",
     "Websocket connections accepted (handshake completed).", 1),
    (("connections", "dropped"), "paratick_connections_dropped_total",
     "Connections lost without a clean close from either side.", 1),
    (("connections", "rejected_address"), "paratick_connections_rejected_address_total",
     "Connections refused because their address reached the per-address cap.", 1),
    (("connections", "rejected_full"), "paratick_connections_rejected_full_total",
     "Connections refused because the server was full.", 1),
    (("connections", "refused_descriptors"), "paratick_transports_refused_descriptors_total",
     "TCP connections refused before the handshake: too few file descriptors left.", 1),
    (("connections", "hello_timeouts"), "paratick_hello_timeouts_total",
     "Connections closed for not saying hello in time.", 1),
    (("connections", "idle_timeouts"), "paratick_idle_timeouts_total",
     "Connections closed for sending nothing for too long.", 1),
    (("connections", "control_floods"), "paratick_control_floods_total",
     "Connections closed for sending pings/pongs faster than allowed.", 1),
    (("connections", "message_floods"), "paratick_message_floods_total",
     "Connections closed for sending messages far faster than the input rate.", 1),
    (("connections", "write_stalls"), "paratick_write_stalls_total",
     "Connections aborted because the client stopped reading its output.", 1),
    (("connections", "read_pauses"), "paratick_read_pauses_total",
     "Times reading from a client was paused for backpressure.", 1),
    (("sessions", "created"), "paratick_sessions_created_total", "Sessions created.", 1),
    (("sessions", "resumed"), "paratick_sessions_resumed_total",
     "Sessions resumed with a token after a reconnect.", 1),
    (("sessions", "expired"), "paratick_sessions_expired_total",
     "Sessions that ended after their reconnect grace ran out.", 1),
    (("sessions", "bad_token"), "paratick_session_bad_tokens_total",
     "Hellos refused for an unknown or expired session token.", 1),
    (("sessions", "full"), "paratick_sessions_refused_full_total",
     "Hellos refused because no player entity was free.", 1),
    (("messages", "in"), "paratick_messages_received_total",
     "Websocket messages received from clients.", 1),
    (("messages", "out"), "paratick_messages_sent_total",
     "Websocket messages sent to clients.", 1),
    (("messages", "bytes_in"), "paratick_received_bytes_total",
     "Payload bytes received from clients.", 1),
    (("messages", "bytes_out"), "paratick_sent_bytes_total", "Payload bytes sent to clients.", 1),
    (("messages", "inputs"), "paratick_inputs_total", "Input messages accepted.", 1),
    (("messages", "snapshots_out"), "paratick_snapshots_sent_total",
     "World snapshots sent to clients.", 1),
    (("messages", "snapshots_dropped"), "paratick_snapshots_dropped_total",
     "Snapshots dropped unsent because a newer one superseded them in a full queue.", 1),
    (("messages", "bad"), "paratick_bad_messages_total",
     "Messages refused as malformed or invalid.", 1),
    (("messages", "rate_limited"), "paratick_inputs_rate_limited_total",
     "Inputs dropped for exceeding the per-connection input rate.", 1),
    (("messages", "errors_dropped"), "paratick_error_messages_dropped_total",
     "Error messages not sent because the client's control queue was full.", 1),
    (("messages", "internal_errors"), "paratick_internal_errors_total",
     "Server bugs caught while handling a connection (logged with a traceback).", 1),
    (("messages", "snapshot_errors"), "paratick_snapshot_errors_total",
     "Ticks x workers whose snapshot building failed (a server bug, logged; those clients "
     "missed that snapshot).", 1),
)

#: Per-worker channel counters (``runtime.workers[].channel`` and ``coordinator_channel``).
_CHANNEL_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("messages_sent", "paratick_channel_sent_messages_total",
     "Messages sent on the runtime's inter-worker channels"),
    ("bytes_sent", "paratick_channel_sent_bytes_total",
     "Bytes sent on the runtime's inter-worker channels"),
    ("messages_received", "paratick_channel_received_messages_total",
     "Messages received on the runtime's inter-worker channels"),
    ("bytes_received", "paratick_channel_received_bytes_total",
     "Bytes received on the runtime's inter-worker channels"),
    ("full_events", "paratick_channel_full_total",
     "Sends that found the runtime's channel full and waited (backpressure)"),
)
_CHANNEL_LABEL = ", by worker (worker=\"coordinator\" for the coordinator's end)."

#: Statistics of a runtime window, as the ``stat`` label: JSON key -> label value.
_WINDOW_STATS = ("p50", "p95", "p99", "max", "mean")


class StatsCollector(Collector):
    """A ``prometheus_client`` collector over one ``/stats`` snapshot and the histograms.

    Register it in a registry of your own (``CollectorRegistry(auto_describe=False)``: the
    families depend on the snapshot, so describing them would mean collecting twice).

    Args:
        stats: a dict shaped like :meth:`GameServer.stats <server.app.GameServer.stats>`.
        histograms: :class:`HistogramSource` by metric name (:data:`TICK_DURATION`,
            :data:`INPUT_LATENCY`, :data:`GC_PAUSE`); see :func:`server_histograms`.

    Raises:
        ValueError: a histogram name this module has no help text for.
    """

    def __init__(self, stats: Mapping[str, Any],
                 histograms: Mapping[str, HistogramSource]) -> None:
        unknown = sorted(set(histograms) - set(_HISTOGRAM_HELP))
        if unknown:
            raise ValueError(f"unknown histogram names {unknown}; known: {sorted(_HISTOGRAM_HELP)}")
        self.stats = stats
        self.histograms = histograms

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield _build_info(s)
        ticker = s.get("ticker")
        if isinstance(ticker, Mapping) and "fault" in ticker:  # {} before the ticker starts
            yield _gauge("paratick_ticker_failed",
                         "1 once the ticker stopped on an exception (the world no longer "
                         "advances), else 0.", 1.0 if ticker["fault"] else 0.0)
        for path, name, doc, scale in _GAUGES:
            value = _number(_get(s, path))
            if value is not None:
                yield _gauge(name, doc, value * scale)
        for path, name, doc, scale in _COUNTERS:
            value = _number(_get(s, path))
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value * scale)
        yield from self._errors_sent(s)
        yield from self._histograms()
        runtime = s.get("runtime")
        if isinstance(runtime, Mapping):
            yield _gauge("paratick_runtime_metrics_failed",
                         "1 when the runtime's metrics could not be read (its per-shard and "
                         "per-worker series are then missing), else 0.",
                         1.0 if "error" in runtime else 0.0)
            yield from _shards(runtime.get("shards") or ())
            yield from _workers(runtime.get("workers") or (), runtime.get("coordinator_channel"))
            coordination = GaugeMetricFamily(
                "paratick_lockstep_coordination_window_seconds",
                "What the lockstep itself costs per tick (the step's wall time less the slowest "
                "worker's compute) over the runtime's recent window, in seconds; stat is p50, "
                "p95, p99, max or mean.", labels=["stat"])
            _add_window(coordination, [], runtime.get("coordination_ms"))
            if coordination.samples:
                yield coordination

    def _errors_sent(self, s: Mapping[str, Any]) -> Iterator[Metric]:
        sent = _get(s, ("messages", "errors_sent"))
        if not isinstance(sent, Mapping):
            return
        fam = CounterMetricFamily("paratick_error_messages_sent_total",
                                  "Error messages sent to clients, by error code.",
                                  labels=["code"])
        # Every known code from 0, so rate() sees a code's first error; unknown ones as sent.
        counts = {str(code): 0.0 for code in ErrorCode}
        counts.update({str(k): float(v) for k, v in sent.items() if _number(v) is not None})
        for code, n in sorted(counts.items()):
            fam.add_metric([code], n)
        yield fam

    def _histograms(self) -> Iterator[Metric]:
        for name, hist in sorted(self.histograms.items()):
            buckets, total, _count = hist.snapshot()
            fam = HistogramMetricFamily(name, _HISTOGRAM_HELP[name])
            fam.add_metric([], [(floatToGoString(le), float(n)) for le, n in buckets], total)
            yield fam


def render(stats: Mapping[str, Any], histograms: Mapping[str, HistogramSource]) -> bytes:
    """The Prometheus text exposition of one ``/stats`` snapshot and the server's histograms.

    Args:
        stats: a dict shaped like :meth:`GameServer.stats <server.app.GameServer.stats>`.
        histograms: :class:`HistogramSource` by metric name (see :func:`server_histograms`);
            may be empty.

    Returns:
        The body for ``GET /metrics``, to be served as :data:`CONTENT_TYPE`.

    Raises:
        ValueError: a histogram name this module has no help text for.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, histograms))
    return generate_latest(registry)


# ---- helpers ------------------------------------------------------------------------------------
def _shards(shards: Iterable[Any]) -> Iterator[Metric]:
    entities = GaugeMetricFamily("paratick_shard_entities", "Entities in one region (shard).",
                                 labels=["region", "worker"])
    window = GaugeMetricFamily(
        "paratick_shard_tick_window_seconds",
        "One region's advance per tick over the runtime's recent window of ticks, "
        "in seconds; stat is p50, p95, p99, max or mean of that window.",
        labels=["region", "worker", "stat"])
    for shard in shards:
        if not isinstance(shard, Mapping) or shard.get("region") is None:
            continue
        labels = [str(shard["region"]), _label(shard.get("worker"))]
        if (n := _number(shard.get("entities"))) is not None:
            entities.add_metric(labels, n)
        _add_window(window, labels, shard.get("mspt"))
    yield from (f for f in (entities, window) if f.samples)


def _workers(workers: Iterable[Any], coordinator: Any) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "paratick_worker_info",
        "Runtime worker facts as labels (value always 1): whether its interpreter runs with the "
        "GIL and whether msgpack's C extension is loaded.",
        labels=["worker", "gil_enabled", "cmsgpack"])
    tick = GaugeMetricFamily(
        "paratick_worker_tick_window_seconds",
        "One worker's whole tick (advance, border exchange, absorb, snapshot jobs) over the "
        "runtime's recent window, in seconds; stat is p50, p95, p99, max or mean.",
        labels=["worker", "stat"])
    wait = GaugeMetricFamily(
        "paratick_worker_border_wait_window_seconds",
        "Time one worker waited for its neighbours' border data per tick over the runtime's "
        "recent window, in seconds; stat is p50, p95, p99, max or mean.",
        labels=["worker", "stat"])
    faults = CounterMetricFamily("paratick_worker_faults_recovered_total",
                                 "Faults a worker recovered from (its shards restored).",
                                 labels=["worker"])
    hook_errors = CounterMetricFamily("paratick_worker_hook_errors_total",
                                      "Snapshot jobs that raised in a worker.", labels=["worker"])
    backlog = GaugeMetricFamily(
        "paratick_channel_backlog_max",
        "Most messages ever queued on a runtime channel at once" + _CHANNEL_LABEL,
        labels=["worker"])
    channels = {key: CounterMetricFamily(name, doc + _CHANNEL_LABEL, labels=["worker"])
                for key, name, doc in _CHANNEL_COUNTERS}

    def add_channel(worker: str, channel: Any) -> None:
        if not isinstance(channel, Mapping):
            return
        for key, fam in channels.items():
            if (n := _number(channel.get(key))) is not None:
                fam.add_metric([worker], n)
        if (n := _number(channel.get("max_backlog"))) is not None:
            backlog.add_metric([worker], n)

    for w in workers:
        if not isinstance(w, Mapping) or w.get("worker") is None:
            continue
        worker = str(w["worker"])
        info.add_metric([worker, _flag(w.get("gil_enabled")), _flag(w.get("cmsgpack"))], 1.0)
        _add_window(tick, [worker], w.get("mspt"))
        _add_window(wait, [worker], w.get("border_wait_ms"))
        if (n := _number(w.get("faults_recovered"))) is not None:
            faults.add_metric([worker], n)
        if (n := _number(w.get("hook_errors"))) is not None:
            hook_errors.add_metric([worker], n)
        add_channel(worker, w.get("channel"))
    add_channel("coordinator", coordinator)
    families: list[Metric] = [info, tick, wait, faults, hook_errors, *channels.values(), backlog]
    yield from (f for f in families if f.samples)


def _add_window(fam: GaugeMetricFamily, labels: list[str], summary: Any) -> None:
    """Add a runtime window's statistics (milliseconds in the JSON) to ``fam`` in seconds."""
    if not isinstance(summary, Mapping):
        return
    for stat in _WINDOW_STATS:
        if (ms := _number(summary.get(stat))) is not None:
            fam.add_metric([*labels, stat], ms / 1e3)


def _build_info(s: Mapping[str, Any]) -> Metric:
    backend = _get(s, ("runtime", "backend")) or _get(s, ("settings", "backend")) or ""
    kernel = _get(s, ("runtime", "kernel")) or _get(s, ("settings", "kernel")) or ""
    gil = host.gil_enabled()
    fam = GaugeMetricFamily(
        "paratick_build_info",
        "The server build as labels (value always 1): paratick version, Python version, "
        "whether the server process runs with the GIL, runtime backend, kernel and the event "
        "loop serving clients (uvloop or asyncio).",
        labels=["version", "python", "gil_enabled", "backend", "kernel", "loop"])
    fam.add_metric([_version(), platform.python_version(), _flag(gil), str(backend),
                    str(kernel), str(s.get("loop", ""))], 1.0)
    return fam


@cache
def _version() -> str:
    try:
        return metadata.version("paratick")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _number(value: Any) -> float | None:
    """A finite number as float; None for null, NaN, strings and other non-numbers."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _flag(value: Any) -> str:
    return "unknown" if value is None else str(bool(value)).lower()

