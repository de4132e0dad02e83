// The dashboard's one way to the service: the public /v1 API, with the key the user gave.
//
// Every page imports from here; nothing else calls fetch(). What a page can do, a script can
// do with the same requests (see the README's curl tour).
//
//   request(path, options)     -> parsed JSON (or null for 204); throws ApiError on non-2xx
//   send(path, options)        -> the Response itself (2xx), for callers that need it
//   requestBlob(path, options) -> {blob, headers}: images, archives, checkpoints
//   metricsPage(jobId, query)  -> one page of /metrics in its columns form (format=columns)
//   download(path, filename, options) -> saves a file that needs the Authorization header
//   followEvents(jobId, handlers, options) -> {close(), lastEventId()}: a job's events
//   readEventStream(body, onEvent) -> parses a text/event-stream body
//   showErrors(form, error, aliases) / clearErrors(form) -> API errors beside their fields
//   jobSchemaDefaults()        -> {"train.steps": {default: 50000, ...}} from /openapi.json
//   getKey() / setKey(key) / askForKey(reason) -> the key this tab holds
//   fmt.*, esc(text)           -> text helpers (format.js)
//   options: method, query (object; empty values left out), json, body, headers, signal
//
// The key: kept in sessionStorage (this tab, until it closes), sent only as
// "Authorization: Bearer <key>", never put in a URL or logged. A 401 asks for a key once
// (a small form); with SNGAN_AUTH=off the API answers without one and nothing is asked.

export { esc, fmt } from "./format.js"; // text helpers, re-exported: pages import them here

const KEY_STORAGE = "sngan.apiKey";

/** A non-2xx answer: the body of app/api/errors.py, {"error": {code, message, details}}. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** [{field, message}] for the errors that name a request field ("train.steps", "n"). */
  fieldErrors() {
    const d = this.details;
    if (Array.isArray(d)) {
      return d
        .filter((e) => e && typeof e.field === "string")
        .map((e) => ({ field: e.field, message: e.message || this.message }));
    }
    if (d && typeof d.field === "string") return [{ field: d.field, message: this.message }];
    return [];
  }
}

// --- the key ------------------------------------------------------------------------------

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  document.dispatchEvent(new CustomEvent("sngan:key"));
}

let asking = null; // one key form at a time, however many requests got a 401

/** Show the key form (once for concurrent callers); resolves when a key was entered. */
export function askForKey(reason) {
  if (!asking) {
    asking = keyForm(reason).finally(() => {
      asking = null;
    });
  }
  return asking;
}

function keyForm(reason) {
  return new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    dialog.className = "key-dialog";
    dialog.innerHTML = `
      <form method="dialog">
        <h2>API key</h2>
        <p class="muted">This service needs an API key (<code>sngan keys create --owner NAME</code>).
        It is kept in this browser tab only and sent as an Authorization header.</p>
        <p class="error" data-role="reason"></p>
        <label>Key <input name="key" type="password" autocomplete="off" required
          placeholder="sngan_…" spellcheck="false"></label>
        <div class="actions"><button class="primary" type="submit">Use this key</button></div>
      </form>`;
    dialog.querySelector('[data-role="reason"]').textContent = reason || "";
    dialog.addEventListener("cancel", (e) => e.preventDefault()); // no way around it but a key
    dialog.querySelector("form").addEventListener("submit", (e) => {
      const key = dialog.querySelector('input[name="key"]').value.trim();
      if (!key) {
        e.preventDefault();
        return;
      }
      setKey(key);
      dialog.close();
      dialog.remove();
      resolve(key);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// --- requests -----------------------------------------------------------------------------

function buildUrl(path, query) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  return url.pathname + url.search;
}

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = getKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): keep the status line
  }
  const e = body && body.error;
  return new ApiError(
    response.status,
    e ? e.code : "http_error",
    e ? e.message : `${response.status} ${response.statusText}`,
    e ? e.details : null,
  );
}

/**
 * fetch() with the key, asking for one on a 401 and trying again with it.
 * options: method, query (object), json (a body sent as JSON), body (FormData etc.),
 * headers, signal. Resolves to the Response (2xx only); throws ApiError otherwise.
 */
export async function send(path, options = {}) {
  const { method = "GET", query, json, body, headers, signal } = options;
  for (;;) {
    const h = authHeaders(headers);
    let payload = body;
    if (json !== undefined) {
      h.set("Content-Type", "application/json");
      payload = JSON.stringify(json);
    }
    // The default cache mode on purpose: the job and metrics routes answer with an ETag and
    // "Cache-Control: private, no-cache", so the browser itself sends If-None-Match and turns
    // a 304 into this 200 with the body it kept (checked in Chromium). "no-store" would not.
    const response = await fetch(buildUrl(path, query), { method, headers: h, body: payload, signal });
    if (response.ok) return response;
    const error = await errorFrom(response);
    if (response.status !== 401) throw error;
    if (getKey()) setKey(null); // the one we had was refused
    await askForKey(error.message);
  }
}

/** JSON of a /v1 call, or null for a 204. */
export async function request(path, options = {}) {
  const response = await send(path, options);
  if (response.status === 204) return null;
  return response.json();
}

/** One page of a job's metrics as columns: {steps, series: {name: [value or null per step]},
 * next_after_step}; null where a name has no point at that step. About a sixth of the bytes
 * of the points form, and nothing to build per point on either side. */
export async function metricsPage(jobId, query) {
  return request(`/v1/jobs/${encodeURIComponent(jobId)}/metrics`, {
    query: { ...query, format: "columns" },
  });
}

/** A binary answer (PNG, ZIP, NPY, a checkpoint) as a Blob, with its headers. */
export async function requestBlob(path, options = {}) {
  const response = await send(path, options);
  return { blob: await response.blob(), headers: response.headers };
}

/** Save a file that needs the Authorization header: fetched as a Blob, then an object URL. */
export async function download(path, filename, options = {}) {
  const { blob } = await requestBlob(path, options);
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// --- Server-Sent Events -------------------------------------------------------------------

/**
 * Follow GET /v1/jobs/{id}/events with fetch (EventSource cannot send the Authorization
 * header). Calls handlers[type](data, id) for status, progress, metrics, sample, checkpoint
 * and done events (data parsed from JSON), and handlers.error(err) on a failed attempt.
 * A dropped connection is opened again with Last-Event-ID, so no event is lost or repeated;
 * the stream ends for good after the server closes it following a done event.
 * options: lastEventId (start after this id), retryMs (first reconnect delay, doubles to 30 s).
 * Returns {close(), lastEventId()}.
 */
export function followEvents(jobId, handlers, options = {}) {
  let lastId = options.lastEventId ?? null;
  let closed = false;
  let controller = null;
  let delay = options.retryMs ?? 1000;

  const dispatch = (type, data, id) => {
    if (id !== null) lastId = id;
    const handler = handlers[type];
    if (!handler) return;
    let parsed = data;
    try {
      parsed = JSON.parse(data);
    } catch {
      // keep the text
    }
    handler(parsed, id);
  };

  async function once() {
    controller = new AbortController();
    const headers = lastId !== null ? { "Last-Event-ID": lastId } : {};
    const response = await send(`/v1/jobs/${encodeURIComponent(jobId)}/events`, {
      headers: { Accept: "text/event-stream", ...headers },
      signal: controller.signal,
    });
    let sawDone = false;
    await readEventStream(response.body, (type, data, id) => {
      if (type === "done") sawDone = true;
      delay = options.retryMs ?? 1000; // events flow: the next drop retries quickly again
      dispatch(type, data, id);
    });
    return sawDone;
  }

  (async () => {
    while (!closed) {
      try {
        const ended = await once();
        if (ended) return; // the server closes the stream after the done event
      } catch (err) {
        if (closed || err.name === "AbortError") return;
        if (err instanceof ApiError && err.status === 404) {
          handlers.error?.(err);
          return; // the job is gone (deleted, or not this key's)
        }
        handlers.error?.(err);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30_000);
    }
  })();

  return {
    close() {
      closed = true;
      controller?.abort();
    },
    lastEventId: () => lastId,
  };
}

/** Parse a text/event-stream body (any of \r\n, \n, \r line ends), calling
 * onEvent(type, data, id) per event; comments (": ping") are skipped. */
export async function readEventStream(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // a lone \r at the end may be half of \r\n: keep it for the next chunk
    const lines = buffer.split(/\r\n|\n|\r(?!$)/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) onEvent(type || "message", data.join("\n"), id);
        type = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") type = val;
      else if (field === "data") data.push(val);
      else if (field === "id") id = val;
    }
  }
}

// --- errors beside their fields -----------------------------------------------------------

/** Remove the messages showErrors() put in `form`. */
export function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((el) => el.remove());
  form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  const general = form.querySelector('[data-role="form-error"]');
  if (general) general.textContent = "";
}

/**
 * Show an API error in `form`: each {field, message} of a 422 (or a 413's field) beside the
 * input whose name or data-field is that path ("train.steps"); the rest in the form's
 * [data-role="form-error"] element. `aliases` maps an API field to an input name when they
 * differ (e.g. {"dataset": "dataset.choice"}). Returns the fields it could place.
 */
export function showErrors(form, error, aliases = {}) {
  clearErrors(form);
  const placed = [];
  const rest = [];
  const fieldErrors = error instanceof ApiError ? error.fieldErrors() : [];
  for (const { field, message } of fieldErrors) {
    const name = aliases[field] ?? field;
    const input = findField(form, name);
    if (!input) {
      rest.push(`${field}: ${message}`);
      continue;
    }
    input.classList.add("invalid");
    const note = document.createElement("div");
    note.className = "field-error";
    note.dataset.field = field;
    note.textContent = message;
    // inside the field's label, under the input, so a form's layout does not shift
    const label = input.closest("label");
    if (label) label.append(note);
    else input.after(note);
    placed.push(field);
  }
  if (!fieldErrors.length) rest.push(error.message || String(error));
  const general = form.querySelector('[data-role="form-error"]');
  if (general && rest.length) general.textContent = rest.join("; ");
  return placed;
}

function findField(form, name) {
  // the API's paths are "train.steps", "dataset", "betas[0]": try the path, then its parents
  for (let path = name; path; path = path.replace(/(\.[^.]*|\[\d+\])$/, "")) {
    const el = form.querySelector(`[name="${CSS.escape(path)}"], [data-field="${CSS.escape(path)}"]`);
    if (el) return el;
    if (!/[.[]/.test(path)) break;
  }
  return null;
}

// --- the one spec -------------------------------------------------------------------------

let openapi = null;

/** /openapi.json, fetched once per page. */
export async function openApi() {
  if (!openapi) openapi = fetch("/openapi.json").then((r) => r.json());
  return openapi;
}

/**
 * The defaults and choices of POST /v1/jobs, from /openapi.json's JobCreate schema, as a map
 * from field path to {default, enum, nullable}: {"train.steps": {default: 50000}, ...}.
 */
export async function jobSchemaDefaults() {
  const spec = await openApi();
  const schemas = spec.components.schemas;
  const resolve = (s) => (s && s.$ref ? schemas[s.$ref.split("/").pop()] : s);
  const out = {};
  const walk = (schema, prefix) => {
    for (const [name, prop] of Object.entries(resolve(schema).properties || {})) {
      const path = prefix ? `${prefix}.${name}` : name;
      const variants = (prop.anyOf || [prop]).map(resolve);
      const object = variants.find((v) => v && v.properties);
      if (object) {
        walk(object, path);
        continue;
      }
      const concrete = variants.find((v) => v && v.type !== "null") || {};
      out[path] = {
        default: prop.default,
        enum: concrete.enum || null,
        nullable: variants.some((v) => v && v.type === "null"),
        description: prop.description || concrete.description || "",
      };
    }
  };
  walk(schemas.JobCreate, "");
  return out;
}
