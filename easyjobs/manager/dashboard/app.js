// The easyjobs dashboard: plain DOM code, no framework, no build step.
//
// Invariants:
// - The token lives in sessionStorage only and travels only in the Authorization header.
// - Data from the API is only ever put in the page with textContent (never innerHTML).
// - Nothing polls the manager: the page loads a snapshot, then follows /events; a job event
//   updates its row in place, a worker event refreshes the workers panel. When the stream ends
//   the page reloads a snapshot and reconnects with backoff. A local timer only slides the
//   charts' window and the schedules' "in 3 min" along.
// - The URL's hash is the view: #/ (overview), #/jobs?queue=&task=&status=&since=&until=
//   (filtered jobs), #/jobs/ID?... (one job beside them), #/schedules.

const TOKEN_KEY = "easyjobs.token";
const ROOT = new URL(".", location.href); // the API lives beside /dashboard
const PAGE = 200; // jobs per GET /jobs page
const MAX_SCAN = 5; // pages read per step while a time filter hides everything read so far
const WINDOW = 15 * 60; // seconds the charts cover
const BUCKET = 60; // seconds per chart bar
const STATUSES = ["waiting", "queued", "running", "retrying", "succeeded", "failed", "cancelled"];
const SHORT = { waiting: "wait", queued: "queue", running: "run", retrying: "retry",
  succeeded: "ok", failed: "fail", cancelled: "cxl" }; // column heads on a narrow screen
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const FILTERS = ["queue", "task", "status", "since", "until"];
const LOOPBACK = "loopback"; // the id of the manager's own worker (manager.task), not a process

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
let session = 0; // bumped at each sign-in and sign-out: an older follow() loop stops
let stream = null; // AbortController of the running /events request
const jobs = new Map(); // job id -> {job, row}, the loaded jobs matching the server-side filters
const attemptsSeen = new Map(); // job id -> Map(attempt -> what this page saw of it live)
const finished = new Map(); // job id -> summary, jobs finished within the charts' window
let tasks = []; // [{queue, task}] from /queues, for the run form, filters and schedules
let queueNames = [];
let selected = null; // id of the job shown in the detail panel
let selectedJob = null; // its record as last read
let filters = {}; // the jobs view's filters, as in the URL
let listing = 0; // bumped when the filters change: an older page answer is dropped
let more = false; // the store has jobs older than the last row
let pages = 0; // pages read since the filters last changed: how many rows live updates keep

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
class Unauthorized extends ApiError {}

// ------------------------------------------------------------------ DOM helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node[key] = value; // className, type, textContent, title... never innerHTML
  }
  for (const child of children) {
    if (child != null) node.append(child); // strings become text nodes
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

const pad = (n) => String(n).padStart(2, "0");

// Local date and time, "2026-11-27 14:03:05": a job list spans days, so the date is always shown.
function stamp(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function span(seconds) {
  const s = Math.abs(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 129600) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} d`;
}

function duration(job) {
  if (!job.started_at || !job.finished_at) return job.status === "running" ? "running" : "";
  return span(job.finished_at - job.started_at);
}

// Job ids start with a clock reading, so their tails tell them apart.
function shortId(id) {
  return `…${id.slice(-8)}`;
}

const now = () => Date.now() / 1000;

// ------------------------------------------------------------------ API

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, ROOT), {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    signOut("The token was refused. Sign in again.");
    throw new Unauthorized(401, "unauthorized");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok && response.status !== 202) {
    const message = data.error ? data.error.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

// One request at a time per panel: events that arrive while one is in flight ask for one more.
function coalesced(load) {
  let running = false;
  let again = false;
  return async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      do { again = false; await load(); } while (again);
    } catch (err) {
      if (!(err instanceof Unauthorized)) console.warn("refresh failed", err);
    } finally {
      running = false;
    }
  };
}

// ------------------------------------------------------------------ login

function showLogin(message) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

function signOut(message) {
  token = null;
  session += 1;
  sessionStorage.removeItem(TOKEN_KEY);
  if (stream) stream.abort();
  stream = null;
  forget();
  showLogin(message);
}

// Nothing read under one token stays on the page for the next (it may see less).
function forget() {
  listing += 1;
  for (const seen of [jobs, attemptsSeen, finished]) seen.clear();
  tasks = [];
  queueNames = [];
  filters = {};
  for (const id of ["jobs", "workers", "queues", "queues-head", "charts", "schedules",
    "run-task", "run-fields", "run-created"]) $(id).replaceChildren();
  hideDetail();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const given = $("token").value.trim();
  if (!given) return;
  const response = await fetch(new URL("queues", ROOT), {
    headers: { Authorization: `Bearer ${given}` }, cache: "no-store",
  }).catch(() => null);
  if (!response || response.status === 401) {
    $("login-error").textContent = response
      ? "Wrong token: the manager refused it." : "The manager cannot be reached.";
    return;
  }
  token = given;
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
});

$("logout").addEventListener("click", () => signOut(""));

// ------------------------------------------------------------------ views

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const params = new URLSearchParams(cut < 0 ? "" : raw.slice(cut + 1));
  const [view, id] = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (view === "jobs") return { view, job: id || null, params };
  if (view === "schedules") return { view, job: null, params };
  return { view: "overview", job: null, params };
}

function filterQuery(values = filters) {
  const query = new URLSearchParams();
  for (const name of FILTERS) if (values[name]) query.set(name, values[name]);
  const text = query.toString();
  return text ? `?${text}` : "";
}

const jobHash = (id) => `#/jobs/${encodeURIComponent(id)}${filterQuery()}`;
const go = (hash) => { if (location.hash !== hash) location.hash = hash; else route(); };

function route() {
  const { view, job, params } = parseRoute();
  $("main").dataset.view = view;
  for (const panel of document.querySelectorAll("[data-in]")) {
    panel.hidden = !panel.dataset.in.split(" ").includes(view);
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.dataset.view === view);
  }
  if (view === "jobs") {
    const wanted = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || ""]));
    showFilters(wanted);
    if (filterQuery(wanted) !== filterQuery()) {
      filters = wanted;
      if (token) reloadJobs();
    }
  }
  if (view === "jobs" && job) showJob(job);
  else hideDetail();
  if (view === "schedules") renderSchedules();
}

window.addEventListener("hashchange", route);

// ------------------------------------------------------------------ workers

const refreshWorkers = coalesced(async () => {
  let workers;
  try {
    ({ workers } = await api("workers"));
  } catch (err) {
    if (err.status !== 403) throw err;
    showWorkersDenied(true); // a client credential: not its business, not an error
    return;
  }
  showWorkersDenied(false);
  // The manager's own worker runs manager.task tasks in the manager's process: shown, and
  // labelled so, only when it has tasks.
  const rows = workers.filter((w) => w.id !== LOOPBACK || w.tasks.length).map((w) => {
    const builtin = w.id === LOOPBACK;
    const load = w.capacity ? `${w.in_flight} / ${w.capacity}` : `${w.in_flight}`;
    const meter = w.capacity ? el("meter", { min: 0, max: w.capacity, value: w.in_flight }) : null;
    const button = builtin ? null : el("button", {
      type: "button", className: "small", textContent: w.paused ? "Resume" : "Pause",
      onclick: () => toggle(w.paused ? "resume" : "pause", w.id),
    });
    return el("tr", { dataset: { workerId: w.id, paused: String(w.paused) } },
      el("td", { title: w.id }, w.name,
        builtin ? el("span", { className: "tag" }, " manager's own tasks") : null),
      el("td", {}, w.queues.join(", ")),
      el("td", { className: "load" }, meter, ` ${load}`),
      el("td", { className: "wide" }, stamp(w.connected_at)),
      el("td", { className: w.paused ? "state paused wide" : "state wide" },
        w.paused ? "paused" : "active"),
      el("td", {}, button));
  });
  $("workers").replaceChildren(...rows);
  $("no-workers").hidden = rows.length > 0;
});

function showWorkersDenied(denied) {
  $("workers-denied").hidden = !denied;
  $("workers-table").hidden = denied;
  $("worker-actions").hidden = denied;
  if (denied) $("no-workers").hidden = true;
}

async function toggle(action, worker) {
  $("workers-error").textContent = "";
  try {
    await api(`workers/${action}`, { method: "POST", body: worker ? { worker } : {} });
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("workers-error").textContent = err.message;
  }
  // The manager announces the change on /events, which refreshes the panel.
}

$("pause-all").addEventListener("click", () => toggle("pause", null));
$("resume-all").addEventListener("click", () => toggle("resume", null));

// ------------------------------------------------------------------ queues and the run form

const refreshQueues = coalesced(async () => {
  const { queues } = await api("queues");
  const names = Object.keys(queues).sort();
  $("queues-head").replaceChildren(el("tr", {}, el("th", {}, "Queue"),
    ...STATUSES.map((s) => el("th", { className: `count ${s}`, title: s },
      el("span", { className: "full" }, s), el("span", { className: "short" }, SHORT[s])))));
  $("queues").replaceChildren(...names.map((name) => el("tr", { dataset: { queue: name } },
    el("td", {}, name),
    ...STATUSES.map((s) => {
      const n = queues[name].counts[s] || 0;
      return el("td", { className: n && s === "failed" ? "count failed-count" : "count" }, String(n));
    }))));
  queueNames = names;
  const found = names.flatMap((q) => queues[q].tasks.map((t) => ({ queue: q, task: t })));
  const key = (t) => `${t.queue}/${t.task.name}`;
  const changed = found.map(key).join() !== tasks.map(key).join();
  const previous = tasks[Number($("run-task").value)];
  tasks = found;
  if (changed) {
    $("run-task").replaceChildren(...tasks.map((t, i) =>
      el("option", { value: String(i), textContent: `${t.queue} / ${t.task.name}` })));
    const keep = previous ? tasks.findIndex((t) => key(t) === key(previous)) : -1;
    if (keep >= 0) $("run-task").value = String(keep);
    renderFields();
  }
  fillFilterOptions();
  renderSchedules();
});

// A field per keyword-bindable parameter; empty fields are left out (the default applies).
function renderFields() {
  const entry = tasks[Number($("run-task").value)];
  $("run-fields").replaceChildren();
  $("run-submit").disabled = !entry;
  if (!entry) return;
  const { schema, params } = entry.task;
  const required = new Set(schema.required || []);
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const param = params.find((p) => p.name === name) || {};
    const kind = fieldKind(prop);
    let input;
    if (kind === "boolean") {
      input = el("select", {}, el("option", { value: "", textContent: "(default)" }),
        el("option", { value: "true", textContent: "true" }),
        el("option", { value: "false", textContent: "false" }));
    } else {
      input = el("input", { type: kind === "number" || kind === "integer" ? "number" : "text" });
      if (kind === "number") input.step = "any";
      if ("default" in prop) input.placeholder = `default: ${JSON.stringify(prop.default)}`;
      else if (kind === "json") input.placeholder = "JSON value";
    }
    input.id = `arg-${name}`;
    input.dataset.arg = name;
    input.dataset.kind = kind;
    input.required = required.has(name);
    const label = el("label", { htmlFor: input.id }, name,
      el("span", { className: "type" }, ` ${param.annotation || "any"}${required.has(name) ? " *" : ""}`));
    $("run-fields").append(el("div", { className: "field" }, label, input));
  }
  if (params.some((p) => p.kind === "positional_only" || p.kind === "var_positional")) {
    $("run-fields").append(el("p", { className: "hint" },
      "This task has positional-only parameters: use the raw JSON body with \"args\"."));
  }
}

function fieldKind(prop) {
  const type = prop.type;
  if (["string", "integer", "number", "boolean"].includes(type)) return type;
  return "json"; // objects, arrays, unions and unannotated parameters
}

function formBody() {
  if ($("run-raw").checked) {
    const text = $("run-json").value.trim();
    return text ? JSON.parse(text) : {};
  }
  const body = {};
  for (const input of $("run-fields").querySelectorAll("[data-arg]")) {
    const raw = input.value;
    if (raw === "") continue;
    const name = input.dataset.arg;
    switch (input.dataset.kind) {
      case "string": body[name] = raw; break;
      case "integer": case "number": body[name] = Number(raw); break;
      case "boolean": body[name] = raw === "true"; break;
      default:
        try { body[name] = JSON.parse(raw); }
        catch { throw new Error(`${name}: not valid JSON`); }
    }
  }
  return body;
}

async function submit(queue, task, body) {
  const path = `${encodeURIComponent(queue)}/task/${encodeURIComponent(task)}`;
  return (await api(path, { method: "POST", body })).job_id;
}

$("run-task").addEventListener("change", renderFields);
$("run-raw").addEventListener("change", () => {
  const raw = $("run-raw").checked;
  if (raw) {
    try { $("run-json").value = json(formBody()); } catch { $("run-json").value = "{}"; }
  }
  $("run-json").hidden = !raw;
  $("run-fields").hidden = raw;
});

$("run-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const entry = tasks[Number($("run-task").value)];
  if (!entry) return;
  $("run-error").textContent = "";
  $("run-created").replaceChildren();
  try {
    const id = await submit(entry.queue, entry.task.name, formBody());
    $("run-created").append("Created job ", jobLink(id));
    go(jobHash(id));
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("run-error").textContent = err.message;
  }
});

// ------------------------------------------------------------------ schedules

function renderSchedules() {
  const scheduled = tasks.filter((t) => t.task.options.schedule);
  $("schedules").replaceChildren(...scheduled.map(({ queue, task }) => {
    const { schedule, timezone } = task.options;
    const next = task.next_fire;
    const when = next ? [stamp(next), el("span", { className: "hint" },
      next > now() ? ` in ${span(next - now())}` : " due")] : ["—"];
    return el("tr", { dataset: { schedule: `${queue}/${task.name}` } },
      el("td", {}, `${queue} / ${task.name}`),
      el("td", {}, el("code", {}, schedule), timezone ? ` ${timezone}` : ""),
      el("td", { className: "next-fire" }, ...when));
  }));
  $("no-schedules").hidden = scheduled.length > 0;
}

// ------------------------------------------------------------------ charts

function remember(job) {
  if (TERMINAL.has(job.status) && job.finished_at && job.finished_at > now() - WINDOW) {
    finished.set(job.id, job);
  }
}

// Per queue and minute: [finished, failed, latencies]; the last bucket is the current minute.
function buckets() {
  const end = Math.floor(now() / BUCKET) * BUCKET + BUCKET;
  const start = end - WINDOW;
  const byQueue = new Map();
  for (const [id, job] of finished) {
    if (job.finished_at < start) { finished.delete(id); continue; }
    if (job.status === "cancelled") continue;
    if (!byQueue.has(job.queue)) {
      byQueue.set(job.queue, Array.from({ length: WINDOW / BUCKET }, () => [0, 0, []]));
    }
    const slot = byQueue.get(job.queue)[Math.min(WINDOW / BUCKET - 1,
      Math.floor((job.finished_at - start) / BUCKET))];
    slot[0] += 1;
    if (job.status === "failed") slot[1] += 1;
    if (job.created_at) slot[2].push(job.finished_at - job.created_at);
  }
  return byQueue;
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// Fifteen bars scaled to `top`; `null` values draw nothing (no job finished that minute).
function bars(values, top, kind, label) {
  const width = 150;
  const height = 40;
  const step = width / values.length;
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
    class: `bars ${kind}`, role: "img", "aria-label": label },
  svg("title", {}, label),
  svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }),
  ...values.map((v, i) => {
    const h = !v || !top ? 0 : Math.max(1, (v / top) * (height - 2));
    return svg("rect", { x: i * step + 1, y: height - h, width: step - 2, height: h });
  }));
}

function renderCharts() {
  const data = buckets();
  const names = [...data.keys()].sort();
  $("charts").replaceChildren(...names.map((queue) => {
    const slots = data.get(queue);
    const done = slots.map((s) => s[0]);
    const failed = slots.reduce((n, s) => n + s[1], 0);
    const total = done.reduce((a, b) => a + b, 0);
    const rates = slots.map((s) => (s[0] ? s[1] / s[0] : null));
    const latencies = slots.map((s) => median(s[2]));
    const overall = median(slots.flatMap((s) => s[2]));
    const rate = total ? Math.round((100 * failed) / total) : 0;
    const figure = (metric, text, chart) => el("figure", { className: "chart" },
      el("figcaption", {}, el("span", { dataset: { metric } }, text)), chart);
    return el("div", { className: "chart-row", dataset: { queue } },
      el("h3", {}, queue),
      figure("finished", `${total} finished`, bars(done, Math.max(...done),
        "throughput", `${queue}: jobs finished per minute`)),
      figure("failure-rate", `${rate}% failed`, bars(rates, 1,
        "failures", `${queue}: share of finished jobs that failed, per minute`)),
      figure("latency", overall == null ? "latency —" : `median ${span(overall)}`,
        bars(latencies, Math.max(...latencies.filter((v) => v != null)),
          "latency", `${queue}: median latency from submit to finish, per minute`)));
  }));
  $("no-charts").hidden = names.length > 0;
}

let chartsDue = false;
function chartsChanged() {
  if (chartsDue) return;
  chartsDue = true;
  requestAnimationFrame(() => { chartsDue = false; renderCharts(); });
}

async function seedCharts() {
  // Jobs that finished before the page opened: the newest page of the store's jobs.
  const { jobs: recent } = await api("jobs?limit=500");
  for (const job of recent) remember(job);
  chartsChanged();
}

// ------------------------------------------------------------------ jobs: filters and paging

// The filter inputs show the URL's filters (on a route change only: typing is not undone).
function showFilters(values) {
  fillFilterOptions(values);
  for (const name of FILTERS) $(`filter-${name}`).value = values[name];
}

// Choices from /queues; a filter value no queue advertises (any more) stays a choice.
function fillFilterOptions(values = filters) {
  const options = (select, names) => {
    const keep = values[select.name] || "";
    const all = keep && !names.includes(keep) ? [...names, keep] : names;
    if ([...select.options].slice(1).map((o) => o.value).join() !== all.join()) {
      const current = select.value;
      select.replaceChildren(el("option", { value: "", textContent: "any" }),
        ...all.map((n) => el("option", { value: n, textContent: n })));
      select.value = current;
    }
  };
  options($("filter-queue"), queueNames);
  options($("filter-status"), STATUSES);
  const names = new Set(tasks.filter((t) => !values.queue || t.queue === values.queue)
    .map((t) => t.task.name));
  $("task-names").replaceChildren(...[...names].sort().map((n) => el("option", { value: n })));
}

function formFilters() {
  return Object.fromEntries(FILTERS.map((name) => [name, $(`filter-${name}`).value.trim()]));
}

$("filters").addEventListener("change", () => {
  const { job } = parseRoute();
  const query = filterQuery(formFilters());
  go(job ? `#/jobs/${encodeURIComponent(job)}${query}` : `#/jobs${query}`);
});
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("filter-clear").addEventListener("click", () => go("#/jobs"));

$("find").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("find-id").value.trim();
  if (id) go(jobHash(id));
});

const seconds = (local) => (local ? new Date(local).getTime() / 1000 : null);

// The time filter is applied here, to rows read with the other filters (GET /jobs has none).
function inTime(job) {
  const since = seconds(filters.since);
  const until = seconds(filters.until);
  return (since == null || job.created_at >= since) && (until == null || job.created_at <= until);
}

function matches(job) {
  return (!filters.queue || job.queue === filters.queue)
    && (!filters.task || job.task === filters.task)
    && (!filters.status || job.status === filters.status);
}

function reloadJobs() {
  listing += 1;
  jobs.clear();
  $("jobs").replaceChildren();
  pages = 0;
  more = false;
  loadOlder();
}

// Reads pages of older jobs; while the time filter hides all it read, it goes on a few pages.
async function loadOlder() {
  const mine = listing;
  $("jobs-error").textContent = "";
  const query = new URLSearchParams({ limit: String(PAGE) });
  for (const name of ["queue", "task", "status"]) if (filters[name]) query.set(name, filters[name]);
  const shown = visibleCount();
  $("jobs-older").disabled = true;
  try {
    for (let scanned = 0; scanned < MAX_SCAN; scanned += 1) {
      const last = $("jobs").lastElementChild;
      if (last) query.set("cursor", last.dataset.jobId);
      const { jobs: page, next } = await api(`jobs?${query}`);
      if (mine !== listing) return; // the filters changed meanwhile
      pages += 1;
      for (const job of page) { upsert(job, false); remember(job); }
      more = next != null;
      if (!more || visibleCount() > shown || pastSince()) break;
    }
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("jobs-error").textContent = err.message;
  }
  $("jobs-older").disabled = false;
  showPaging();
}

function visibleCount() {
  let n = 0;
  for (const row of $("jobs").children) if (!row.hidden) n += 1;
  return n;
}

// Rows come newest first: once the last is older than `since`, no older page can match.
function pastSince() {
  const last = $("jobs").lastElementChild;
  const since = seconds(filters.since);
  return since != null && last != null && jobs.get(last.dataset.jobId).job.created_at < since;
}

function showPaging() {
  const shown = visibleCount();
  const filtered = shown !== jobs.size;
  $("jobs-summary").textContent = `${shown} job${shown === 1 ? "" : "s"} shown`
    + (filtered ? ` (of ${jobs.size} read; the time filter hides the others)` : "");
  $("jobs-older").hidden = !more || pastSince();
  $("jobs-older").textContent = filters.since || filters.until
    ? "Look further back" : `Load ${PAGE} older jobs`;
  $("no-jobs").hidden = shown > 0;
  $("no-jobs").textContent = FILTERS.some((name) => filters[name])
    ? "No loaded job matches these filters." : "No jobs yet.";
}

$("jobs-older").addEventListener("click", () => loadOlder());

// ------------------------------------------------------------------ jobs: the list

// How far along a job is; a snapshot read from the store may lag the pushed events, so a
// record only replaces one it is not behind. Within an attempt: running, retrying, requeued.
const RANK = { waiting: 0, running: 1, retrying: 2, queued: 3 };
function progress(job) {
  return job.attempts * 10 + (TERMINAL.has(job.status) ? 9 : RANK[job.status]);
}

function upsert(job, live) {
  const known = jobs.get(job.id);
  if (known && progress(job) < progress(known.job)) return;
  if (live && !matches(job)) { // it changed away from the filters: it leaves the list
    if (known) { known.row.remove(); jobs.delete(job.id); showPaging(); }
    return;
  }
  const row = jobRow(job);
  if (known) {
    known.row.replaceWith(row);
    known.job = job;
    known.row = row;
  } else {
    jobs.set(job.id, { job, row });
    placeRow(row, job);
    if (live) trim();
  }
  if (live) showPaging();
}

function placeRow(row, job) {
  // Newest first. Pages arrive in order and live jobs are new: look at the ends first.
  const rows = $("jobs");
  const last = rows.lastElementChild;
  if (!last || jobs.get(last.dataset.jobId).job.created_at >= job.created_at) {
    rows.append(row);
    return;
  }
  for (const other of rows.children) {
    const entry = jobs.get(other.dataset.jobId);
    if (entry && entry.job.created_at < job.created_at) {
      other.before(row);
      return;
    }
  }
  rows.append(row);
}

// Live jobs push the oldest out, keeping as many rows as the pages read so far.
function trim() {
  while (jobs.size > PAGE * Math.max(1, pages)) {
    const last = $("jobs").lastElementChild;
    jobs.delete(last.dataset.jobId);
    attemptsSeen.delete(last.dataset.jobId);
    last.remove();
    more = true;
  }
}

function jobRow(job) {
  return el("tr", {
    className: `job ${job.status}${job.id === selected ? " selected" : ""}`,
    dataset: { jobId: job.id, status: job.status },
    hidden: !inTime(job),
    onclick: () => go(jobHash(job.id)),
  },
  el("td", {}, jobLink(job.id)),
  el("td", { className: "task" }, `${job.queue} / ${job.task}`),
  el("td", {}, el("span", { className: `badge ${job.status}` }, job.status),
    job.error_type && job.status !== "succeeded"
      ? el("span", { className: "error-type" }, ` ${job.error_type}`) : null),
  el("td", { className: "num wide" }, String(job.attempts)),
  el("td", { className: "num wide" }, duration(job)),
  el("td", { className: "wide" }, job.worker || ""),
  el("td", { className: "when" }, stamp(job.created_at)));
}

function jobLink(id) {
  return el("a", {
    href: jobHash(id), className: "id", dataset: { jobLink: id }, title: id,
    textContent: shortId(id), onclick: (event) => event.stopPropagation(),
  });
}

// ------------------------------------------------------------------ job detail

let detailRequest = 0; // answers can come back out of order: only the latest is shown

async function showJob(id) {
  if (id !== selected) {
    selectedJob = null;
    $("detail-problem").textContent = "";
  }
  selected = id;
  for (const row of $("jobs").children) row.classList.toggle("selected", row.dataset.jobId === id);
  $("detail").hidden = false;
  if (!token) return; // signed out: start() shows it once signed in
  const request = ++detailRequest;
  try {
    const job = await api(`jobs/${encodeURIComponent(id)}`);
    if (request !== detailRequest) return;
    renderDetail(job);
    $("detail-problem").textContent = "";
  } catch (err) {
    if (request !== detailRequest || err instanceof Unauthorized) return;
    $("detail-problem").textContent = err.status === 404 ? `No job ${id}.` : err.message;
    if (err.status === 404) renderDetail(null);
  }
}

function hideDetail() {
  selected = null;
  selectedJob = null;
  $("detail").hidden = true;
  for (const row of $("jobs").querySelectorAll(".selected")) row.classList.remove("selected");
}

function renderDetail(job) {
  if (job && job.id !== selected) return; // another job was opened meanwhile
  selectedJob = job;
  $("detail-id").textContent = job ? job.id : selected;
  $("detail").dataset.status = job ? job.status : "";
  for (const part of ["detail-fields", "detail-args", "detail-attempts"]) {
    $(part).replaceChildren();
  }
  $("detail-attempts-note").textContent = "";
  $("detail-cancel").hidden = !job || TERMINAL.has(job.status);
  $("detail-rerun").hidden = !job || !TERMINAL.has(job.status);
  $("detail-result-box").hidden = !job || job.status !== "succeeded";
  $("detail-error-box").hidden = !job || !job.error;
  if (!job) return;
  const fields = [
    ["Task", `${job.queue} / ${job.task}`],
    ["Status", el("span", { className: `badge ${job.status}` }, job.status)],
    ["Attempts", String(job.attempts)],
    ["Worker", job.worker || "—"],
    ["Created", stamp(job.created_at)],
    ["Started", stamp(job.started_at) || "—"],
    ["Finished", stamp(job.finished_at) || "—"],
    ["Duration", duration(job) || "—"],
  ];
  if (job.next_attempt_at) fields.push(["Next attempt", stamp(job.next_attempt_at)]);
  const links = [
    ["Parent", job.parent ? [job.parent] : []],
    ["Depends on", job.dependencies || []],
    ["On failure job", job.on_failure_job ? [job.on_failure_job] : []],
    ["Handles failure of", job.handler_for ? [job.handler_for] : []],
  ];
  for (const [name, ids] of links) {
    if (ids.length) fields.push([name, el("span", { className: "links" }, ...ids.map(jobLink))]);
  }
  $("detail-fields").append(...fields.flatMap(([name, value]) =>
    [el("dt", {}, name), el("dd", {}, value)]));
  renderAttempts(job);
  $("detail-args").textContent = json({ args: job.args, kwargs: job.kwargs });
  $("detail-result").textContent = job.status === "succeeded" ? json(job.result) : "";
  const error = job.error;
  $("detail-error").textContent = error ? `${error.type}: ${error.message}` : "";
  $("detail-traceback").textContent = error ? error.traceback || "" : "";
}

// The store keeps a job's latest attempt (worker, start, end, error); earlier ones are shown
// only as far as this page saw them happen on the live feed.
function renderAttempts(job) {
  const seen = attemptsSeen.get(job.id) || new Map();
  const rows = [];
  for (let n = 1; n <= job.attempts; n += 1) {
    let entry = seen.get(n);
    if (n === job.attempts) entry = latestAttempt(job, entry);
    if (!entry) continue;
    rows.push(el("tr", { dataset: { attempt: String(n) } },
      el("td", { className: "num" }, String(n)),
      el("td", {}, entry.worker || "—"),
      el("td", { className: "when" }, stamp(entry.started_at) || "—"),
      el("td", { className: "when" }, stamp(entry.ended_at) || "—"),
      el("td", {}, entry.outcome || "running")));
  }
  $("detail-attempts").replaceChildren(...rows);
  const missing = job.attempts - rows.length;
  const never = TERMINAL.has(job.status) ? "It never started." : "Not started yet.";
  $("detail-attempts-note").textContent = job.attempts === 0 ? never
    : missing > 0 ? `${missing} earlier attempt${missing === 1 ? "" : "s"} happened before this `
      + "page was open: the store keeps only the count and the latest attempt's error." : "";
}

function latestAttempt(job, seen = {}) {
  const entry = { ...seen, worker: job.worker || seen.worker,
    started_at: job.started_at || seen.started_at };
  if (TERMINAL.has(job.status)) {
    entry.ended_at = job.finished_at;
    entry.outcome = job.error ? `${job.status}: ${job.error.type}` : job.status;
  } else if (job.status === "retrying") {
    entry.outcome = `failed: ${job.error ? job.error.type : "error"}; next attempt `
      + stamp(job.next_attempt_at);
  } else if (job.status !== "running") {
    entry.outcome = entry.outcome || job.status;
  }
  return entry;
}

// What the live feed tells about each attempt: who ran it, when, and how it ended.
function noteAttempt(change, job) {
  if (!job.attempts) return;
  if (!attemptsSeen.has(job.id)) attemptsSeen.set(job.id, new Map());
  const seen = attemptsSeen.get(job.id);
  const entry = seen.get(job.attempts) || {};
  if (change === "started") Object.assign(entry, { worker: job.worker, started_at: job.started_at });
  else if (change === "retrying") {
    Object.assign(entry, { ended_at: now(), outcome: `failed: ${job.error_type || "error"}` });
  } else if (change === "requeued" && entry.started_at && !entry.outcome) {
    Object.assign(entry, { ended_at: now(), outcome: "requeued: its worker went away" });
  } else if (TERMINAL.has(job.status)) {
    Object.assign(entry, { ended_at: job.finished_at, outcome: job.status });
  }
  seen.set(job.attempts, entry);
}

$("detail-close").addEventListener("click", () => go(`#/jobs${filterQuery()}`));

$("detail-cancel").addEventListener("click", async () => {
  if (!selected) return;
  try {
    renderDetail(await api(`jobs/${encodeURIComponent(selected)}/cancel`, { method: "POST" }));
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("detail-problem").textContent = err.message;
  }
});

// A new job of the same task with the same arguments (the original stays as it was).
$("detail-rerun").addEventListener("click", async () => {
  const job = selectedJob;
  if (!job) return;
  $("detail-problem").textContent = "";
  try {
    const id = await submit(job.queue, job.task, { args: job.args, kwargs: job.kwargs });
    go(jobHash(id));
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("detail-problem").textContent = err.message;
  }
});

// ------------------------------------------------------------------ live updates

function handle(event) {
  if (event.kind === "job") {
    noteAttempt(event.change, event.job);
    upsert(event.job, true);
    remember(event.job);
    if (TERMINAL.has(event.job.status)) chartsChanged();
    if (event.job.id === selected) showJob(selected);
    refreshQueues();
    if (event.change !== "created") refreshWorkers(); // a job started or ended: load changed
  } else if (event.kind === "worker") {
    refreshWorkers();
    refreshQueues(); // a worker that comes or goes brings or takes tasks
  }
}

// Server-sent events over fetch(): blocks separated by a blank line, payload in "data:" lines.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}

function setLive(live) {
  $("live").textContent = live ? "live" : "reconnecting…";
  $("live").className = live ? "live on" : "live off";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Follow /events until signed out: subscribe first, then load the snapshot (so no change falls
// between the two), then apply events as they come. Reconnect with capped, jittered backoff.
async function follow(mine) {
  let failures = 0;
  while (mine === session) {
    const controller = new AbortController();
    stream = controller;
    try {
      const response = await fetch(new URL("events", ROOT), {
        headers: { Authorization: `Bearer ${token}` }, cache: "no-store", signal: controller.signal,
      });
      if (response.status === 401) { signOut("The token was refused. Sign in again."); return; }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      reloadJobs();
      await Promise.all([refreshWorkers(), refreshQueues(), seedCharts().catch(() => null)]);
      if (selected) showJob(selected);
      setLive(true);
      failures = 0;
      await readEvents(response.body, handle);
    } catch (err) {
      if (controller.signal.aborted || err instanceof Unauthorized) return;
    }
    if (mine !== session) return; // signed out (and maybe in again) meanwhile
    setLive(false);
    const delay = Math.min(10000, 250 * 2 ** failures++);
    await sleep(delay / 2 + Math.random() * delay / 2);
  }
}

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("login-error").textContent = "";
  session += 1;
  route();
  follow(session);
}

// The charts' window and "next fire in" move with the clock, not with events.
setInterval(() => {
  if (!token) return;
  renderCharts();
  if (parseRoute().view === "schedules") renderSchedules();
}, 10000);

if (token) start();
else showLogin("");
