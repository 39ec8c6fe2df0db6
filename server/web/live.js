// paratick live: watch the sharded world tick.
//
// Opens a websocket to the server that served this page (subprotocol paratick.json.v1), sends
// {"t":"spectate","v":1}, and draws each "view" (a downsampled whole world plus live figures,
// a few times a second): region borders, entities coloured by the worker that owns their region
// (players larger and outlined), an MSPT chart against the tick budget, and the figures as text.
// When refused (spectator cap) or when the server goes away it says so and reconnects by itself
// with exponential backoff.  window.paratick exposes counters for tests and the curious.
"use strict";

(function () {
  const PALETTE = ["#5fb3ff", "#ffb454", "#8bd49c", "#f07178", "#c792ea", "#f2d16b", "#4dd0c4",
                   "#ff9e80", "#a5b4fc", "#e6a4d8", "#b5e36a", "#ffd0a0"];
  const CHART_POINTS = 150;          // 30 s at 5 views/s
  const BACKOFF_FIRST_MS = 500;      // first retry; doubles up to BACKOFF_MAX_MS
  const BACKOFF_MAX_MS = 5000;

  const state = window.paratick = {
    status: "connecting",   // connecting | watching | refused | disconnected | error
    message: "",
    frames: 0,              // views drawn
    entitiesDrawn: 0,       // entities in the last frame
    regionsDrawn: 0,        // regions in the last frame
    msptPoints: 0,          // points added to the MSPT chart since the page loaded
    connects: 0,            // successful spectates (1 + reconnections)
    attempts: 0,            // websocket connections opened
    refusals: 0,            // times the server refused (cap)
    lastClose: null,        // {code, reason} of the last close
    tick: 0,
  };

  const statusEl = document.getElementById("status");
  const world = document.getElementById("world");
  const chart = document.getElementById("mspt");
  const statsEl = document.getElementById("stats");
  const wctx = world.getContext("2d");
  const cctx = chart.getContext("2d");

  let info = null;           // the "watching" message
  let points = [];           // [{p50, p99, budget}]
  let backoff = BACKOFF_FIRST_MS;
  let refusedReason = "";

  function setStatus(status, message) {
    state.status = status;
    state.message = message;
    document.body.dataset.status = status;
    statusEl.textContent = message;
  }

  function colour(worker) {
    return PALETTE[((worker % PALETTE.length) + PALETTE.length) % PALETTE.length];
  }

  function fmt(x, digits) {
    return (x === null || x === undefined || Number.isNaN(x)) ? "–" : x.toFixed(digits);
  }

  // ---- the world ---------------------------------------------------------------------------
  function drawWorld(view) {
    const W = world.width, H = world.height;
    wctx.fillStyle = "#0b0d11";
    wctx.fillRect(0, 0, W, H);
    if (!info) return;
    const sx = W / info.width, sy = H / info.height;
    const regionWorker = info.regions.map((r) => r[4]);
    // Regions: a faint fill and a border in their worker's colour (labels after the dots).
    wctx.lineWidth = 1.5;
    info.regions.forEach((r) => {
      const x = r[0] * sx, y = r[1] * sy, w = (r[2] - r[0]) * sx, h = (r[3] - r[1]) * sy;
      const c = colour(r[4]);
      wctx.globalAlpha = 0.07;
      wctx.fillStyle = c;
      wctx.fillRect(x, y, w, h);
      wctx.globalAlpha = 0.9;
      wctx.strokeStyle = c;
      wctx.strokeRect(x + 0.75, y + 0.75, w - 1.5, h - 1.5);
    });
    wctx.globalAlpha = 1;
    // Other entities first (small dots: NPCs and player slots nobody holds), players on top
    // (larger, outlined in white).
    let drawn = 0;
    for (const e of view.ents) {
      if (e[2] === 0) continue;
      wctx.fillStyle = colour(regionWorker[e[3]] ?? 0);
      wctx.fillRect(e[0] * sx - 1.25, e[1] * sy - 1.25, 2.5, 2.5);
      drawn++;
    }
    wctx.strokeStyle = "#ffffff";
    wctx.lineWidth = 1.2;
    for (const e of view.ents) {
      if (e[2] !== 0) continue;
      wctx.fillStyle = colour(regionWorker[e[3]] ?? 0);
      wctx.beginPath();
      wctx.arc(e[0] * sx, e[1] * sy, 3.5, 0, 2 * Math.PI);
      wctx.fill();
      wctx.stroke();
      drawn++;
    }
    state.entitiesDrawn = drawn;
    wctx.font = "12px ui-monospace, monospace";
    info.regions.forEach((r, i) => {
      const label = `r${i} · w${r[4]}`;
      const x = r[0] * sx + 4, y = r[1] * sy + 4;
      wctx.fillStyle = "rgba(11, 13, 17, 0.8)";
      wctx.fillRect(x, y, wctx.measureText(label).width + 8, 17);
      wctx.fillStyle = colour(r[4]);
      wctx.fillText(label, x + 4, y + 13);
    });
    state.regionsDrawn = info.regions.length;
  }

  // ---- the MSPT chart ----------------------------------------------------------------------
  function addPoint(stats) {
    const m = stats.mspt || {};
    if (m.p50 === null || m.p50 === undefined) return;
    points.push({p50: m.p50, p99: m.p99 ?? m.p50, budget: stats.budget_ms ?? 0});
    if (points.length > CHART_POINTS) points.shift();
    state.msptPoints++;
  }

  function drawChart() {
    const W = chart.width, H = chart.height, pad = 28;
    cctx.fillStyle = "#0b0d11";
    cctx.fillRect(0, 0, W, H);
    if (!points.length) return;
    const budget = points[points.length - 1].budget;
    let top = budget * 1.25;
    for (const p of points) top = Math.max(top, p.p99 * 1.1);
    top = top || 1;
    const x = (i) => pad + (i / (CHART_POINTS - 1)) * (W - pad - 6);
    const y = (v) => H - 16 - (v / top) * (H - 26);
    cctx.fillStyle = "#7b8494";
    cctx.font = "11px ui-monospace, monospace";
    cctx.fillText(`${fmt(top, 0)} ms`, pad + 4, 12);
    cctx.fillText("0", pad + 4, H - 18);
    cctx.fillText(`last ${CHART_POINTS / (info ? info.view_rate : 5)} s`, W - 80, H - 3);
    // The budget: a tick that takes longer than this is late.
    cctx.strokeStyle = "#ff6b6b";
    cctx.setLineDash([5, 4]);
    cctx.beginPath();
    cctx.moveTo(pad, y(budget));
    cctx.lineTo(W - 6, y(budget));
    cctx.stroke();
    cctx.setLineDash([]);
    const offset = CHART_POINTS - points.length;
    for (const [key, c] of [["p99", "#ffb454"], ["p50", "#5fb3ff"]]) {
      cctx.strokeStyle = c;
      cctx.lineWidth = 1.8;
      cctx.beginPath();
      points.forEach((p, i) => {
        const px = x(i + offset), py = y(p[key]);
        if (i === 0) cctx.moveTo(px, py); else cctx.lineTo(px, py);
      });
      cctx.stroke();
    }
  }

  // ---- the figures -------------------------------------------------------------------------
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function table(head, rows) {
    const t = el("table");
    const tr = el("tr");
    head.forEach((h) => tr.appendChild(el("th", h)));
    t.appendChild(tr);
    for (const row of rows) {
      const r = el("tr");
      row.forEach((cell) => r.appendChild(cell instanceof Node ? wrap(cell) : el("td", cell)));
      t.appendChild(r);
    }
    return t;
  }

  function wrap(node) {
    const td = el("td");
    td.appendChild(node);
    return td;
  }

  function workerCell(w) {
    const span = el("span");
    const dot = el("span", undefined, "swatch");
    dot.style.background = colour(w);
    span.appendChild(dot);
    span.appendChild(document.createTextNode(`w${w}`));
    return span;
  }

  function drawStats(view) {
    const s = view.stats || {};
    const b = s.build || {};
    const lines = [
      `tick ${view.tick}   ${fmt(s.ticks_per_s, 1)} of ${fmt(s.tick_rate, 0)} ticks/s` +
        `   dilation ${fmt(s.dilation, 2)}   deadline misses ${s.deadline_misses ?? 0}`,
      `MSPT p50 ${fmt(s.mspt && s.mspt.p50, 2)} ms   p99 ${fmt(s.mspt && s.mspt.p99, 2)} ms` +
        `   budget ${fmt(s.budget_ms, 1)} ms`,
      info ? info.build : `Python ${b.python || "?"}, GIL ${b.gil_enabled ? "on" : "off"}`,
      `backend ${info ? info.backend : s.backend}   workers ${info ? info.workers : "?"}` +
        `   entities ${view.total} (${view.ents.length} shown)`,
      `players ${s.players ?? 0}   spectators ${s.spectators ?? 0}` +
        `   connections ${s.connections ?? 0}`,
    ];
    statsEl.replaceChildren(el("div", lines.join("\n")));
    statsEl.appendChild(table(["region", "worker", "entities", "p50 ms", "p99 ms"],
      (s.shards || []).map((r) => [`r${r.region}`, workerCell(r.worker), String(r.entities),
                                   fmt(r.p50, 2), fmt(r.p99, 2)])));
    statsEl.appendChild(table(["worker", "GIL", "p50 ms", "p99 ms"],
      (s.workers || []).map((w) => [workerCell(w.worker),
                                    w.gil_enabled === null ? "?" : (w.gil_enabled ? "on" : "off"),
                                    fmt(w.p50, 2), fmt(w.p99, 2)])));
    if ((s.gateways || []).length > 1) {
      statsEl.appendChild(table(["gateway", "connections"],
        s.gateways.map((g) => [`g${g.index}`, String(g.connections)])));
    }
  }

  // ---- the connection ----------------------------------------------------------------------
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let ws;
    state.attempts++;
    try {
      ws = new WebSocket(`${scheme}${location.host}/`, "paratick.json.v1");
    } catch (err) {
      retry(`cannot connect: ${err}`);
      return;
    }
    refusedReason = "";
    ws.onopen = () => ws.send(JSON.stringify({t: "spectate", v: 1}));
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        return;  // not ours to crash on; the server only sends JSON on this subprotocol
      }
      if (msg.t === "watching") {
        info = msg;
        backoff = BACKOFF_FIRST_MS;
        state.connects++;
        setStatus("watching", `watching ${location.host}: ${info.regions.length} regions on ` +
                  `${info.workers} worker${info.workers === 1 ? "" : "s"}, ${info.backend}`);
      } else if (msg.t === "view") {
        state.tick = msg.tick;
        drawWorld(msg);
        addPoint(msg.stats || {});
        drawChart();
        drawStats(msg);
        state.frames++;
      } else if (msg.t === "error") {
        if (msg.code === "spectators_full") {
          refusedReason = msg.reason;
          state.refusals++;
        } else {
          setStatus("error", `server error ${msg.code}: ${msg.reason}`);
        }
      }
    };
    ws.onclose = (ev) => {
      state.lastClose = {code: ev.code, reason: ev.reason};
      if (refusedReason || ev.code === 1013) {
        retry(`refused: ${refusedReason || ev.reason || "the server is full"}`, "refused");
      } else {
        retry(`the server went away (close ${ev.code}${ev.reason ? ": " + ev.reason : ""})`,
              "disconnected");
      }
    };
  }

  function retry(why, status) {
    const wait = backoff * (0.8 + 0.4 * Math.random());
    backoff = Math.min(BACKOFF_MAX_MS, backoff * 2);
    setStatus(status || "disconnected", `${why}; reconnecting in ${(wait / 1000).toFixed(1)} s`);
    setTimeout(connect, wait);
  }

  drawWorld({ents: []});
  drawChart();
  connect();
})();
