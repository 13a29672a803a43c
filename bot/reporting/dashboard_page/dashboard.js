/* The support dashboard: signs in with an agent's token (shared with the console),
 * reads GET /api/kpis?days=N and draws its tiles, charts and tables; the CSV comes
 * from GET /api/kpis.csv with the same token. Refreshes every minute. */
(function () {
  "use strict";

  const REFRESH_MS = 60000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const state = { token: null, timer: null };


  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + state.token } });
    if (response.status === 401) { signOut("Your token is no longer valid."); throw new Error("401"); }
    if (!response.ok) { throw new Error(path + ": " + response.status); }
    return response;
  }

  // formatting

  const percent = (v) => (v === null || v === undefined ? "–" : Math.round(v * 100) + "%");
  const number = (v) => (v === null || v === undefined ? "–" : String(v));
  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "–"; }
    const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (h) { return h + "h " + String(m).padStart(2, "0") + "m"; }
    return m ? m + "m " + String(s % 60).padStart(2, "0") + "s" : (s % 60) + "s";
  }
  const csat = (v) => (v === null || v === undefined ? "–" : v.toFixed(1));

  // tiles

  const TILES = [
    ["conversations", "Conversations", number], ["automation_rate", "Automated", percent],
    ["handoff_rate", "Handed off", percent], ["first_response_p50_s", "1st response p50", duration],
    ["sla_attainment", "SLA met", percent], ["backlog", "Backlog now", number],
    ["repeat_contact_rate", "Repeat contacts", percent], ["csat_average", "CSAT", csat],
  ];

  function renderTiles(total) {
    const tiles = $("tiles");
    tiles.replaceChildren();
    for (const [key, label, format] of TILES) {
      const tile = document.createElement("div");
      tile.className = "tile";
      tile.dataset.kpi = key;
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = label;
      dd.textContent = total ? format(total[key]) : "–";
      tile.append(dt, dd);
      tiles.append(tile);
    }
  }

  // charts: one SVG drawing for bars and lines

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) { node.setAttribute(k, v); }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function chart(svg, days, series, kind, format, fixedMax) {
    const W = 360, H = 170, left = 34, right = 6, top = 18, bottom = 18;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.replaceChildren();
    const values = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
    if (!values.length) {
      svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no data yet"));
      return;
    }
    const max = fixedMax || Math.max(1, ...values);
    const plotW = W - left - right, plotH = H - top - bottom, step = plotW / days.length;
    const y = (v) => top + plotH - (v / max) * plotH;
    for (const tick of [0, max / 2, max]) {
      svg.append(el("line", { x1: left, x2: W - right, y1: y(tick), y2: y(tick), class: "grid" }));
      svg.append(el("text", { x: left - 4, y: y(tick) + 3, "text-anchor": "end" }, format(tick)));
    }
    for (const i of [0, Math.floor((days.length - 1) / 2), days.length - 1]) {
      svg.append(el("text", { x: left + step * (i + 0.5), y: H - 4, "text-anchor": "middle" },
                    days[i].slice(5)));
    }
    series.forEach((s, n) => {
      const cls = "s" + n;
      const legend = el("g", { class: "legend" });
      legend.append(el("rect", { x: left + n * 110, y: 2, width: 8, height: 8, class: cls }),
                    el("text", { x: left + n * 110 + 12, y: 10 }, s.name));
      svg.append(legend);
      if (kind === "bars") {
        const width = (step * 0.8) / series.length;
        s.values.forEach((v, i) => {
          if (v === null || v === undefined) { return; }
          const bar = el("rect", { x: left + step * i + step * 0.1 + width * n, y: y(v), width: width,
                                   height: top + plotH - y(v), class: "bar " + cls, "data-day": days[i] });
          bar.append(el("title", {}, days[i] + " " + s.name + ": " + format(v)));
          svg.append(bar);
        });
      } else {
        const points = s.values.map((v, i) => (v === null || v === undefined ? null : [left + step * (i + 0.5), y(v), v, i]))
          .filter(Boolean);
        svg.append(el("polyline", { points: points.map((p) => p[0] + "," + p[1]).join(" "), class: "line " + cls }));
        for (const [px, py, v, i] of points) {
          const dot = el("circle", { cx: px, cy: py, r: 2.5, class: "point " + cls, "data-day": days[i] });
          dot.append(el("title", {}, days[i] + " " + s.name + ": " + format(v)));
          svg.append(dot);
        }
      }
    });
  }

  function renderCharts(data) {
    const byDay = Object.fromEntries(data.daily.map((r) => [r.day, r]));
    const days = data.days;
    const series = (key, scale) => days.map((d) => {
      const v = byDay[d] ? byDay[d][key] : null;
      return v === null || v === undefined ? null : v * (scale || 1);
    });
    const zero = (key) => days.map((d) => (byDay[d] ? byDay[d][key] : 0));
    chart($("chart-volume"), days, [{ name: "conversations", values: zero("conversations") },
                                    { name: "handoffs", values: zero("handoffs") }], "bars", (v) => String(Math.round(v)));
    chart($("chart-rates"), days, [{ name: "automated", values: series("automation_rate") },
                                   { name: "SLA met", values: series("sla_attainment") },
                                   { name: "repeat", values: series("repeat_contact_rate") }], "lines", percent, 1);
    chart($("chart-first-response"), days, [{ name: "p50", values: series("first_response_p50_s", 1 / 60) },
                                            { name: "p90", values: series("first_response_p90_s", 1 / 60) }],
          "lines", (v) => v.toFixed(v < 10 ? 1 : 0));
    chart($("chart-backlog"), days, [{ name: "open handoffs", values: zero("backlog") }], "bars",
          (v) => String(Math.round(v)));
    chart($("chart-csat"), days, [{ name: "average", values: series("csat_average") }], "lines", csat, 5);
  }

  // tables

  function table(id, head, rows, rowClass) {
    const node = $(id);
    node.replaceChildren();
    const thead = node.createTHead().insertRow();
    for (const h of head) { const th = document.createElement("th"); th.textContent = h; thead.append(th); }
    const body = node.createTBody();
    if (!rows.length) {
      const cell = body.insertRow().insertCell();
      cell.colSpan = head.length;
      cell.textContent = "none";
      cell.className = "muted";
      return;
    }
    rows.forEach((cells, i) => {
      const row = body.insertRow();
      if (rowClass) { row.className = rowClass(i); }
      for (const c of cells) { row.insertCell().textContent = c; }
    });
  }

  const GROUP_HEAD = ["", "conversations", "automated", "handoffs", "handed off", "1st resp p50",
                      "p90", "SLA met", "resolved p50", "backlog", "repeat", "CSAT", "CSAT answered"];
  const groupCells = (r) => [r.label, number(r.conversations), percent(r.automation_rate), number(r.handoffs),
    percent(r.handoff_rate), duration(r.first_response_p50_s), duration(r.first_response_p90_s),
    percent(r.sla_attainment), duration(r.resolution_p50_s), number(r.backlog),
    percent(r.repeat_contact_rate), csat(r.csat_average), percent(r.csat_response_rate)];

  function renderTables(data) {
    table("product-alerts", ["product", "SKU", "conversations", "in", "when"],
          data.product_alerts.map((a) => [a.product, a.sku, String(a.contacts), a.window_hours + " h",
                                          new Date(a.fired_at).toLocaleString()]), () => "late");
    table("worst-breaches", ["handoff", "queue", "channel", "late by", "status"],
          data.worst_breaches.map((h) => [h.reference, h.queue, h.channel, duration(h.overdue_seconds), h.status]),
          () => "late");
    table("oldest-open", ["handoff", "queue", "channel", "age", "status"],
          data.oldest_open.map((h) => [h.reference, h.queue, h.channel, duration(h.age_seconds), h.status]));
    table("top-reasons", ["reason", "conversations"], data.top_reasons.map((r) => [r.label, String(r.conversations)]));
    table("handoff-reasons", ["reason", "handoffs", "of conversations"],
          data.handoff_reasons.map((r) => [r.reason, String(r.handoffs), percent(r.share)]));
    const buckets = data.backlog_ageing.buckets;
    table("backlog-ageing", ["queue"].concat(buckets),
          Object.entries(data.backlog_ageing.queues).map(([q, counts]) => [q].concat(buckets.map((b) => String(counts[b])))));
    for (const dimension of ["channel", "intent", "queue"]) {
      table("by-" + dimension, GROUP_HEAD, data.period[dimension].map(groupCells));
    }
  }

  // loading

  async function load() {
    try {
      const response = await api("/api/kpis?days=" + encodeURIComponent($("days").value));
      const data = await response.json();
      $("peak").hidden = !(data.peak && data.peak.on);
      if (data.peak) { $("peak").textContent = data.peak.banner; }
      renderTiles(data.period.all[0]);
      renderCharts(data);
      renderTables(data);
      $("as-of").textContent = "Days in " + data.zone + "; as of " + new Date(data.as_of).toLocaleString();
      $("dashboard-status").textContent = "";
      $("dashboard").dataset.loaded = data.as_of;
    } catch (error) {
      if (state.token) { $("dashboard-status").textContent = "Could not load the KPIs; retrying."; }
    }
  }

  async function downloadCsv() {
    const response = await api("/api/kpis.csv?days=" + encodeURIComponent($("days").value));
    const name = (/filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "") || [])[1] || "kpis.csv";
    const link = $("csv-link");
    if (link.href) { URL.revokeObjectURL(link.href); }
    link.href = URL.createObjectURL(await response.blob());
    link.download = name;
    link.click();
  }

  // signing in and out

  async function signIn(token) {
    state.token = token;
    try {
      const me = await (await api("/api/me")).json();
      agentToken.save(token);
      $("agent-name").textContent = me.agent;
      $("login").hidden = true;
      $("dashboard").hidden = false;
      $("session-bar").hidden = false;
      await load();
      clearInterval(state.timer);
      state.timer = setInterval(load, REFRESH_MS);
    } catch (error) {
      state.token = null;
      $("login-error").textContent = "That token was not accepted.";
    }
  }

  function signOut(message) {
    agentToken.clear();
    clearInterval(state.timer);
    state.token = null;
    $("dashboard").hidden = true;
    $("session-bar").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    signIn($("token").value.trim());
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("days").addEventListener("change", load);
  $("csv").addEventListener("click", () => { downloadCsv().catch(() => {
    $("dashboard-status").textContent = "The CSV could not be made; try again.";
  }); });
  const saved = agentToken.read();
  if (saved) { signIn(saved); }
}());
