"""The Prometheus exposition: names, types, units and labels of ``GET /metrics``, histogram
bucket math, and ``promtool check metrics`` on a live server's metrics."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from websockets.sync.client import connect

from server.exposition import (
    CONTENT_TYPE,
    GC_BUCKETS,
    GC_PAUSE,
    INPUT_LATENCY,
    LATENCY_BUCKETS,
    TICK_BUCKETS,
    TICK_DURATION,
    Histogram,
    render,
    server_histograms,
)
from server.harness import ServerThread
from server.protocol import CODECS, SUBPROTOCOL_JSON, ErrorCode, Hello, Input

Start = Callable[..., ServerThread]

# A real /stats answer (`paratick serve --backend threads --workers 2`, 4 s in, curl /stats),
# with the client-side counters filled in as if a few clients had played.
STATS: dict[str, Any] = {
    "tick": 114, "uptime_s": 3.7806234610000047,
    "ticker": {"ticks": 114, "tick_rate_target": 30.0, "tick_rate_actual": 30.15395271962397,
               "mspt_mean": 4.236390631574164, "mspt_p50": 3.781100999958653,
               "mspt_p95": 6.855222000012873, "mspt_p99": 8.561115000020436,
               "mspt_max": 9.138797999867165, "budget_ms": 33.333333333333336,
               "deadline_misses": 0, "skipped": 0, "catch_up_ticks": 0, "fault": None},
    "connections": {"open": 3, "playing": 2, "peak": 5, "accepted": 7, "dropped": 1,
                    "rejected_address": 0, "rejected_full": 0, "addresses": 1, "max": 4096,
                    "max_per_address": 1100, "transports": 4, "refused_descriptors": 0,
                    "hello_timeouts": 1, "idle_timeouts": 0, "control_floods": 0,
                    "message_floods": 0, "write_stalls": 0, "read_pauses": 0},
    "sessions": {"active": 2, "free": 1022, "created": 3, "resumed": 1, "expired": 0,
                 "bad_token": 0, "full": 0},
    "messages": {"in": 412, "out": 1180, "bytes_in": 9876, "bytes_out": 1234567, "inputs": 400,
                 "snapshots_out": 1170, "snapshots_dropped": 3, "bad": 2, "rate_limited": 5,
                 "errors_dropped": 0, "internal_errors": 0, "snapshot_errors": 2,
                 "errors_sent": {"malformed": 2, "rate_limited": 5}},
    "settings": {"host": "127.0.0.1", "port": 0, "snapshot_rate": 20.0, "players": 1024,
                 "npcs": 1000, "backend": "threads", "workers": 2, "kernel": "python",
                 "max_frame": 4096, "input_rate": 60.0, "input_burst": 10.0, "max_strikes": 8,
                 "hello_timeout": 10.0, "idle_timeout": 120.0, "control_rate": 4.0,
                 "control_burst": 16.0, "write_stall_timeout": 10.0, "send_buffer": 262144,
                 "max_per_address": 1100, "max_connections": 4096, "send_queue": 4,
                 "grace": 10.0, "origins": [], "certfile": None, "keyfile": None,
                 "public_stats": False},
    "world": {"width": 2048.0, "height": 2048.0, "regions_x": 2, "regions_y": 2,
              "tick_rate": 30.0, "radius": 4.0, "max_speed": 120.0, "drag": 0.5,
              "player_accel": 240.0, "boost": 2.0, "turn_rate": 3.141592653589793,
              "stiffness": 30.0, "wander_period": 32, "wander_kick": 60.0,
              "view_radius": 128.0, "seed": 1},
    "runtime": {
        "backend": "threads", "kernel": "python", "tick": 94, "ticks": 94,
        "ticks_per_s": 29.997554686431407, "entities": 2024,
        "mspt": {"p50": 3.7520119999499, "p95": 7.2810229999049625, "p99": 9.088121999866416,
                 "max": 9.088121999866416, "mean": 4.213802329776955, "n": 94},
        "worker_gil": [True, True],
        "shards": [
            {"region": 0, "worker": 0, "entities": 525,
             "mspt": {"p50": 0.9378300001117168, "p95": 1.4410960000077466,
                      "p99": 3.584783999940555, "max": 3.584783999940555,
                      "mean": 1.0281753510622713, "n": 94}},
            {"region": 1, "worker": 0, "entities": 485,
             "mspt": {"p50": 0.6745299999693088, "p95": 1.0794509998959256,
                      "p99": 2.8033659998527583, "max": 2.8033659998527583,
                      "mean": 0.782504765957225, "n": 94}},
            {"region": 2, "worker": 1, "entities": 493,
             "mspt": {"p50": 0.7757999999284948, "p95": 1.1886419999882492,
                      "p99": 1.7591180001090834, "max": 1.7591180001090834,
                      "mean": 0.8435166702253248, "n": 94}},
            {"region": 3, "worker": 1, "entities": 521,
             "mspt": {"p50": 0.7179440001436888, "p95": 1.4564489999884245,
                      "p99": 3.6559989998750098, "max": 3.6559989998750098,
                      "mean": 0.9113080319085829, "n": 94}}],
        "workers": [
            {"worker": 0, "gil_enabled": True, "cmsgpack": True, "pid": 10922, "interpreter": 0,
             "regions": [0, 1],
             "mspt": {"p50": 3.5109039999952074, "p95": 6.158689000130835,
                      "p99": 8.395610999968994, "max": 8.395610999968994,
                      "mean": 3.723380117016762, "n": 94},
             "border_wait_ms": {"p50": 1.750705999938873, "p95": 3.3424600001126237,
                                "p99": 5.536312999993243, "max": 5.536312999993243,
                                "mean": 1.8708736064015883, "n": 94},
             "channel": {"messages_sent": 189, "bytes_sent": 48308, "messages_received": 189,
                         "bytes_received": 35635, "full_events": 0, "max_backlog": 2},
             "faults_recovered": 0, "last_fault": "", "hook_errors": 0},
            {"worker": 1, "gil_enabled": True, "cmsgpack": True, "pid": 10922, "interpreter": 0,
             "regions": [2, 3],
             "mspt": {"p50": 1.7339010000796407, "p95": 4.810821000091892,
                      "p99": 6.496579999975438, "max": 6.496579999975438,
                      "mean": 2.086850606370388, "n": 94},
             "border_wait_ms": {"p50": 0.04255299995747919, "p95": 1.7144910000297386,
                                "p99": 4.365960999848539, "max": 4.365960999848539,
                                "mean": 0.3041384787409581, "n": 94},
             "channel": {"messages_sent": 189, "bytes_sent": 54831, "messages_received": 189,
                         "bytes_received": 29112, "full_events": 0, "max_backlog": 2},
             "faults_recovered": 0, "last_fault": "", "hook_errors": 0}],
        "coordinator_channel": {"messages_sent": 188, "bytes_sent": 1316,
                                "messages_received": 190, "bytes_received": 40136,
                                "full_events": 0, "max_backlog": 2}},
    "gc": {"collections": 41, "pause_ms_total": 97.5, "pause_ms_max": 61.0, "collected": 5120,
           "by_generation": [{"generation": 0, "collections": 36, "pause_ms_total": 15.5,
                              "pause_ms_max": 1.5},
                             {"generation": 2, "collections": 1, "pause_ms_total": 61.0,
                              "pause_ms_max": 61.0}],
           "threshold": [700, 10, 10], "frozen": 0},
}

#: Every family the literal above exposes, by exposed name (counters with ``_total``).
EXPECTED_TYPES = {
    "paratick_build_info": "gauge",
    "paratick_ticker_failed": "gauge",
    "paratick_world_tick": "gauge",
    "paratick_uptime_seconds": "gauge",
    "paratick_tick_rate_target_hertz": "gauge",
    "paratick_tick_budget_seconds": "gauge",
    "paratick_tick_rate_average_hertz": "gauge",
    "paratick_connections_open": "gauge",
    "paratick_connections_playing": "gauge",
    "paratick_connections_peak": "gauge",
    "paratick_connection_addresses": "gauge",
    "paratick_connections_max": "gauge",
    "paratick_connections_per_address_max": "gauge",
    "paratick_transports_open": "gauge",
    "paratick_sessions_active": "gauge",
    "paratick_sessions_free": "gauge",
    "paratick_players_max": "gauge",
    "paratick_snapshot_rate_target_hertz": "gauge",
    "paratick_runtime_tick_rate_hertz": "gauge",
    "paratick_entities": "gauge",
    "paratick_ticks_total": "counter",
    "paratick_tick_deadline_misses_total": "counter",
    "paratick_ticks_skipped_total": "counter",
    "paratick_ticks_catch_up_total": "counter",
    "paratick_connections_accepted_total": "counter",
    "paratick_connections_dropped_total": "counter",
    "paratick_connections_rejected_address_total": "counter",
    "paratick_connections_rejected_full_total": "counter",
    "paratick_transports_refused_descriptors_total": "counter",
    "paratick_hello_timeouts_total": "counter",
    "paratick_idle_timeouts_total": "counter",
    "paratick_control_floods_total": "counter",
    "paratick_message_floods_total": "counter",
    "paratick_write_stalls_total": "counter",
    "paratick_read_pauses_total": "counter",
    "paratick_sessions_created_total": "counter",
    "paratick_sessions_resumed_total": "counter",
    "paratick_sessions_expired_total": "counter",
    "paratick_session_bad_tokens_total": "counter",
    "paratick_sessions_refused_full_total": "counter",
    "paratick_messages_received_total": "counter",
    "paratick_messages_sent_total": "counter",
    "paratick_received_bytes_total": "counter",
    "paratick_sent_bytes_total": "counter",
    "paratick_inputs_total": "counter",
    "paratick_snapshots_sent_total": "counter",
    "paratick_snapshots_dropped_total": "counter",
    "paratick_bad_messages_total": "counter",
    "paratick_inputs_rate_limited_total": "counter",
    "paratick_error_messages_dropped_total": "counter",
    "paratick_internal_errors_total": "counter",
    "paratick_snapshot_errors_total": "counter",
    "paratick_error_messages_sent_total": "counter",
    "paratick_tick_duration_seconds": "histogram",
    "paratick_input_latency_seconds": "histogram",
    "paratick_gc_pause_seconds": "histogram",
    "paratick_gc_pause_max_seconds": "gauge",
    "paratick_gc_objects_collected_total": "counter",
    "paratick_runtime_metrics_failed": "gauge",
    "paratick_shard_entities": "gauge",
    "paratick_shard_tick_window_seconds": "gauge",
    "paratick_worker_info": "gauge",
    "paratick_worker_tick_window_seconds": "gauge",
    "paratick_worker_border_wait_window_seconds": "gauge",
    "paratick_worker_faults_recovered_total": "counter",
    "paratick_worker_hook_errors_total": "counter",
    "paratick_channel_sent_messages_total": "counter",
    "paratick_channel_sent_bytes_total": "counter",
    "paratick_channel_received_messages_total": "counter",
    "paratick_channel_received_bytes_total": "counter",
    "paratick_channel_full_total": "counter",
    "paratick_channel_backlog_max": "gauge",
}

PROMTOOL_INSTALL = "apt-get install -y prometheus"


def parse(text: bytes) -> dict[str, Any]:
    """Families by exposed name: the parser drops a counter's ``_total``, we put it back."""
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        assert name not in out, f"family {name} exposed twice"
        out[name] = fam
    return out


def value(fam: Any, **labels: str) -> float:
    """The one sample of ``fam`` whose labels include ``labels`` (histograms: not here)."""
    hits = [s for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, f"{fam.name}{labels}: {hits}"
    return float(hits[0].value)


def with_observations() -> dict[str, Histogram]:
    h = server_histograms()
    h[TICK_DURATION].observe_many([0.004, 0.006, 0.031, 0.040])
    h[INPUT_LATENCY].observe_many([0.002, 0.012, 0.030, 3.0])
    h[GC_PAUSE] = Histogram(GC_BUCKETS)  # the server's is its GcWatch: the same shape
    h[GC_PAUSE].observe_many([0.0004, 0.061])
    return h


# ---- names, types, help, units, labels ----------------------------------------------------------
def test_every_family_has_the_expected_name_type_and_help() -> None:
    fams = parse(render(STATS, with_observations()))
    assert {n: f.type for n, f in fams.items()} == EXPECTED_TYPES
    for name, fam in fams.items():
        assert name.startswith("paratick_")
        assert len(fam.documentation) > 15, f"{name} has no real HELP text"
        assert name.endswith("_total") == (fam.type == "counter"), name
        parts = set(name.split("_"))
        assert not parts & {"ms", "s", "mspt", "msec", "millis", "milliseconds", "pid"}, name


def test_counter_samples_end_in_total_and_nothing_else_does() -> None:
    for fam in text_string_to_metric_families(render(STATS, with_observations()).decode()):
        for sample in fam.samples:
            assert sample.name.endswith("_total") == (fam.type == "counter"), sample.name


def test_values_are_in_base_units() -> None:
    fams = parse(render(STATS, {}))
    assert value(fams["paratick_tick_budget_seconds"]) == pytest.approx(1 / 30)
    assert value(fams["paratick_uptime_seconds"]) == pytest.approx(3.78062346)
    window = fams["paratick_shard_tick_window_seconds"]
    assert value(window, region="3", stat="p99") == pytest.approx(3.6559989998750098e-3)
    assert value(window, region="0", stat="mean") == pytest.approx(1.0281753510622713e-3)
    wait = fams["paratick_worker_border_wait_window_seconds"]
    assert value(wait, worker="1", stat="max") == pytest.approx(4.365960999848539e-3)
    assert value(fams["paratick_worker_tick_window_seconds"], worker="0", stat="p50") \
        == pytest.approx(3.5109039999952074e-3)
    assert value(fams["paratick_sent_bytes_total"]) == 1234567
    assert value(fams["paratick_tick_rate_target_hertz"]) == 30


def test_counters_and_gauges_carry_the_snapshot_values() -> None:
    fams = parse(render(STATS, {}))
    expect = {"paratick_connections_open": 3, "paratick_connections_playing": 2,
              "paratick_connections_peak": 5, "paratick_connections_accepted_total": 7,
              "paratick_connections_dropped_total": 1, "paratick_hello_timeouts_total": 1,
              "paratick_messages_received_total": 412, "paratick_inputs_total": 400,
              "paratick_inputs_rate_limited_total": 5, "paratick_sessions_free": 1022,
              "paratick_players_max": 1024, "paratick_ticks_total": 114,
              "paratick_world_tick": 114, "paratick_entities": 2024,
              "paratick_ticker_failed": 0, "paratick_runtime_metrics_failed": 0,
              "paratick_snapshot_errors_total": 2}
    assert {name: value(fams[name]) for name in expect} == expect


def test_per_shard_per_worker_and_per_code_labels() -> None:
    fams = parse(render(STATS, {}))
    shards = fams["paratick_shard_entities"]
    assert {(s.labels["region"], s.labels["worker"], s.value) for s in shards.samples} == {
        ("0", "0", 525), ("1", "0", 485), ("2", "1", 493), ("3", "1", 521)}
    window = fams["paratick_shard_tick_window_seconds"]
    assert {s.labels["stat"] for s in window.samples} == {"p50", "p95", "p99", "max", "mean"}
    assert len(window.samples) == 4 * 5
    sent = fams["paratick_channel_sent_bytes_total"]
    assert {s.labels["worker"]: s.value for s in sent.samples} == {
        "0": 48308, "1": 54831, "coordinator": 1316}
    assert {s.labels["worker"]: s.value for s in fams["paratick_channel_backlog_max"].samples} \
        == {"0": 2, "1": 2, "coordinator": 2}
    info = fams["paratick_worker_info"]
    assert [(s.labels, s.value) for s in info.samples] == [
        ({"worker": "0", "gil_enabled": "true", "cmsgpack": "true"}, 1.0),
        ({"worker": "1", "gil_enabled": "true", "cmsgpack": "true"}, 1.0)]
    errors = fams["paratick_error_messages_sent_total"]
    by_code = {s.labels["code"]: s.value for s in errors.samples}
    assert set(by_code) == {str(code) for code in ErrorCode}  # every code, from 0
    assert by_code["malformed"] == 2 and by_code["rate_limited"] == 5
    assert sum(by_code.values()) == 7


def test_build_info_is_labels_with_value_one() -> None:
    fams = parse(render(STATS, {}))
    (sample,) = fams["paratick_build_info"].samples
    assert sample.value == 1
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    assert sample.labels["gil_enabled"] == str(gil).lower()
    assert sample.labels["backend"] == "threads" and sample.labels["kernel"] == "python"
    assert sample.labels["python"].startswith("3.")
    assert sample.labels["version"]


def test_no_pid_and_no_settings_or_world_dump() -> None:
    fams = parse(render(STATS, {}))
    samples = [s for fam in fams.values() for s in fam.samples]
    assert 10922 not in {s.value for s in samples}  # the workers' pid
    words = {s.name for s in samples} | {k for s in samples for k in s.labels}
    for leaked in ("pid", "settings", "world_width", "max_frame", "input_burst", "wander",
                   "mspt", "_ms", "interpreter", "last_fault", "regions"):
        assert not [w for w in words if leaked in w], leaked


def test_missing_and_null_fields_are_left_out_not_zeroed() -> None:
    fams = parse(render({}, {}))
    assert set(fams) == {"paratick_build_info"}
    partial: dict[str, Any] = {
        "ticker": {},  # before the ticker starts
        "runtime": {"error": "RuntimeError: boom"},
        "connections": {"open": 2, "peak": None},
    }
    fams = parse(render(partial, {}))
    assert set(fams) == {"paratick_build_info", "paratick_connections_open",
                         "paratick_runtime_metrics_failed"}
    assert value(fams["paratick_runtime_metrics_failed"]) == 1
    empty_window = json.loads(json.dumps(STATS))
    empty_window["runtime"]["shards"][0]["mspt"] = {k: None for k in ("p50", "p95", "p99", "max",
                                                                      "mean")} | {"n": 0}
    empty_window["ticker"]["fault"] = "RuntimeError: boom"
    fams = parse(render(empty_window, {}))
    assert {s.labels["region"] for s in fams["paratick_shard_tick_window_seconds"].samples} \
        == {"1", "2", "3"}
    assert value(fams["paratick_ticker_failed"]) == 1


def test_content_type_is_the_libraries() -> None:
    assert CONTENT_TYPE == CONTENT_TYPE_LATEST
    assert CONTENT_TYPE.startswith("text/plain")


def test_unknown_histogram_names_are_refused() -> None:
    with pytest.raises(ValueError, match="paratick_typo_seconds"):
        render(STATS, {"paratick_typo_seconds": Histogram(TICK_BUCKETS)})


# ---- histograms ---------------------------------------------------------------------------------
def test_histogram_buckets_are_cumulative_and_le_is_inclusive() -> None:
    h = Histogram([0.01, 0.1, 1.0])
    for seconds in (0.0, 0.005, 0.01, 0.010001, 0.1, 0.5, 1.0, 7.0):
        h.observe(seconds)
    buckets, total, count = h.snapshot()
    assert buckets == [(0.01, 3), (0.1, 5), (1.0, 7), (math.inf, 8)]
    assert count == 8
    assert total == pytest.approx(0.005 + 0.01 + 0.010001 + 0.1 + 0.5 + 1.0 + 7.0)


def test_histogram_counts_negative_and_nan_as_zero() -> None:
    h = Histogram([0.01])
    h.observe(-0.5)
    h.observe(math.nan)
    h.observe_many([-1.0, math.nan])
    assert h.snapshot() == ([(0.01, 4), (math.inf, 4)], 0.0, 4)


def test_histogram_observe_many_matches_observe() -> None:
    values = [i / 997 for i in range(2000)]
    one, many = Histogram(LATENCY_BUCKETS), Histogram(LATENCY_BUCKETS)
    for v in values:
        one.observe(v)
    many.observe_many(values)
    (b1, s1, c1), (b2, s2, c2) = one.snapshot(), many.snapshot()
    assert b1 == b2 and c1 == c2 == 2000
    assert s1 == pytest.approx(s2)


@pytest.mark.parametrize("bounds", [[], [0.1, 0.1], [0.2, 0.1], [0.1, math.inf], [math.nan]])
def test_histogram_refuses_bad_bounds(bounds: list[float]) -> None:
    with pytest.raises(ValueError, match="bucket bound"):
        Histogram(bounds)


def test_histogram_loses_nothing_across_threads() -> None:
    """Free-threaded: four threads observe at once while a fifth snapshots."""
    h = Histogram(TICK_BUCKETS)
    per_thread, threads = 5000, 4
    stop = threading.Event()
    torn: list[Any] = []  # snapshots that were not consistent (asserting in a thread is lost)

    def observe(k: int) -> None:
        for i in range(per_thread):
            h.observe((i % 50) / 1000 + k * 1e-6)

    def snapshot() -> None:
        while not stop.is_set():
            buckets, _, count = h.snapshot()
            if buckets[-1][1] != count or any(a[1] > b[1] for a, b in itertools.pairwise(buckets)):
                torn.append((buckets, count))

    reader = threading.Thread(target=snapshot)
    reader.start()
    workers = [threading.Thread(target=observe, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    reader.join()
    assert not torn
    assert h.snapshot()[2] == per_thread * threads


def test_histograms_are_exposed_with_buckets_sum_and_count() -> None:
    hists = with_observations()
    fams = parse(render(STATS, hists))
    for name, bounds in ((TICK_DURATION, TICK_BUCKETS), (INPUT_LATENCY, LATENCY_BUCKETS)):
        samples: list[Sample] = fams[name].samples
        buckets = [(s.labels["le"], s.value) for s in samples if s.name == f"{name}_bucket"]
        assert [le for le, _ in buckets] == [*(repr(b) for b in bounds), "+Inf"]
        expect, total, count = hists[name].snapshot()
        assert [n for _, n in buckets] == [n for _, n in expect]
        by_name = {s.name: s.value for s in samples if not s.name.endswith("_bucket")}
        assert by_name == {f"{name}_count": count, f"{name}_sum": pytest.approx(total)}
    latency = dict((s.labels["le"], s.value) for s in fams[INPUT_LATENCY].samples
                   if s.name.endswith("_bucket"))
    assert latency["0.0025"] == 1 and latency["0.03"] == 3 and latency["2.0"] == 3
    assert latency["+Inf"] == 4


def test_server_histograms_are_fresh_each_call() -> None:
    a, b = server_histograms(), server_histograms()
    assert set(a) == {TICK_DURATION, INPUT_LATENCY}
    a[TICK_DURATION].observe(0.01)
    assert b[TICK_DURATION].snapshot()[2] == 0
    assert a[TICK_DURATION].bounds == TICK_BUCKETS
    assert a[INPUT_LATENCY].bounds == LATENCY_BUCKETS


# ---- promtool -----------------------------------------------------------------------------------
def promtool() -> str:
    """The ``promtool`` binary; a CI run without it fails, a local run skips (loudly)."""
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"promtool not installed: {PROMTOOL_INSTALL} (Debian's prometheus package; "
                    ".ci/run installs it)")
    pytest.skip(f"promtool not installed: {PROMTOOL_INSTALL}")


def check_metrics(text: bytes) -> None:
    proc = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                          timeout=60, check=False)
    problems = (proc.stdout + proc.stderr).decode(errors="replace").strip()
    assert proc.returncode == 0 and not problems, f"promtool check metrics:\n{problems}"


def test_promtool_accepts_the_literal_snapshot() -> None:
    check_metrics(render(STATS, with_observations()))


def test_promtool_accepts_a_live_servers_metrics(live_server: Start) -> None:
    st = live_server(backend="threads", workers=2)
    js = CODECS[SUBPROTOCOL_JSON]
    with connect(st.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:
        ws.send(js.encode(Hello(name="promtool")))
        ws.recv(10.0)  # welcome
        ws.send(js.encode(Input(seq=1, thrust=1.0)))
        ws.send("not json")  # an error message with a code
        deadline = time.monotonic() + 20.0
        while True:
            stats = st.stats()
            ready = (stats["ticker"]["ticks"] >= 5 and stats["messages"]["inputs"] >= 1
                     and stats["messages"]["errors_sent"] and stats["runtime"].get("workers"))
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # waiting on a real server's threads; no virtual clock here
    assert ready, f"the live server never got there: {stats}"
    text = render(stats, with_observations())
    fams = parse(text)
    assert {s.labels["worker"] for s in fams["paratick_worker_info"].samples} == {"0", "1"}
    assert value(fams["paratick_error_messages_sent_total"], code="malformed") >= 1
    check_metrics(text)
