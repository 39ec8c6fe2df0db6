"""bench.claims: verdicts from synthetic probes, and the real probes on a small scale."""

from __future__ import annotations

from typing import Any

import pytest

from bench import claims
from bench.summary import claims_table


def probe(interp_ms: float = 30.0, interp_mb: float = 3.0, msg_ms: float = 0.05,
          ) -> dict[str, Any]:
    return {"startup": {"interpreter_ms": interp_ms, "interpreter_worker_ms": 70.0, "n": 2,
                        "n_together_ms": 60.0, "process_ms": 40.0, "thread_ms": 0.1},
            "memory": {"k": 4, "interpreter_mb": interp_mb, "interpreter_worker_mb": 5.0,
                       "process_pss_mb": 9.0, "process_rss_mb": 18.0, "thread_mb": 0.01},
            "messages": {f"{k}_{s}_ms": msg_ms for k in ("thread_queue", "interp_queue",
                                                         "process_pipe")
                         for s in (1024, 65536)}}


def row(rows: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    hits = [r for r in rows if r["name"].startswith(prefix)]
    assert len(hits) == 1
    return hits[0]


def test_verdicts_follow_the_measurements() -> None:
    kernel = {"gil": [{"ticks_per_s": 10.0}] * 3, "ft": [{"ticks_per_s": 8.0}] * 3}
    rows = claims.judge({"gil": probe(interp_ms=30.0, interp_mb=3.0, msg_ms=0.05)}, kernel)
    assert row(rows, "start-up")["verdict"] == "holds"
    assert row(rows, "memory")["verdict"] == "does not hold"  # 3 MB vs ~1 MB claimed
    assert row(rows, "1 KB message, subinterpreter channel")["verdict"] == "holds"
    assert len([r for r in rows if "message" in r["name"]]) == 6  # 3 transports x 2 sizes
    ft = row(rows, "free-threaded single-thread slowdown")
    assert ft["measured"] == pytest.approx(25.0) and ft["verdict"] == "does not hold"
    slow = claims.judge({"ft": probe(interp_ms=200.0, msg_ms=1.2)}, {})
    assert row(slow, "start-up")["verdict"] == "does not hold"
    assert row(slow, "64 KB message, process pipe")["verdict"] == "roughly holds"
    assert not any(r["name"].startswith("free-threaded") for r in slow)


def test_table_prints_claim_next_to_measurement() -> None:
    rows = claims.judge({"gil": probe()}, {"gil": [{"ticks_per_s": 10.0}],
                                           "ft": [{"ticks_per_s": 9.5}]})
    text = claims_table({"claims": rows})
    assert "~50 ms start-up per interpreter" in text and "30 ms" in text
    assert "5–8% single-thread overhead" in text and "5.26 %" in text


def test_real_probes_return_positive_figures() -> None:
    msgs = claims.probe_messages(rounds=20)
    assert all(v > 0 for k, v in msgs.items() if k.endswith("_ms"))
    st = claims.probe_startup(n=2, repeats=1)
    assert st["interpreter_ms"] > 0 and st["n_together_ms"] > 0
    k = claims.probe_kernel(entities=200, ticks=1)
    assert k["ticks_per_s"] > 0 and len(k["digest"]) == 32
