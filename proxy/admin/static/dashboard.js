// cacheproxy dashboard: polls the admin API of this listener and draws it with uPlot.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const POLL_MS = Math.max(500, Number(params.get("interval")) || 2000);
  const MAX_POINTS = 300; // at 2 s a poll: the last 10 minutes (the charts not kept on the server)
  const RESULTS = ["hit", "stale", "miss", "revalidated", "bypass"];

  const $ = (id) => document.getElementById(id);
  const style = getComputedStyle(document.documentElement);
  const color = (name) => style.getPropertyValue("--" + name).trim();

  // --- formatting ---------------------------------------------------------------------------
  const dash = "–";
  const pct = (x) => (x == null ? dash : (x * 100).toFixed(1) + "%");
  const int = (n) => (n == null ? dash : Number(n).toLocaleString("en-US"));
  function ms(x) {
    if (x == null) return dash;
    if (x < 10) return x.toFixed(2) + " ms";
    if (x < 1000) return x.toFixed(1) + " ms";
    return (x / 1000).toFixed(2) + " s";
  }
  function bytes(n) {
    if (n == null) return dash;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function duration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }
  // The text shown, and the raw number in data-value (what tests and scripts read).
  // A threshold as the config writes it: 0.02 is "2%", never "2.0%" or "0.020".
  const pctWritten = (x) => +(x * 100).toPrecision(6) + "%";
  // A measured ratio next to its threshold: enough digits that the two never read as equal.
  function pctAgainst(value, threshold) {
    let digits = 1, text = (value * 100).toFixed(digits);
    while (digits < 4 && Number(text) === +(threshold * 100).toPrecision(6)) text = (value * 100).toFixed(++digits);
    return text + "%";
  }
  function show(id, text, value) {
    const el = $(id);
    el.textContent = text;
    if (value !== undefined) el.dataset.value = value == null ? "" : String(value);
  }

  // --- charts -------------------------------------------------------------------------------
  const axis = () => ({
    stroke: color("muted"),
    grid: { stroke: color("line"), width: 1 },
    ticks: { stroke: color("line"), width: 1 },
    font: "11px sans-serif",
  });
  const line = (label, stroke, extra) => Object.assign({ label, stroke, width: 2, spanGaps: false }, extra);

  function chart(id, series, yAxis, yScale, xAxis) {
    const el = $(id);
    const opts = {
      width: el.clientWidth,
      height: el.clientHeight - 24, // room for the legend
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: yScale || {} },
      axes: [Object.assign(axis(), xAxis || {}), Object.assign(axis(), yAxis || {})],
      series: [{}, ...series],
      legend: { live: true },
      // Away from the cursor, the legend shows the newest values: readable without hovering.
      hooks: { setCursor: [(u) => { if (u.cursor.idx == null) latest(u); }] },
    };
    const data = [[], ...series.map(() => [])];
    const plot = new uPlot(opts, data, el);
    new ResizeObserver(() => plot.setSize({ width: el.clientWidth, height: el.clientHeight - 24 })).observe(el);
    return { plot, data };
  }

  function latest(u) {
    const n = u.data[0].length;
    if (n) u.setLegend({ idx: n - 1 }, false);
  }

  // Decades only: a log axis with every minor tick is a wall of lines.
  const decades = (u, ticks) =>
    ticks.map((v) => (v != null && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9 ? v : null));

  const perSecond = (u, v) => (v == null ? dash : v.toFixed(v < 10 ? 2 : 1) + "/s");
  // Clock times at least 60 px apart: uPlot's own labels read ":40.000" over a short span.
  const clock = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  const timeAxis = { space: 60, values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString("en-GB", clock)) };
  const charts = {
    traffic: chart(
      "chart-traffic",
      [
        line("requests", color("accent"), { value: perSecond, fill: "rgba(91,155,230,0.10)" }),
        line("4xx", color("stale"), { value: perSecond }),
        line("5xx", color("miss"), { value: perSecond }),
        line("upstream errors", color("bypass"), { value: perSecond }),
        line("upstream timeouts", color("text"), { value: perSecond, dash: [4, 3] }),
      ],
      { size: 48 },
      { range: (u, min, max) => [0, Math.max(1, max)] },
      timeAxis,
    ),
    hitRate: chart(
      "chart-hitrate",
      [
        line("each 5 s", color("hit"), { value: (u, v) => pct(v) }),
        line("last 60 s", color("accent"), { value: (u, v) => pct(v), dash: [6, 4] }),
      ],
      { values: (u, ticks) => ticks.map((v) => Math.round(v * 100) + "%"), size: 46 },
      { range: [0, 1] },
      timeAxis,
    ),
    latency: chart(
      "chart-latency",
      [
        line("p50", color("hit"), { value: (u, v) => ms(v) }),
        line("p99", color("stale"), { value: (u, v) => ms(v) }),
      ],
      // Log scale: hits (fractions of a ms) and misses (the upstream's time) on one chart.
      {
        filter: decades,
        grid: { stroke: color("line"), width: 1, filter: decades },
        ticks: { stroke: color("line"), width: 1, filter: decades },
        values: (u, ticks) => ticks.map((v) => (v == null ? "" : (v >= 1 ? v : v.toPrecision(1)) + " ms")),
        size: 64,
      },
      { distr: 3, log: 10 },
    ),
    pool: chart(
      "chart-pool",
      [
        line("busy", color("accent"), { fill: "rgba(91,155,230,0.15)" }),
        line("idle", color("muted")),
        line("max", color("miss"), { dash: [4, 4], width: 1 }),
      ],
      { size: 40 },
      { range: (u, min, max) => [0, Math.max(1, max)] },
    ),
    rateLimit: chart(
      "chart-ratelimit",
      [line("429s", color("stale"), { value: perSecond, fill: "rgba(214,165,58,0.15)" })],
      { size: 40 },
      { range: (u, min, max) => [0, Math.max(1, max)] },
      Object.assign({ size: 28 }, timeAxis),
    ),
  };

  function push(c, t, values) {
    c.data[0].push(t);
    values.forEach((v, i) => c.data[i + 1].push(v == null ? null : v));
    if (c.data[0].length > MAX_POINTS) c.data.forEach((col) => col.shift());
    c.plot.setData(c.data);
    if (c.plot.cursor.idx == null) latest(c.plot);
  }

  // A chart drawn from the server's history (the summary's `history`: one point per step).
  function draw(c, t, columns) {
    c.data = [t, ...columns];
    c.plot.setData(c.data);
    if (c.plot.cursor.idx == null) latest(c.plot);
  }

  // --- rendering ----------------------------------------------------------------------------
  function renderSummary(s, t) {
    const cache = s.cache, conn = s.connections, rt = s.response_times, win = s.window;
    show("hit-rate", pct(cache.hit_rate), cache.hit_rate);
    show("hits", int(cache.hits), cache.hits);
    show("misses", int(cache.misses), cache.misses);
    show("rps", win.requests_per_second == null ? dash : win.requests_per_second.toFixed(1), win.requests_per_second);
    // The card says "last 60 s": the window's counts, not the totals since start.
    show("requests", int(win.requests), win.requests);
    show("errors", int(win.errors), win.errors);
    show("p50", ms(rt.p50_ms), rt.p50_ms);
    show("p99", ms(rt.p99_ms), rt.p99_ms);
    show("speedup", rt.speedup == null ? dash : rt.speedup.toLocaleString("en-US") + "×", rt.speedup);
    show("entries", int(cache.entries), cache.entries);
    show("bytes", bytes(cache.bytes), cache.bytes);
    show("max-bytes", bytes(cache.max_bytes), cache.max_bytes);
    show("evictions", int(cache.evictions), cache.evictions);
    $("bytes-bar").style.width = (cache.max_bytes ? (100 * cache.bytes) / cache.max_bytes : 0) + "%";
    show("pool-active", int(conn.active), conn.active);
    show("pool-max", int(conn.max_connections), conn.max_connections);
    show("pool-idle", int(conn.idle), conn.idle);
    show("reuse", pct(conn.reuse_rate), conn.reuse_rate);
    $("pool-bar").style.width = (conn.max_connections ? (100 * conn.active) / conn.max_connections : 0) + "%";
    show("uptime", duration(s.uptime_seconds));
    show("updated", new Date(t * 1000).toLocaleTimeString());

    // Cached vs uncached (and failed, apart): one scale, so the gap is what it is.
    show("avg-cached", ms(rt.avg_cached_ms), rt.avg_cached_ms);
    show("avg-uncached", ms(rt.avg_uncached_ms), rt.avg_uncached_ms);
    show("avg-failed", ms(rt.avg_failed_ms), rt.avg_failed_ms);
    const top = Math.max(rt.avg_cached_ms || 0, rt.avg_uncached_ms || 0, rt.avg_failed_ms || 0);
    const width = (x) => (top && x ? (100 * x) / top : 0) + "%";
    $("bar-cached").style.width = width(rt.avg_cached_ms);
    $("bar-uncached").style.width = width(rt.avg_uncached_ms);
    $("bar-failed").style.width = width(rt.avg_failed_ms);
    const failed = (win.raw_counts && win.raw_counts.failed) || 0;
    show("failed-note", failed
      ? `${int(failed)} failed (5xx: the upstream's, or a 502/503/504 of the proxy's), not in the uncached average.`
      : "No failed (5xx) responses in the last 60 s.", failed);
    $("speedup-note").textContent = rt.speedup
      ? `A cached answer takes 1/${rt.speedup.toLocaleString("en-US")} of the time of one from the upstream.`
      : "Needs both cached and uncached answers in the last 60 s.";

    // Hits vs misses since start.
    const lookups = cache.lookups || {};
    const total = RESULTS.reduce((a, r) => a + (lookups[r] || 0), 0);
    show("lookups", int(total), total);
    let at = 0;
    const stops = [];
    const legend = $("donut-legend");
    legend.replaceChildren();
    for (const r of RESULTS) {
      const n = lookups[r] || 0;
      const share = total ? (100 * n) / total : 0;
      if (n) stops.push(`${color(r)} ${at}% ${at + share}%`);
      at += share;
      const li = document.createElement("li");
      const swatch = document.createElement("i");
      swatch.style.background = color(r);
      const name = document.createElement("span");
      name.textContent = r;
      const count = document.createElement("span");
      count.className = "n";
      count.id = "lookups-" + r;
      count.dataset.value = String(n);
      count.textContent = `${int(n)} · ${total ? share.toFixed(1) : "0.0"}%`;
      li.append(swatch, name, count);
      legend.append(li);
    }
    $("donut").style.background = stops.length ? `conic-gradient(${stops.join(", ")})` : "";

    renderHistory(s.history);
    // Percentiles and gauges do not add up over steps: those charts follow the polls.
    push(charts.latency, t, [rt.p50_ms, rt.p99_ms]);
    push(charts.pool, t, [conn.active, conn.idle, conn.max_connections]);
    show("instance", s.instance || dash);
    renderRoutes(s.routes);
    renderTargets(conn);
    const limits = s.rate_limit;
    const configured = limits.configured !== false;
    $("rl-off").hidden = configured;
    document.querySelector(".card .pair").classList.toggle("off", !configured);
    $("chart-ratelimit").hidden = !configured;
    show("rl-allowed", configured ? int(limits.allowed) : "not configured", limits.allowed);
    show("rl-limited", configured ? int(limits.limited) : "not configured", configured ? limits.limited : null);
    // Checks Redis could not decide (on_store_error decided them); red while degraded.
    const storeErrors = s.rate_limit.store_errors || 0;
    show("rl-store-errors", int(storeErrors), storeErrors);
    $("rl-store-errors").className = s.rate_limit.degraded ? "warn" : "";
  }

  // The server's history (the last 15 minutes, one point per step), as rates per second.
  function renderHistory(h) {
    if (!h || !h.t) return;
    const step = h.step_seconds;
    const rate = (col) => col.map((n) => n / step);
    draw(charts.traffic, h.t, [rate(h.requests), rate(h.errors_4xx), rate(h.errors_5xx), rate(h.upstream_errors), rate(h.upstream_timeouts)]);
    const each = h.hits.map((n, i) => (n + h.misses[i] ? n / (n + h.misses[i]) : null));
    const span = Math.max(1, Math.round(60 / step));
    const rolling = h.hits.map((_, i) => {
      let hits = 0, lookups = 0;
      for (let j = Math.max(0, i - span + 1); j <= i; j++) { hits += h.hits[j]; lookups += h.hits[j] + h.misses[j]; }
      return lookups ? hits / lookups : null;
    });
    draw(charts.hitRate, h.t, [each, rolling]);
    draw(charts.rateLimit, h.t, [rate(h.rate_limited)]);
    document.body.dataset.historyPoints = String(h.t.length);
  }

  // Each route over the last 60 s: a failing one (5xx, the upstream failing) stands out.
  const failing = (r) => r.errors_5xx + r.upstream_errors + r.upstream_timeouts > 0;
  function renderRoutes(routes) {
    const body = $("routes").tBodies[0];
    body.replaceChildren();
    const entries = Object.entries((routes && routes.by_route) || {})
      .filter(([name, r]) => name !== "unrouted" || r.requests)
      .sort(([a, x], [b, y]) => failing(y) - failing(x) || y.requests - x.requests || a.localeCompare(b));
    for (const [name, r] of entries) {
      const tr = document.createElement("tr");
      tr.className = failing(r) ? "failing" : "";
      tr.dataset.route = name;
      const cells = [name, int(r.requests), int(r.errors_4xx), int(r.errors_5xx), int(r.upstream_errors + r.upstream_timeouts), int(r.rate_limited)];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      body.append(tr);
    }
  }

  // Each upstream target (an origin): workers' entries added up by name. Its state is the
  // worst of theirs: out of the balancing (ejected, failing checks), a circuit not closed.
  function targetState(u) {
    if (u.ejected) return `ejected ${Math.ceil(u.ejected_for)} s`;
    if (u.health_check === "down") return "check down";
    if (u.circuit === "open" || u.circuit === "half-open") return "circuit " + u.circuit;
    return "in";
  }
  function byTarget(upstreams) {
    const merged = new Map();
    for (const u of upstreams || []) {
      const m = merged.get(u.name);
      if (!m) { merged.set(u.name, { ...u, state: targetState(u) }); continue; }
      m.in_flight += u.in_flight; m.admitted += u.admitted; m.failures += u.failures;
      if (m.state === "in") m.state = targetState(u);
    }
    return [...merged.values()];
  }
  function renderTargets(conn) {
    const body = $("targets").tBodies[0];
    body.replaceChildren();
    const targets = byTarget(conn && conn.upstreams).sort((a, b) => a.name.localeCompare(b.name));
    for (const u of targets) {
      const tr = document.createElement("tr");
      tr.className = u.state === "in" ? "" : "failing";
      tr.dataset.target = u.name;
      tr.title = u.origin;
      for (const text of [u.name, u.state, int(u.in_flight), int(u.admitted), int(u.failures)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      body.append(tr);
    }
  }

  // What is wrong, by name: circuits not closed, checks down, routes failing, limits
  // refusing, alerts. Built from the three documents of one poll.
  function renderProblems(s, a, h) {
    const found = [];
    for (const u of (s.connections && s.connections.upstreams) || []) {
      if (u.circuit !== "open" && u.circuit !== "half-open") continue;
      const probe = u.circuit === "open" ? `, next probe in ${Math.ceil(u.circuit_retry_in)} s` : ", probing";
      found.push(["bad", `upstream "${u.name}" (${u.origin}): circuit ${u.circuit}${probe}`]);
    }
    for (const u of byTarget(s.connections && s.connections.upstreams)) {
      if (u.ejected) found.push(["warn", `upstream target "${u.name}" (${u.origin}): left out of the balancing for ${Math.ceil(u.ejected_for)} s after failing`]);
      else if (u.health_check === "down") found.push(["warn", `upstream target "${u.name}" (${u.origin}): failing its health checks, left out of the balancing`]);
    }
    for (const [name, check] of Object.entries(h.checks || {})) {
      if (name === "circuits" || check.status === "up") continue;
      found.push(["bad", `${name}: ${check.status}${check.error ? " · " + check.error : ""}`]);
    }
    const by = (s.routes && s.routes.by_route) || {};
    for (const [name, r] of Object.entries(by)) {
      if (failing(r)) {
        const why = [];
        if (r.errors_5xx) why.push(`${int(r.errors_5xx)} of ${int(r.requests)} answered 5xx`);
        if (r.upstream_errors) why.push(`${int(r.upstream_errors)} upstream errors`);
        if (r.upstream_timeouts) why.push(`${int(r.upstream_timeouts)} upstream timeouts`);
        found.push(["bad", `route "${name}" failing: ${why.join(", ")} in the last 60 s`]);
      }
      if (r.rate_limited) found.push(["warn", `route "${name}": ${int(r.rate_limited)} requests refused by rate limits (429) in the last 60 s`]);
    }
    for (const alert of a.active) found.push(["bad", "alert: " + alertText(alert)]);
    const list = $("problems");
    list.replaceChildren();
    list.dataset.value = String(found.length);
    if (!found.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "Nothing wrong: every check up, every circuit closed, no route failing in the last 60 s.";
      list.append(li);
    }
    for (const [level, text] of found) {
      const li = document.createElement("li");
      li.className = level;
      li.textContent = text;
      list.append(li);
    }
  }

  // An alert's value beside its threshold, both as the config writes thresholds.
  function alertText(alert) {
    if (alert.name === "high_error_rate")
      return `5xx rate ${pctAgainst(alert.value, alert.threshold)} above ${pctWritten(alert.threshold)}`;
    if (alert.name === "low_hit_rate")
      return `hit rate ${pctAgainst(alert.value, alert.threshold)} below ${pctWritten(alert.threshold)}`;
    return alert.message;
  }

  function renderHealth(h) {
    const pill = $("health");
    pill.className = "pill " + h.status;
    show("health", h.status, h.status);
    show("version", h.version || dash, h.version);
    const list = $("checks");
    list.replaceChildren();
    for (const [name, check] of Object.entries(h.checks)) {
      const li = document.createElement("li");
      const dot = document.createElement("i");
      dot.className = "dot " + check.status;
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const state = document.createElement("span");
      state.textContent = check.status;
      const detail = document.createElement("span");
      detail.className = "detail";
      detail.textContent = check.error ? check.error : check.latency_ms != null ? ms(check.latency_ms) : "";
      if (name === "circuits") {
        // Which upstream's circuit, by name: "down" alone says nothing about which.
        const notClosed = Object.entries(check.upstreams || {}).filter(([, u]) => u.circuit === "open" || u.circuit === "half-open");
        detail.textContent = notClosed.length
          ? notClosed.map(([n, u]) => `${n}: ${u.circuit}`).join(" · ")
          : `${Object.keys(check.upstreams || {}).length} closed`;
      }
      li.append(dot, label, state, detail);
      list.append(li);
    }
  }

  function renderAlerts(a) {
    const th = a.thresholds, parts = [];
    if (th.min_hit_rate != null) parts.push(`hit rate ≥ ${pctWritten(th.min_hit_rate)}`);
    if (th.max_p99_ms != null) parts.push(`p99 ≤ ${ms(th.max_p99_ms)}`);
    if (th.max_error_rate != null) parts.push(`5xx ≤ ${pctWritten(th.max_error_rate)}`);
    $("thresholds").textContent = parts.length ? parts.join(" · ") + ` over ${a.window_seconds} s` : "no thresholds configured";
    const list = $("alerts");
    list.replaceChildren();
    list.dataset.value = String(a.active.length);
    if (!a.active.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "No active alerts";
      list.append(li);
    }
    for (const alert of a.active) {
      const li = document.createElement("li");
      const title = document.createElement("b");
      title.textContent = alertText(alert);
      const since = document.createElement("span");
      since.textContent = `${alert.name} · for ${duration(Date.now() / 1000 - alert.since_ts)}`;
      li.append(title, since);
      list.append(li);
    }
  }

  // Opened as http://admin:TOKEN@host/dashboard, the page's own URL carries credentials, and
  // Chromium refuses fetch() to such a URL, which every relative URL on this page resolves
  // to. So the polls go to absolute URLs without them, and the token they held is sent as
  // the Basic auth the browser would have sent, kept in this page only (never stored).
  const here = new URL(document.URL);
  const auth = here.username || here.password ? basicAuth(here.username, here.password) : null;
  function basicAuth(user, password) {
    const raw = new TextEncoder().encode(decodeURIComponent(user) + ":" + decodeURIComponent(password));
    return "Basic " + btoa(Array.from(raw, (b) => String.fromCharCode(b)).join(""));
  }
  function adminURL(path) {
    const url = new URL(path, here);
    url.username = url.password = "";
    return url.href;
  }
  const LOGIN_HELP = "admin token required: open this page as http://admin:TOKEN@" + here.host + here.pathname
    + " (any user name, the token as password), or let the browser ask for it";

  async function getJSON(path, okStatuses) {
    const headers = auth ? { Authorization: auth } : {};
    const resp = await fetch(adminURL(path), { cache: "no-store", credentials: "same-origin", headers });
    if (resp.status === 401) throw new Error(LOGIN_HELP);
    if (!resp.ok && !(okStatuses || []).includes(resp.status)) throw new Error(`${path}: HTTP ${resp.status}`);
    return resp.json();
  }

  let polls = 0;
  async function poll() {
    try {
      const [summary, alerts, health] = await Promise.all([
        getJSON("performance/summary"),
        getJSON("alerts/active"),
        getJSON("health", [503]), // unhealthy still has a body worth showing
      ]);
      renderSummary(summary, Date.now() / 1000);
      renderAlerts(alerts);
      renderHealth(health);
      renderProblems(summary, alerts, health);
      polls += 1;
      document.body.dataset.polls = String(polls);
      $("status").textContent = `every ${POLL_MS / 1000} s`;
      $("status").className = "meta status";
    } catch (err) {
      $("status").textContent = "⚠ " + err.message;
      $("status").className = "meta status bad";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  poll();
})();
