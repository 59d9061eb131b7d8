// The easyjobs dashboard: plain DOM code, no framework, no build step.
//
// Invariants:
// - The token lives in sessionStorage only and travels only in the Authorization header.
// - Data from the API is only ever put in the page with textContent (never innerHTML).
// - Nothing polls: the page loads a snapshot, then follows /events; a job event updates its row
//   in place, a worker event refreshes the workers panel. When the stream ends the page
//   reloads a snapshot and reconnects with backoff.

const TOKEN_KEY = "easyjobs.token";
const ROOT = new URL(".", location.href); // the API lives beside /dashboard
const MAX_JOBS = 200;
const STATUSES = ["waiting", "queued", "running", "retrying", "succeeded", "failed", "cancelled"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
let session = 0; // bumped at each sign-in and sign-out: an older follow() loop stops
let stream = null; // AbortController of the running /events request
const jobs = new Map(); // job id -> {job, row}
let tasks = []; // [{queue, task}] from /queues, for the run form
let selected = null; // id of the job shown in the detail panel

class Unauthorized extends Error {}

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

function json(value) {
  return JSON.stringify(value, null, 2);
}

function time(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function duration(job) {
  if (!job.started_at || !job.finished_at) return job.status === "running" ? "running" : "";
  const s = job.finished_at - job.started_at;
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`;
}

// Job ids start with a clock reading, so their tails tell them apart.
function shortId(id) {
  return `…${id.slice(-8)}`;
}

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
    throw new Unauthorized();
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok && response.status !== 202) {
    const message = data.error ? data.error.message : `HTTP ${response.status}`;
    throw new Error(message);
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
  showLogin(message);
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const given = $("token").value.trim();
  if (!given) return;
  const response = await fetch(new URL("workers", ROOT), {
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

// ------------------------------------------------------------------ workers

const refreshWorkers = coalesced(async () => {
  const { workers } = await api("workers");
  const rows = workers.map((w) => {
    const load = w.capacity ? `${w.in_flight} / ${w.capacity}` : `${w.in_flight}`;
    const meter = w.capacity ? el("meter", { min: 0, max: w.capacity, value: w.in_flight }) : null;
    const button = el("button", {
      type: "button", className: "small", textContent: w.paused ? "Resume" : "Pause",
      onclick: () => toggle(w.paused ? "resume" : "pause", w.id),
    });
    return el("tr", { dataset: { workerId: w.id, paused: String(w.paused) } },
      el("td", { title: w.id }, w.name),
      el("td", {}, w.queues.join(", ")),
      el("td", { className: "load" }, meter, ` ${load}`), // no capacity: the manager's own
      el("td", {}, time(w.connected_at)),
      el("td", { className: w.paused ? "state paused" : "state" }, w.paused ? "paused" : "active"),
      el("td", {}, button));
  });
  $("workers").replaceChildren(...rows);
  $("no-workers").hidden = rows.length > 0;
});

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
    ...STATUSES.map((s) => el("th", { className: `count ${s}` }, s))));
  $("queues").replaceChildren(...names.map((name) => el("tr", { dataset: { queue: name } },
    el("td", {}, name),
    ...STATUSES.map((s) => {
      const n = queues[name].counts[s] || 0;
      return el("td", { className: n && s === "failed" ? "count failed-count" : "count" }, String(n));
    }))));
  const found = names.flatMap((q) => queues[q].tasks.map((t) => ({ queue: q, task: t })));
  const key = (t) => `${t.queue}/${t.task.name}`;
  if (found.map(key).join() !== tasks.map(key).join()) {
    const previous = $("run-task").value;
    tasks = found;
    $("run-task").replaceChildren(...tasks.map((t, i) =>
      el("option", { value: String(i), textContent: `${t.queue} / ${t.task.name}` })));
    const keep = tasks.findIndex((t) => key(t) === previous);
    if (keep >= 0) $("run-task").value = String(keep);
    renderFields();
  }
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
    const body = formBody();
    const path = `${encodeURIComponent(entry.queue)}/task/${encodeURIComponent(entry.task.name)}`;
    const created = await api(path, { method: "POST", body });
    $("run-created").append("Created job ", jobLink(created.job_id));
    showJob(created.job_id);
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("run-error").textContent = err.message;
  }
});

// ------------------------------------------------------------------ jobs

// How far along a job is; a snapshot read from the store may lag the pushed events, so a
// record only replaces one it is not behind. Within an attempt: running, retrying, requeued.
const RANK = { waiting: 0, running: 1, retrying: 2, queued: 3 };
function progress(job) {
  return job.attempts * 10 + (TERMINAL.has(job.status) ? 9 : RANK[job.status]);
}

function upsert(job) {
  const known = jobs.get(job.id);
  if (known && progress(job) < progress(known.job)) return;
  const row = jobRow(job);
  if (known) {
    known.row.replaceWith(row);
    known.job = job;
    known.row = row;
  } else {
    jobs.set(job.id, { job, row });
    placeRow(row, job);
    trim();
  }
  $("no-jobs").hidden = true;
}

function placeRow(row, job) {
  // Newest first: find the first row created before this job.
  for (const other of $("jobs").children) {
    const entry = jobs.get(other.dataset.jobId);
    if (entry && entry.job.created_at < job.created_at) {
      other.before(row);
      return;
    }
  }
  $("jobs").append(row);
}

function trim() {
  while (jobs.size > MAX_JOBS) {
    const last = $("jobs").lastElementChild;
    jobs.delete(last.dataset.jobId);
    last.remove();
  }
}

function jobRow(job) {
  const row = el("tr", {
    className: `job ${job.status}${job.id === selected ? " selected" : ""}`,
    dataset: { jobId: job.id, status: job.status },
    onclick: () => showJob(job.id),
  },
  el("td", {}, el("code", { title: job.id }, shortId(job.id))),
  el("td", {}, `${job.queue} / ${job.task}`),
  el("td", {}, el("span", { className: `badge ${job.status}` }, job.status),
    job.error_type && job.status !== "succeeded"
      ? el("span", { className: "error-type" }, ` ${job.error_type}`) : null),
  el("td", { className: "num" }, String(job.attempts)),
  el("td", { className: "num" }, duration(job)),
  el("td", {}, job.worker || ""),
  el("td", {}, time(job.created_at)));
  return row;
}

function jobLink(id) {
  return el("button", {
    type: "button", className: "link", dataset: { jobLink: id }, title: id,
    textContent: shortId(id), onclick: (event) => { event.stopPropagation(); showJob(id); },
  });
}

async function loadJobs() {
  const { jobs: list } = await api(`jobs?limit=${MAX_JOBS}`);
  for (const job of list.reverse()) upsert(job); // oldest first keeps placeRow cheap
}

// ------------------------------------------------------------------ job detail

let detailRequest = 0; // answers can come back out of order: only the latest is shown

async function showJob(id) {
  selected = id;
  for (const row of $("jobs").children) row.classList.toggle("selected", row.dataset.jobId === id);
  $("detail").hidden = false;
  const request = ++detailRequest;
  try {
    const job = await api(`jobs/${encodeURIComponent(id)}`);
    if (request !== detailRequest) return;
    renderDetail(job);
    $("detail-problem").textContent = "";
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("detail-problem").textContent = err.message;
  }
}

function renderDetail(job) {
  if (job.id !== selected) return; // another job was opened meanwhile
  $("detail").dataset.status = job.status;
  $("detail-id").textContent = job.id;
  const fields = [
    ["Task", `${job.queue} / ${job.task}`],
    ["Status", el("span", { className: `badge ${job.status}` }, job.status)],
    ["Attempts", String(job.attempts)],
    ["Worker", job.worker || "—"],
    ["Created", time(job.created_at)],
    ["Started", time(job.started_at) || "—"],
    ["Finished", time(job.finished_at) || "—"],
    ["Duration", duration(job) || "—"],
  ];
  if (job.next_attempt_at) fields.push(["Next attempt", time(job.next_attempt_at)]);
  const links = [
    ["Parent", job.parent ? [job.parent] : []],
    ["Depends on", job.dependencies || []],
    ["On failure job", job.on_failure_job ? [job.on_failure_job] : []],
    ["Handles failure of", job.handler_for ? [job.handler_for] : []],
  ];
  for (const [name, ids] of links) {
    if (ids.length) fields.push([name, el("span", { className: "links" }, ...ids.map(jobLink))]);
  }
  $("detail-fields").replaceChildren(...fields.flatMap(([name, value]) =>
    [el("dt", {}, name), el("dd", {}, value)]));
  $("detail-args").textContent = json({ args: job.args, kwargs: job.kwargs });
  $("detail-result-box").hidden = job.status !== "succeeded";
  $("detail-result").textContent = job.status === "succeeded" ? json(job.result) : "";
  const error = job.error;
  $("detail-error-box").hidden = !error;
  $("detail-error").textContent = error ? `${error.type}: ${error.message}` : "";
  $("detail-traceback").textContent = error ? error.traceback || "" : "";
  $("detail-cancel").hidden = TERMINAL.has(job.status);
}

$("detail-close").addEventListener("click", () => {
  selected = null;
  $("detail").hidden = true;
  for (const row of $("jobs").querySelectorAll(".selected")) row.classList.remove("selected");
});

$("detail-cancel").addEventListener("click", async () => {
  if (!selected) return;
  try {
    renderDetail(await api(`jobs/${encodeURIComponent(selected)}/cancel`, { method: "POST" }));
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("detail-problem").textContent = err.message;
  }
});

// ------------------------------------------------------------------ live updates

function handle(event) {
  if (event.kind === "job") {
    upsert(event.job);
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
      await Promise.all([refreshWorkers(), refreshQueues(), loadJobs()]);
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
  jobs.clear();
  $("jobs").replaceChildren();
  session += 1;
  follow(session);
}

if (token) start();
else showLogin("");
