// CortexOS dashboard. Plain JavaScript, no dependencies: it reads the
// gateway's API (docs/api.md) with the key kept in sessionStorage and
// follows /v1/events for live updates. Data from the API is put in the page
// as text (textContent), never as HTML.
"use strict";

const KEY_STORE = "cortex.apiKey";
const SVG_NS = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a resource
const STATES = ["PENDING", "DISPATCHED", "RUNNING", "COMPLETED", "FAILED", "DENIED", "TIMEOUT", "CANCELLED"];
const ACTIVE = new Set(["PENDING", "DISPATCHED", "RUNNING"]);
const ROLE_RANK = { viewer: 1, submitter: 2, admin: 3 };
const MAX_TRACKED = 5000; // jobs whose transitions the page remembers

const app = {
  me: null,           // GET /v1/me
  page: "overview",
  jobId: "",          // the job the detail page shows
  jobs: new Map(),    // job id -> job, as last listed or heard
  order: [],          // the jobs table's order (ids)
  nextToken: "",
  selected: new Set(),
  dlqSelected: new Set(),
  seen: new Map(),    // job id -> [transition]: the events this page heard
  stream: null,       // the AbortController of the event stream
  overviewTimer: 0,
  refreshTimer: 0,
  listSeq: 0,         // the jobs list's latest load
  dlqSeq: 0,          // the dead-letter list's latest load
  listening: new Set(), // per load in flight: the job ids heard of since it asked
};
window.cortexDashboard = app; // for the browser tests

// ---- small helpers ----

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function fill(tbody, rows, empty, cols) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) tbody.append(el("tr", {}, el("td", { colspan: cols, class: "muted", text: empty })));
}

function badge(state) { return el("span", { class: "badge s-" + state, text: state }); }

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const today = new Date().toDateString() === d.toDateString();
  const t = d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  return today ? t : d.toLocaleDateString() + " " + t;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function fmtMs(ms) {
  if (ms < 1000) return ms + " ms";
  return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}

function banner(msg, info) {
  const b = $("banner");
  b.textContent = msg || "";
  b.className = "banner" + (info ? " info" : "");
  b.hidden = !msg;
}

// ---- the API ----

class APIError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || "HTTP " + status);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (_) { /* no body */ }
  if (!res.ok) {
    const err = new APIError(res.status, data);
    if (res.status === 401) needKey(err.message);
    throw err;
  }
  return data;
}

function needKey(msg) {
  banner("An API key is needed: " + msg);
  $("who").textContent = "";
  $("key-input").focus();
}

// ---- the key and the caller's role ----

function can(role) {
  return !!app.me && (ROLE_RANK[app.me.role] || 0) >= ROLE_RANK[role];
}

// applyRole disables every control the key's role may not use.
function applyRole(root) {
  for (const b of (root || document).querySelectorAll("[data-needs]")) {
    const role = b.dataset.needs;
    const allowed = can(role);
    b.disabled = !allowed; // the bulk buttons also need a selection: updateBulkButtons
    if (!allowed) b.title = "needs a key of role " + role;
    else if (b.title.startsWith("needs a key")) b.title = "";
    b.dataset.allowed = allowed ? "1" : "0";
  }
  updateBulkButtons();
}

async function loadMe() {
  try {
    app.me = await api("GET", "/v1/me");
    const m = app.me;
    $("who").textContent = m.auth ? m.id + " · " + m.role + (m.all_tenants ? " · all tenants" : " · tenant " + (m.tenant || "none")) : "no keys: admin";
    banner("");
    if (!m.all_tenants) {
      $("f-tenant").value = m.tenant || "";
      $("f-tenant").disabled = true;
      $("ev-tenant").value = m.tenant || "";
      $("ev-tenant").disabled = true;
    } else {
      $("f-tenant").disabled = false;
      $("ev-tenant").disabled = false;
    }
  } catch (e) {
    app.me = null;
    if (e.status !== 401) banner("Cannot reach the gateway: " + e.message);
  }
  applyRole();
  return app.me;
}

// ---- live events ----

function setLive(on, text) {
  const l = $("live");
  l.className = "live " + (on ? "on" : "off");
  l.textContent = text;
}

// follow reads /v1/events with fetch (EventSource cannot send the key) and
// reconnects when the stream ends.
async function follow() {
  if (app.stream) app.stream.abort();
  const ctl = new AbortController();
  app.stream = ctl;
  let delay = 1000;
  while (!ctl.signal.aborted) {
    try {
      const res = await fetch("/v1/events", { headers: headers({ Accept: "text/event-stream" }), signal: ctl.signal });
      if (res.status === 401 || res.status === 403) { setLive(false, "no key"); return; }
      if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
      setLive(true, "live");
      delay = 1000;
      await readSSE(res.body, onEvent);
      // Reconnected after a gap: what was missed is listed again.
      refreshPage();
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    setLive(false, "reconnecting");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

async function readSSE(body, each) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) each(event, data.join("\n"));
    }
  }
}

function onEvent(event, data) {
  if (event === "resync") { refreshPage(); return; }
  if (event !== "message") return;
  let job;
  try { job = JSON.parse(data); } catch (_) { return; }
  if (!job || !job.job_id) return;
  remember(job, "event");
  const known = app.jobs.get(job.job_id);
  if (known && newer(known, job)) return; // an event from before what the page holds
  app.jobs.set(job.job_id, job);
  for (const heard of app.listening) heard.add(job.job_id);
  if (app.page === "jobs") upsertRow(job);
  if (app.page === "job" && app.jobId === job.job_id) renderJob(job);
  if (app.page === "overview" || app.page === "workers") scheduleRefresh(1000);
  if (app.page === "dlq" && job.dead_letter) scheduleRefresh(500);
}

function newer(a, b) {
  return a.updated && b.updated && a.updated > b.updated;
}

// remember keeps a job's transitions as the page hears of them.
function remember(job, source) {
  let list = app.seen.get(job.job_id);
  if (!list) {
    if (app.seen.size >= MAX_TRACKED) app.seen.delete(app.seen.keys().next().value);
    list = [];
    app.seen.set(job.job_id, list);
  }
  const last = list[list.length - 1];
  if (last && last.state === job.state && last.attempt === job.attempts && last.error === job.error && last.pending_reason === job.pending_reason) return;
  list.push({ time: job.updated, state: job.state, attempt: job.attempts, worker: job.worker_id, error: job.error, pending_reason: job.pending_reason, source });
}

function scheduleRefresh(ms) {
  if (app.refreshTimer) return;
  app.refreshTimer = setTimeout(() => { app.refreshTimer = 0; refreshPage(true); }, ms);
}

// ---- routing ----

function route() {
  clearTimeout(app.refreshTimer); // a refresh scheduled for the page left
  app.refreshTimer = 0;
  const h = location.hash.replace(/^#\/?/, "").split("?")[0];
  const [page, ...rest] = h.split("/");
  const p = ["overview", "jobs", "job", "workers", "dlq", "policy"].includes(page) ? page : "overview";
  app.page = p;
  app.jobId = p === "job" ? decodeURIComponent(rest.join("/")) : "";
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + p;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === p || (p === "job" && a.dataset.page === "jobs"));
  if (p === "jobs") applyQuery();
  refreshPage();
}

function refreshPage(quiet) {
  clearTimeout(app.overviewTimer);
  const done = (p) => p.catch((e) => { if (!quiet && e.status !== 401) banner(e.message); });
  switch (app.page) {
    case "overview": done(loadOverview()); app.overviewTimer = setTimeout(() => refreshPage(true), 5000); break;
    case "jobs": done(loadJobs(false)); break;
    case "job": done(loadJob()); break;
    case "workers": done(loadWorkers()); app.overviewTimer = setTimeout(() => refreshPage(true), 5000); break;
    case "dlq": done(loadDLQ()); break;
    case "policy": done(loadPolicy()); break;
  }
}

// ---- overview ----

async function loadOverview() {
  const ov = await api("GET", "/v1/overview?window_minutes=" + $("ov-window").value);
  app.overview = ov;
  $("ov-updated").textContent = "as of " + fmtTime(ov.now) + (ov.capped ? " · counts capped" : "");
  $("ov-states").replaceChildren(...STATES.map((s) => el("a", { class: "card s-" + s, href: "#/jobs?state=" + s, "data-state": s },
    el("div", { class: "n", text: ov.by_state[s] || 0 }),
    el("div", { class: "l", text: s + (ACTIVE.has(s) ? "" : " · " + ov.window_minutes + " min") }))));
  const w = ov.workers;
  $("ov-workers").replaceChildren(
    card("workers up", w.up), card("draining", w.draining), card("slots", w.capacity), card("slots used", w.used));
  fill($("ov-pools"), ov.pools.map((p) => el("tr", {}, el("td", { text: p.pool || "(shared)" }), el("td", { text: p.workers }),
    el("td", { text: p.used + " / " + p.capacity }), el("td", { text: p.pending }))), "no workers", 4);
  drawBars($("ov-throughput"), ov.throughput.map((b) => ({ label: b.start, parts: [["completed", b.completed], ["failed", b.failed], ["other", b.other]] })), (v) => v);
  drawBars($("ov-wait"), ov.queue_wait.map((b) => ({ label: b.start, parts: [["avg", b.avg_ms]], tick: b.max_ms, count: b.count })), fmtMs);
}

function card(label, n) {
  return el("div", { class: "card" }, el("div", { class: "n", text: n }), el("div", { class: "l", text: label }));
}

// drawBars draws stacked bars, one per minute, with an optional tick (max).
function drawBars(box, buckets, fmt) {
  const W = 600, H = 160, L = 44, B = 18;
  let top = 0;
  for (const b of buckets) top = Math.max(top, b.parts.reduce((s, p) => s + p[1], 0), b.tick || 0);
  top = top || 1;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  s.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }));
  const ymax = svg("text", { x: 2, y: 12 }); ymax.textContent = fmt(Math.round(top)); s.append(ymax);
  const bw = (W - L) / Math.max(1, buckets.length);
  buckets.forEach((b, i) => {
    let y = H - B;
    const x = L + i * bw + 1;
    for (const [cls, v] of b.parts) {
      if (!v) continue;
      const h = (v / top) * (H - B - 16);
      y -= h;
      const r = svg("rect", { class: "bar " + cls, x, y, width: Math.max(1, bw - 2), height: h });
      const t = svg("title", {}); t.textContent = fmtTime(b.label) + ": " + cls + " " + fmt(v); r.append(t);
      s.append(r);
    }
    if (b.tick) {
      const ty = H - B - (b.tick / top) * (H - B - 16);
      s.append(svg("line", { class: "tick", x1: x, x2: x + Math.max(1, bw - 2), y1: ty, y2: ty }));
    }
    if (i % Math.ceil(buckets.length / 6) === 0) {
      const t = svg("text", { x, y: H - 4 });
      t.textContent = new Date(b.label).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
      s.append(t);
    }
  });
  box.replaceChildren(s);
}

// ---- jobs ----

function filters() {
  return {
    state: $("f-state").value, topic: $("f-topic").value.trim(), tenant: $("f-tenant").value.trim(),
    since: $("f-since").value ? Date.now() - Number($("f-since").value) * 60000 : 0,
  };
}

// applyQuery reads filters from the hash (#/jobs?state=FAILED).
function applyQuery() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  if (q.has("state")) $("f-state").value = q.get("state");
}

function matches(job, f) {
  if (f.state && job.state !== f.state) return false;
  if (f.topic && job.topic !== f.topic) return false;
  if (f.tenant && (job.tenant || "") !== f.tenant) return false;
  if (f.since && Date.parse(job.created) < f.since) return false;
  return true;
}

async function loadJobs(more) {
  const f = filters();
  const q = new URLSearchParams({ limit: "100" });
  if (f.state) q.set("state", f.state);
  if (f.topic) q.set("topic", f.topic);
  if (f.tenant) q.set("tenant", f.tenant);
  if (more && app.nextToken) q.set("page_token", app.nextToken);
  // The list is a snapshot from when it was asked for; events keep coming
  // meanwhile. A load that a later one superseded is dropped; a job the
  // page heard of since asking is kept in its newer state; a reload (a
  // reconnect, a resync, a refresh) keeps what the user selected if it is
  // still listed and can still be cancelled.
  const seq = ++app.listSeq;
  const heard = new Set();
  app.listening.add(heard);
  let list;
  try { list = await api("GET", "/v1/jobs?" + q); } finally { app.listening.delete(heard); }
  if (seq !== app.listSeq) return;
  if (!more) app.order = [];
  for (let j of list.jobs) {
    const known = app.jobs.get(j.job_id);
    if (known && heard.has(j.job_id) && newer(known, j)) j = known;
    if (!matches(j, f)) continue;
    app.jobs.set(j.job_id, j);
    remember(j, "record");
    if (!app.order.includes(j.job_id)) app.order.push(j.job_id);
  }
  if (!more) {
    const fresh = [...heard].filter((id) => !app.order.includes(id) && app.jobs.has(id) && matches(app.jobs.get(id), f));
    app.order.unshift(...fresh.reverse());
    for (const id of app.selected) if (!app.order.includes(id) || !ACTIVE.has(app.jobs.get(id).state)) app.selected.delete(id);
  }
  app.nextToken = list.next_page_token || "";
  $("jobs-more").hidden = !app.nextToken;
  renderJobs();
}

function jobRow(j) {
  const box = el("input", { type: "checkbox", "aria-label": "select " + j.job_id, onchange: (e) => { e.target.checked ? app.selected.add(j.job_id) : app.selected.delete(j.job_id); updateBulkButtons(); } });
  box.checked = app.selected.has(j.job_id);
  box.disabled = !ACTIVE.has(j.state);
  return el("tr", { "data-job-id": j.job_id, "data-state": j.state },
    el("td", {}, box),
    el("td", { class: "mono" }, el("a", { href: "#/job/" + encodeURIComponent(j.job_id), text: j.job_id })),
    el("td", { class: "state" }, badge(j.state)),
    el("td", { text: j.topic }), el("td", { text: j.tenant || "" }),
    el("td", { text: j.attempts + " / " + j.max_attempts }),
    el("td", { class: "mono", text: j.worker_id || "" }),
    el("td", { text: fmtTime(j.created) }), el("td", { text: fmtTime(j.updated) }));
}

function renderJobs() {
  const rows = app.order.map((id) => app.jobs.get(id)).filter(Boolean).map(jobRow);
  fill($("jobs-body"), rows, "no jobs", 9);
  $("jobs-all").checked = false;
  updateBulkButtons();
}

// upsertRow puts an event's job in the table: in place, or first when new
// and matching the filters.
function upsertRow(job) {
  const f = filters();
  const tbody = $("jobs-body");
  const old = tbody.querySelector(`tr[data-job-id="${CSS.escape(job.job_id)}"]`);
  if (!matches(job, f)) {
    if (old) { old.remove(); app.order = app.order.filter((id) => id !== job.job_id); app.selected.delete(job.job_id); }
    return;
  }
  const row = jobRow(job);
  row.classList.add("flash");
  if (old) old.replaceWith(row);
  else {
    const empty = tbody.querySelector("td[colspan]");
    if (empty) empty.parentElement.remove();
    tbody.prepend(row);
    app.order.unshift(job.job_id);
  }
  if (!ACTIVE.has(job.state)) app.selected.delete(job.job_id);
  updateBulkButtons();
}

function updateBulkButtons() {
  const c = $("jobs-cancel");
  c.disabled = c.dataset.allowed !== "1" || app.selected.size === 0;
  c.textContent = "Cancel selected" + (app.selected.size ? " (" + app.selected.size + ")" : "");
  const r = $("dlq-retry-selected");
  r.disabled = r.dataset.allowed !== "1" || app.dlqSelected.size === 0;
  r.textContent = "Retry selected" + (app.dlqSelected.size ? " (" + app.dlqSelected.size + ")" : "");
}

async function bulk(ids, label, statusEl, fn) {
  let ok = 0;
  const failed = [];
  statusEl.textContent = label + " " + ids.length + "…";
  for (const id of ids) {
    try { await fn(id); ok++; } catch (e) { failed.push(id + ": " + e.message); }
  }
  statusEl.textContent = label + ": " + ok + " done" + (failed.length ? ", " + failed.length + " refused (" + failed.join("; ") + ")" : "");
}

// ---- job detail ----

async function loadJob() {
  const id = app.jobId;
  $("jd-id").textContent = id;
  let job;
  try {
    job = await api("GET", "/v1/jobs/" + encodeURIComponent(id));
  } catch (e) {
    $("jd-state").textContent = e.status === 404 ? "not found" : "error";
    $("jd-state").className = "badge";
    $("jd-fields").replaceChildren();
    banner(e.message);
    return;
  }
  app.jobs.set(id, job);
  remember(job, "record");
  renderJob(job);
  loadInput(id);
}

function kv(table, rows) {
  table.replaceChildren(...rows.filter((r) => r[1] !== undefined && r[1] !== "" && r[1] !== null)
    .map(([k, v]) => el("tr", { "data-field": k }, el("th", { text: k }), el("td", {}, v))));
}

function renderJob(j) {
  $("jd-state").replaceWith(Object.assign(badge(j.state), { id: "jd-state" }));
  const env = j.env ? Object.entries(j.env).map(([k, v]) => k + "=" + v).join("\n") : "";
  kv($("jd-fields"), [
    ["state", j.state], ["topic", j.topic], ["tenant", j.tenant], ["priority", j.priority], ["pool", j.pool],
    ["attempts", j.attempts + " of " + j.max_attempts + (j.failed_attempts ? " (" + j.failed_attempts + " failed)" : "")],
    ["worker", j.worker_id], ["trace id", el("span", { class: "mono", text: j.trace_id })],
    ["created", fmtTime(j.created)], ["updated", fmtTime(j.updated)], ["attempt started", fmtTime(j.attempt_started)],
    ["next attempt", fmtTime(j.next_attempt)], ["deadline", fmtTime(j.deadline)],
    ["execution", j.execution_ms ? fmtMs(j.execution_ms) : ""], ["pending reason", j.pending_reason],
    ["dead letter", j.dead_letter ? "yes" : ""], ["env", env ? el("pre", { text: env }) : ""],
  ]);
  const decision = j.state === "DENIED" ? "DENY" : j.rule_id ? "ALLOW (after " + (j.pending_reason ? "throttle" : "a rule") + ")" : "ALLOW";
  kv($("jd-safety"), [["decision", decision], ["rule id", j.rule_id || "(default)"], ["policy version", j.policy_version || "(not recorded)"]]);
  $("jd-error-panel").hidden = !j.error;
  $("jd-error").textContent = j.error || "";
  renderResult(j);
  renderTransitions(j);
  const cancel = $("jd-cancel"), retry = $("jd-retry");
  cancel.hidden = !ACTIVE.has(j.state);
  retry.hidden = !j.dead_letter;
  applyRole($("page-job"));
}

async function loadInput(id) {
  const pre = $("jd-input");
  try {
    const inp = await api("GET", "/v1/jobs/" + encodeURIComponent(id) + "/input");
    if (inp.input !== undefined) pre.textContent = inp.input;
    else if (inp.input_base64) pre.textContent = "(" + inp.bytes + " bytes, base64) " + inp.input_base64;
    else if (inp.context_ptr) pre.textContent = "uploaded: " + inp.context_ptr;
    else pre.textContent = "(none)";
  } catch (e) {
    pre.textContent = "(" + e.message + ")";
  }
}

// renderResult shows the result when the gateway serves it
// (GET /v1/jobs/{id}/result), else the result pointer.
async function renderResult(j) {
  const pre = $("jd-result");
  if (j.state !== "COMPLETED") { pre.textContent = "(the job has not completed)"; return; }
  pre.textContent = j.result_ptr ? "pointer: " + j.result_ptr : "(none)";
  if (!j.result_ptr) return;
  try {
    const res = await fetch("/v1/jobs/" + encodeURIComponent(j.job_id) + "/result", { headers: headers({ Accept: "*/*" }) });
    if (!res.ok) return;
    const text = await res.text();
    if (app.jobId === j.job_id) pre.textContent = text + "\n\npointer: " + j.result_ptr;
  } catch (_) { /* the pointer stays */ }
}

// renderTransitions lists what the page heard (events, listings) and fills
// the rest from the record's timestamps: the job record keeps its times of
// creation, of the current attempt's dispatch and of its last change.
function renderTransitions(j) {
  const heard = app.seen.get(j.job_id) || [];
  const rows = heard.map((t) => Object.assign({}, t));
  const has = (state, attempt) => rows.some((r) => r.state === state && (attempt === undefined || r.attempt === attempt));
  if (j.created && !rows.some((r) => r.time && r.time <= j.created)) {
    rows.unshift({ time: j.created, state: "submitted", attempt: 0, worker: "", source: "record" });
  }
  if (j.attempt_started && j.attempts > 0 && !has("DISPATCHED", j.attempts)) {
    rows.push({ time: j.attempt_started, state: "DISPATCHED", attempt: j.attempts, worker: j.worker_id, source: "record" });
  }
  if (!has(j.state, j.attempts)) rows.push({ time: j.updated, state: j.state, attempt: j.attempts, worker: j.worker_id, error: j.error, pending_reason: j.pending_reason, source: "record" });
  rows.sort((a, b) => (a.time || "").localeCompare(b.time || ""));
  fill($("jd-transitions"), rows.map((t) => el("tr", { "data-state": t.state, "data-source": t.source },
    el("td", { text: fmtTime(t.time) }), el("td", {}, STATES.includes(t.state) ? badge(t.state) : t.state),
    el("td", { text: t.attempt || "" }), el("td", { class: "mono", text: t.worker || "" }),
    el("td", { class: "wrap", text: t.error || t.pending_reason || "" }), el("td", { class: "muted", text: t.source }))), "none", 6);
  $("jd-trans-note").textContent = "events heard by this page, filled in from the job record";
}

// ---- workers ----

async function loadWorkers() {
  const [wl, ov] = await Promise.all([api("GET", "/v1/workers"), api("GET", "/v1/overview?window_minutes=1")]);
  $("wk-updated").textContent = wl.workers.length + " live · as of " + fmtTime(new Date().toISOString());
  const tags = (list) => el("span", {}, ...(list || []).map((t) => el("span", { class: "tag", text: t })));
  fill($("wk-body"), wl.workers.map((w) => {
    const hb = w.heartbeat || {};
    const cap = hb.capacity || 1;
    const labels = Object.entries(hb.labels || {}).map(([k, v]) => k + "=" + v);
    return el("tr", { "data-worker-id": hb.worker_id },
      el("td", { class: "mono", text: hb.worker_id + (hb.draining ? " (draining)" : "") }), el("td", { text: hb.type || "" }),
      el("td", { text: hb.pool || "(shared)" }), el("td", { text: (w.assigned || 0) + " / " + cap }),
      el("td", { text: hb.active_jobs || 0 }), el("td", { text: Math.round(hb.cpu_load || 0) + "%" }),
      el("td", { text: hb.gpu_utilization ? Math.round(hb.gpu_utilization) + "%" : "" }),
      el("td", {}, tags(hb.capabilities)), el("td", {}, tags(labels)), el("td", {}, tags(hb.topics)),
      el("td", { text: w.last_seen_ms ? ago(Number(w.last_seen_ms)) : "" }));
  }), "no live workers", 11);
  fill($("wk-pools"), ov.pools.map((p) => el("tr", {}, el("td", { text: p.pool || "(shared)" }), el("td", { text: p.workers }),
    el("td", { text: p.capacity }), el("td", { text: p.used }), el("td", { text: p.pending }))), "no pools", 5);
}

// ---- dead letters ----

async function loadDLQ() {
  const seq = ++app.dlqSeq;
  const list = await api("GET", "/v1/dlq?limit=500");
  if (seq !== app.dlqSeq) return; // a later load supersedes this one
  // A reload (a dead letter's event refreshes the page) keeps what the
  // user selected, if it is still listed.
  const listed = new Set(list.jobs.map((j) => j.job_id));
  for (const id of app.dlqSelected) if (!listed.has(id)) app.dlqSelected.delete(id);
  fill($("dlq-body"), list.jobs.map((j) => {
    const box = el("input", { type: "checkbox", "aria-label": "select " + j.job_id, onchange: (e) => { e.target.checked ? app.dlqSelected.add(j.job_id) : app.dlqSelected.delete(j.job_id); updateBulkButtons(); } });
    box.checked = app.dlqSelected.has(j.job_id);
    const retry = el("button", { class: "retry", "data-needs": "admin", onclick: () => retryOne(j.job_id), text: "Retry" });
    return el("tr", { "data-job-id": j.job_id },
      el("td", {}, box), el("td", { class: "mono" }, el("a", { href: "#/job/" + encodeURIComponent(j.job_id), text: j.job_id })),
      el("td", { text: j.topic }), el("td", { text: j.tenant || "" }), el("td", { text: j.failed_attempts }),
      el("td", { class: "wrap", text: j.error }), el("td", { text: fmtTime(j.updated) }), el("td", {}, retry));
  }), "the dead-letter queue is empty", 8);
  $("dlq-all").checked = list.jobs.length > 0 && app.dlqSelected.size === list.jobs.length;
  applyRole($("page-dlq"));
}

async function retryOne(id) {
  try {
    const job = await api("POST", "/v1/dlq/" + encodeURIComponent(id) + "/retry");
    $("dlq-status").textContent = "retried " + id + " as " + job.job_id;
    $("dlq-status").dataset.newJob = job.job_id;
  } catch (e) {
    $("dlq-status").textContent = "retry of " + id + " refused: " + e.message;
  }
  loadDLQ().catch((e) => banner(e.message));
}

// ---- policy ----

async function loadPolicy() {
  const p = await api("GET", "/v1/policy");
  kv($("pol-info"), [["version", p.version], ["default", p.default], ["rules", String(p.rules.length)]]);
  $("pol-rules").replaceChildren(...p.rules.map((r) => el("li", { text: r })));
}

async function evaluate(ev) {
  ev.preventDefault();
  const body = { topic: $("ev-topic").value.trim() };
  const tenant = $("ev-tenant").value.trim();
  if (tenant) body.tenant = tenant;
  if ($("ev-priority").value) body.priority = $("ev-priority").value;
  const caps = $("ev-caps").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (caps.length) body.required_capabilities = caps;
  const env = {};
  for (const line of $("ev-env").value.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) env[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  if (Object.keys(env).length) body.env = env;
  if ($("ev-input").value) body.input = $("ev-input").value;
  try {
    const d = await api("POST", "/v1/policy/eval", body);
    kv($("ev-result"), [["decision", el("b", { class: "decision", text: String(d.decision).toUpperCase() })], ["rule id", d.rule_id || "(default)"], ["reason", d.reason],
      ["policy version", d.policy_version], ["retry after", d.retry_after_ms ? fmtMs(d.retry_after_ms) : ""]]);
  } catch (e) {
    kv($("ev-result"), [["refused", e.message]]);
  }
}

// ---- wiring ----

function init() {
  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const k = $("key-input").value.trim();
    if (k) sessionStorage.setItem(KEY_STORE, k);
    $("key-input").value = "";
    if (await loadMe()) { follow(); refreshPage(); }
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    if (app.stream) app.stream.abort();
    setLive(false, "offline");
    loadMe().then((me) => { if (me) { follow(); refreshPage(); } });
  });
  $("ov-window").addEventListener("change", () => refreshPage());
  $("job-filters").addEventListener("submit", (e) => { e.preventDefault(); loadJobs(false).catch((x) => banner(x.message)); });
  $("f-failed").addEventListener("click", () => { $("f-state").value = "FAILED"; loadJobs(false).catch((x) => banner(x.message)); });
  $("f-clear").addEventListener("click", () => {
    $("f-state").value = ""; $("f-topic").value = ""; $("f-since").value = "";
    if (!$("f-tenant").disabled) $("f-tenant").value = "";
    loadJobs(false).catch((x) => banner(x.message));
  });
  $("jobs-more").addEventListener("click", () => loadJobs(true).catch((x) => banner(x.message)));
  $("job-search").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("job-search-id").value.trim();
    if (id) location.hash = "#/job/" + encodeURIComponent(id);
  });
  $("jobs-all").addEventListener("change", (e) => {
    for (const box of $("jobs-body").querySelectorAll("input[type=checkbox]:not(:disabled)")) {
      box.checked = e.target.checked;
      const id = box.closest("tr").dataset.jobId;
      e.target.checked ? app.selected.add(id) : app.selected.delete(id);
    }
    updateBulkButtons();
  });
  $("jobs-cancel").addEventListener("click", async () => {
    const ids = [...app.selected];
    await bulk(ids, "cancel", $("jobs-status"), (id) => api("POST", "/v1/jobs/" + encodeURIComponent(id) + "/cancel", { reason: "cancelled from the dashboard" }));
    app.selected.clear();
    loadJobs(false).catch((x) => banner(x.message));
  });
  $("dlq-all").addEventListener("change", (e) => {
    for (const box of $("dlq-body").querySelectorAll("input[type=checkbox]")) {
      box.checked = e.target.checked;
      const id = box.closest("tr").dataset.jobId;
      e.target.checked ? app.dlqSelected.add(id) : app.dlqSelected.delete(id);
    }
    updateBulkButtons();
  });
  $("dlq-retry-selected").addEventListener("click", async () => {
    await bulk([...app.dlqSelected], "retry", $("dlq-status"), (id) => api("POST", "/v1/dlq/" + encodeURIComponent(id) + "/retry"));
    app.dlqSelected.clear();
    loadDLQ().catch((x) => banner(x.message));
  });
  $("jd-cancel").addEventListener("click", async () => {
    try { renderJob(await api("POST", "/v1/jobs/" + encodeURIComponent(app.jobId) + "/cancel", { reason: "cancelled from the dashboard" })); } catch (e) { banner(e.message); }
  });
  $("jd-retry").addEventListener("click", async () => {
    try { const j = await api("POST", "/v1/dlq/" + encodeURIComponent(app.jobId) + "/retry"); location.hash = "#/job/" + encodeURIComponent(j.job_id); } catch (e) { banner(e.message); }
  });
  $("eval-form").addEventListener("submit", evaluate);
  window.addEventListener("hashchange", route);
  loadMe().then((me) => {
    if (me) follow();
    route();
  });
}

document.addEventListener("DOMContentLoaded", init);
