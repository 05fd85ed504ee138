// The status page's script, served as /assets/app.js (the CSP allows scripts from the page's own
// origin only). Vanilla, no build step. Every piece of data reaches the DOM through textContent or
// attributes set one by one, never as HTML, so a reason or message such as "<img onerror=…>"
// shows as the text it is.
"use strict";

(() => {
  // Addresses are relative to the page, so a path prefix (an API Gateway stage) just works.
  const API = { jobs: "v1/jobs", report: "v1/report" };
  // The server shortens a longer wait to its own cap (20 s on one machine, 10 s by default on AWS).
  const WAIT_SECS = 20;
  // Browsers open about six connections per host over HTTP/1.1; leave room for submits and the
  // report instead of holding all of them in long-polls.
  const MAX_WATCHERS = 4;
  const TOKEN_KEY = "ackflow.token";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  // The seeded catalog of the `order` example (crates/processors/src/order/catalog.rs). The API
  // has no catalog route; an unknown SKU would be refused with a 422 naming the known ones.
  const CATALOG = [
    ["mug-blue", "Blue Mug", 1250],
    ["mug-red", "Red Mug", 1250],
    ["tea-earl-grey", "Earl Grey Tea, 100 g", 690],
    ["tea-sencha", "Sencha Tea, 100 g", 890],
    ["teapot-cast-iron", "Cast Iron Teapot", 4900],
    ["kettle-gooseneck", "Gooseneck Kettle", 7900],
    ["coaster-cork", "Cork Coaster", 300],
    ["poster-limited", "Limited Edition Poster", 2500],
  ];

  const $ = (id) => document.getElementById(id);

  /** Makes an element with a class and text (text only: never parsed as HTML). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // ---- token ---------------------------------------------------------------------------------

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return ""; // storage disabled: work without a token
    }
  }

  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: the token cannot be kept; say so below
    }
  }

  // ---- calling the API -------------------------------------------------------------------------

  /** An answer that is not a success, worded for people. */
  class ApiError extends Error {
    constructor(status, title, detail, errors, retryAfter) {
      super(`${title}: ${detail}`);
      this.status = status;
      this.title = title;
      this.detail = detail;
      this.errors = errors || [];
      this.retryAfter = retryAfter;
    }
  }

  // What to do next when API Gateway (or a proxy) answers with its own `{"message": ...}` or
  // with no JSON at all: those bodies carry no detail of ours.
  const NEXT_STEP = {
    401: "Paste a valid token under “Access token” and try again.",
    403: "Your token does not allow this; check it under “Access token”.",
    413: "The request is too large; send less.",
    429: "Too many requests right now; wait a moment and try again.",
    500: "Something went wrong on the server; try again shortly.",
    502: "The service did not answer properly; try again shortly.",
    503: "The service is unavailable right now; try again shortly.",
    504: "The service took too long to answer; try again shortly.",
  };

  function retryAfterSecs(response) {
    const raw = response.headers.get("Retry-After");
    const secs = raw === null ? NaN : Number(raw);
    return Number.isFinite(secs) && secs >= 0 ? secs : null;
  }

  async function problemOf(response) {
    const status = response.status;
    const fallback = NEXT_STEP[status] || (status >= 500 ? NEXT_STEP[500] : "The request was not accepted.");
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const retry = retryAfterSecs(response);
    if (body && typeof body === "object") {
      if (typeof body.title === "string" || typeof body.detail === "string") {
        const errors = Array.isArray(body.errors)
          ? body.errors.filter((e) => e && typeof e === "object").map((e) => `${e.pointer || ""} ${e.detail || ""}`.trim())
          : [];
        return new ApiError(status, body.title || `Error ${status}`, body.detail || fallback, errors, retry);
      }
      if (typeof body.message === "string") {
        // API Gateway's own errors: {"message": "Unauthorized"}, "Too Many Requests", ...
        return new ApiError(status, body.message, fallback, [], retry);
      }
    }
    return new ApiError(status, `Error ${status}${response.statusText ? " " + response.statusText : ""}`, fallback, [], retry);
  }

  /**
   * Calls the API. Resolves to {status, etag, body} for 2xx and 304; rejects with an ApiError
   * otherwise, or with a network error.
   */
  async function call(path, { method = "GET", body, etag, signal } = {}) {
    const headers = { Accept: "application/json, application/problem+json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    // A conditional request set by the page itself: the browser hands the 304 through.
    if (etag) headers["If-None-Match"] = etag;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      signal,
    });
    if (response.status === 401) authNeeded();
    if (!response.ok && response.status !== 304) throw await problemOf(response);
    const json = response.status === 304 || response.status === 204 ? null : await response.json();
    return { status: response.status, etag: response.headers.get("ETag"), retryAfter: retryAfterSecs(response), body: json };
  }

  /** Renders an error (an ApiError or a network failure) into `target`. */
  function showProblem(target, error) {
    target.replaceChildren();
    const box = el("div", "problem");
    if (error instanceof ApiError) {
      box.append(el("p", "problem-title", error.title), el("p", "problem-detail", error.detail));
      if (error.errors.length) {
        const list = el("ul");
        for (const e of error.errors) list.append(el("li", null, e));
        box.append(list);
      }
    } else {
      box.append(
        el("p", "problem-title", "The server could not be reached"),
        el("p", "problem-detail", "Check your connection; the page keeps trying."),
      );
    }
    target.append(box);
  }

  function announce(text) {
    $("announce").textContent = text;
  }

  function authNeeded() {
    const details = $("token-details");
    if (!details.open) {
      details.open = true;
      $("token-status").textContent = token()
        ? "The server did not accept this token. Paste another one."
        : "This server needs a token. Paste yours to see and submit jobs.";
      $("token").focus();
    }
  }

  // ---- jobs ------------------------------------------------------------------------------------

  /** id → {job, etag, node, watching, lateTimer, announced} */
  const jobs = new Map();
  const watchQueue = [];
  let watchers = 0;
  let nextCursor = null;

  const shortId = (id) => String(id).slice(0, 8);
  const jobPath = (id) => `${API.jobs}/${encodeURIComponent(id)}`;
  const time = (iso) => {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString();
  };
  const kindName = (kind) => (kind === "demo" ? "Demo job" : kind === "order" ? "Order" : `Job of kind ${kind}`);

  function cardFor(id) {
    const entry = jobs.get(id);
    if (entry.node) return entry.node;
    const li = el("li", "job");
    li.dataset.id = id;
    const head = el("div", "job-head");
    const title = el("h3");
    const state = el("span", "state");
    const meta = el("span", "job-meta");
    head.append(title, state, meta);
    const bar = el("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.append(el("div", "bar-fill"));
    const message = el("p", "job-message");
    const late = el("p", "late", "Taking longer than expected.");
    late.hidden = true;
    const problem = el("div", "job-problem");
    const result = el("div", "job-result");
    const buttons = el("div", "buttons");
    const cancel = el("button", "secondary", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => cancelJob(id, cancel));
    buttons.append(cancel);
    li.append(head, bar, message, late, problem, result, buttons);
    entry.node = li;
    entry.parts = { title, state, meta, bar, fill: bar.firstChild, message, late, problem, result, cancel };
    return li;
  }

  function isLate(job) {
    if (TERMINAL.has(job.state) || !job.estimated_completion) return false;
    const due = Date.parse(job.estimated_completion);
    return Number.isFinite(due) && Date.now() > due;
  }

  function render(id) {
    const entry = jobs.get(id);
    const job = entry.job;
    cardFor(id);
    const p = entry.parts;
    entry.node.dataset.state = job.state;
    const label = `${kindName(job.kind)} ${shortId(job.id)}`;
    p.title.textContent = label;
    p.state.textContent = job.state;
    p.state.className = `state state-${job.state}`;
    entry.node.dataset.attempts = String(job.attempts);
    const meta = [`submitted ${time(job.submitted_at)}`];
    const retrying = job.state === "queued" && job.attempts > 0;
    if (job.attempts > 1 || retrying) meta.push(`attempt ${job.attempts} of ${job.max_attempts}`);
    p.meta.textContent = meta.join(" · ");

    const percent = Math.max(0, Math.min(100, Number(job.progress && job.progress.percent) || 0));
    const message = (job.progress && job.progress.message) || "";
    p.bar.setAttribute("aria-valuenow", String(percent));
    p.bar.setAttribute("aria-valuetext", message ? `${percent} %: ${message}` : `${percent} %`);
    p.bar.setAttribute("aria-label", `Progress of ${label}`);
    p.fill.style.width = `${percent}%`;
    // The latest history note says what happened in words for people ("… will be retried").
    const history = Array.isArray(job.history) ? job.history : [];
    const note = history.length ? history[history.length - 1].note : "";
    p.message.textContent = retrying ? note || "Waiting to be retried." : message || (job.state === "queued" ? "Waiting for a worker." : note);

    const late = isLate(job);
    p.late.hidden = !late;
    scheduleLate(id);

    p.problem.replaceChildren();
    if (job.error) {
      const box = el("div", "problem");
      box.append(el("p", "problem-title", job.error.title || "Failed"), el("p", "problem-detail", job.error.detail || ""));
      p.problem.append(box);
    }
    p.result.replaceChildren();
    if (job.state === "succeeded" && job.result !== undefined) {
      const details = el("details");
      details.append(el("summary", null, "Result"), el("pre", null, JSON.stringify(job.result, null, 2)));
      p.result.append(details);
    }
    const cancellable = Boolean(job.links && job.links.cancel);
    p.cancel.hidden = !cancellable;
    p.cancel.setAttribute("aria-label", `Cancel ${label}`);
  }

  /** Re-renders when the estimate passes, so a late job says so without polling for it. */
  function scheduleLate(id) {
    const entry = jobs.get(id);
    clearTimeout(entry.lateTimer);
    const job = entry.job;
    if (TERMINAL.has(job.state) || !job.estimated_completion || isLate(job)) return;
    const wait = Date.parse(job.estimated_completion) - Date.now() + 50;
    if (Number.isFinite(wait) && wait < 2 ** 31 - 1) entry.lateTimer = setTimeout(() => render(id), Math.max(0, wait));
  }

  /** Stores a fresh view of a job, renders it, and announces a change of state. */
  function update(job, etag) {
    let entry = jobs.get(job.id);
    const before = entry && entry.job ? entry.job.state : null;
    if (!entry) {
      entry = { job: null, etag: null, node: null, watching: false };
      jobs.set(job.id, entry);
    }
    // A listing carries no result and no estimate; keep the ones a status read brought while
    // the job has not moved on.
    const kept = entry.job && entry.job.state === job.state && entry.job.updated_at === job.updated_at ? entry.job : {};
    entry.job = { result: kept.result, estimated_completion: kept.estimated_completion, ...job };
    if (etag) entry.etag = etag;
    render(job.id);
    if (before && before !== job.state) {
      let sentence = `${kindName(job.kind)} ${shortId(job.id)} is ${job.state}.`;
      if (job.state === "failed" && job.error) sentence += ` ${job.error.title}: ${job.error.detail}`;
      announce(sentence);
      refreshReportSoon();
    }
    if (!TERMINAL.has(job.state)) watch(job.id);
  }

  function watch(id) {
    const entry = jobs.get(id);
    if (entry.watching) return;
    entry.watching = true;
    watchQueue.push(id);
    pumpWatchers();
  }

  function pumpWatchers() {
    while (watchers < MAX_WATCHERS && watchQueue.length) {
      const id = watchQueue.shift();
      watchers += 1;
      follow(id).finally(() => {
        watchers -= 1;
        jobs.get(id).watching = false;
        pumpWatchers();
      });
    }
  }

  const pause = (secs) => new Promise((resolve) => setTimeout(resolve, secs * 1000));

  /**
   * Long-polls one job until it ends: each request returns as soon as the job changes (or after
   * the server's wait cap with a 304), so there is no timer driving the page. Failures back off.
   */
  async function follow(id) {
    let failures = 0;
    for (;;) {
      const entry = jobs.get(id);
      // The first read has no ETag so it answers at once with the estimate and the result.
      const fresh = entry.fresh;
      try {
        const answer = await call(`${jobPath(id)}?wait=${WAIT_SECS}`, { etag: fresh ? entry.etag : null });
        failures = 0;
        entry.fresh = true;
        if (answer.status === 200) {
          entry.etag = answer.etag;
          update(answer.body, answer.etag);
        }
        if (TERMINAL.has(entry.job.state)) return;
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          entry.parts.message.textContent = "This job is no longer there (it may have expired).";
          return;
        }
        if (error instanceof ApiError && error.status === 401) return; // waits for a token
        failures += 1;
        const backoff = Math.min(30, 2 ** Math.min(failures, 5));
        await pause(error instanceof ApiError && error.retryAfter !== null ? Math.max(1, error.retryAfter) : backoff);
      }
    }
  }

  async function cancelJob(id, button) {
    button.disabled = true;
    const entry = jobs.get(id);
    try {
      const answer = await call(jobPath(id), { method: "DELETE" });
      update(answer.body, answer.etag);
    } catch (error) {
      showProblem(entry.parts.problem, error);
    } finally {
      button.disabled = false;
    }
  }

  function placeCards(ids, atTop) {
    const list = $("jobs");
    const nodes = ids.map((id) => cardFor(id));
    if (atTop) list.prepend(...nodes);
    else list.append(...nodes);
  }

  async function loadJobs(cursor) {
    const status = $("jobs-status");
    try {
      const query = cursor ? `?limit=20&cursor=${encodeURIComponent(cursor)}` : "?limit=20";
      const answer = await call(`${API.jobs}${query}`);
      if (!cursor) {
        $("jobs").replaceChildren();
      }
      const ids = [];
      for (const job of answer.body.jobs) {
        update(job, null);
        ids.push(job.id);
      }
      placeCards(ids, false);
      nextCursor = answer.body.next;
      $("jobs-more").hidden = !nextCursor;
      status.replaceChildren();
      if (!cursor && ids.length === 0) status.textContent = "No jobs yet. Submit one above.";
    } catch (error) {
      showProblem(status, error);
    }
  }

  // ---- submitting ------------------------------------------------------------------------------

  async function submit(form, statusNode, body) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    statusNode.replaceChildren();
    try {
      const answer = await call(API.jobs, { method: "POST", body });
      const job = answer.body;
      update(job, answer.etag);
      placeCards([job.id], true);
      $("jobs-status").replaceChildren();
      statusNode.textContent = `Accepted: ${kindName(job.kind)} ${shortId(job.id)}.`;
      refreshReportSoon();
    } catch (error) {
      showProblem(statusNode, error);
    } finally {
      button.disabled = false;
    }
  }

  function wholeNumber(input) {
    const n = Number(input.value);
    return input.value.trim() !== "" && Number.isInteger(n) && n >= 0 ? n : null;
  }

  function submitDemo(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const status = $("demo-status");
    const steps = wholeNumber($("demo-steps"));
    const stepMs = wholeNumber($("demo-step-ms"));
    if (steps === null || stepMs === null) {
      showProblem(status, new ApiError(0, "Check the numbers", "Steps and milliseconds per step are whole numbers, 0 or more."));
      return;
    }
    const failAttempts = wholeNumber($("demo-fail"));
    if (failAttempts === null) {
      showProblem(status, new ApiError(0, "Check the numbers", "The attempts to fail are a whole number, 0 or more."));
      return;
    }
    const input = { steps, step_ms: stepMs };
    if (failAttempts > 0) input.fail_attempts = failAttempts;
    const reason = $("demo-reject").value;
    if (reason.trim() !== "") input.reject = reason;
    submit(form, status, { kind: "demo", input });
  }

  function submitOrder(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const status = $("order-status");
    const items = [];
    for (const input of form.querySelectorAll("input[data-sku]")) {
      const n = wholeNumber(input);
      if (n === null) {
        showProblem(status, new ApiError(0, "Check the quantities", "Quantities are whole numbers, 0 or more."));
        input.focus();
        return;
      }
      if (n > 0) items.push({ sku: input.dataset.sku, quantity: n });
    }
    if (items.length === 0) {
      showProblem(status, new ApiError(0, "Nothing to order", "Enter a quantity for at least one item."));
      return;
    }
    submit(form, status, { kind: "order", input: { customer: $("order-customer").value, items } });
  }

  function buildCatalog() {
    const body = $("order-items").tBodies[0];
    const money = new Intl.NumberFormat(undefined, { style: "currency", currency: "EUR" });
    for (const [sku, name, cents] of CATALOG) {
      const row = el("tr");
      const id = `qty-${sku}`;
      const label = el("label", null, name);
      label.htmlFor = id;
      const input = el("input");
      input.type = "number";
      input.id = id;
      input.min = "0";
      input.max = "1000";
      input.value = "0";
      input.inputMode = "numeric";
      input.dataset.sku = sku;
      const nameCell = el("th");
      nameCell.scope = "row";
      nameCell.append(label);
      const qtyCell = el("td");
      qtyCell.append(input);
      row.append(nameCell, el("td", null, money.format(cents / 100)), qtyCell);
      body.append(row);
    }
  }

  // ---- report ----------------------------------------------------------------------------------

  let reportTimer = null;

  /** Coalesces the report refreshes that a burst of job changes asks for. */
  function refreshReportSoon() {
    clearTimeout(reportTimer);
    reportTimer = setTimeout(loadReport, 500);
  }

  function duration(ms) {
    if (ms < 1000) return `${ms} ms`;
    if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.round(ms / 60000)} min`;
  }

  async function loadReport() {
    const target = $("report");
    const status = $("report-status");
    try {
      const r = (await call(API.report)).body;
      const dl = el("dl", "figures");
      const row = (term, value) => dl.append(el("dt", null, term), el("dd", null, value));
      const c = r.counts;
      row("Queued", c.queued);
      row("Running", c.running);
      const hours = r.window_secs % 3600 === 0 ? `${r.window_secs / 3600} h` : `${r.window_secs} s`;
      row(`Succeeded (last ${hours})`, c.succeeded);
      row(`Failed (last ${hours})`, c.failed);
      row(`Cancelled (last ${hours})`, c.cancelled);
      row("Accepted", r.accepted);
      row("Retried", r.retried);
      row("Time to finish", r.latency ? `median ${duration(r.latency.p50_ms)}, 95 % within ${duration(r.latency.p95_ms)}` : "no finished jobs yet");
      row("Oldest open job", r.oldest_open ? `${shortId(r.oldest_open.id)} (${r.oldest_open.state}), ${r.oldest_open.age_secs} s old` : "none");
      row("Queue", r.queue ? `${r.queue.waiting} waiting, ${r.queue.in_flight} in flight, ${r.queue.dead} dead-lettered` : "unknown");
      target.replaceChildren(dl);
      if (r.top_failures.length) {
        const heading = el("h3", null, "Top failure reasons");
        const list = el("ul", "failures");
        for (const f of r.top_failures) list.append(el("li", null, `${f.type}: ${f.count}`));
        target.append(heading, list);
      }
      status.replaceChildren();
    } catch (error) {
      showProblem(status, error);
    }
  }

  // ---- start -----------------------------------------------------------------------------------

  function start() {
    buildCatalog();
    $("demo-form").addEventListener("submit", submitDemo);
    $("order-form").addEventListener("submit", submitOrder);
    $("report-refresh").addEventListener("click", loadReport);
    $("jobs-more").addEventListener("click", () => nextCursor && loadJobs(nextCursor));
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      setToken(value);
      $("token").value = "";
      $("token-status").textContent = value ? (token() ? "Token saved for this tab." : "This browser does not keep the token.") : "No token.";
      loadJobs(null);
      loadReport();
    });
    $("token-forget").addEventListener("click", () => {
      setToken("");
      $("token-status").textContent = "Token forgotten.";
    });
    if (token()) $("token-status").textContent = "A token is set for this tab.";
    loadJobs(null);
    loadReport();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
