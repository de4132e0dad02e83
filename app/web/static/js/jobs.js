// The jobs page (/): this key's jobs, newest first, refreshed every few seconds, and the
// new-job form. Everything comes from /v1 (GET /v1/jobs, POST /v1/jobs, POST /v1/datasets).

import { ApiError, clearErrors, esc, fmt, jobSchemaDefaults, request, send, showErrors } from "./api.js";
import { initHeader, metricsText, progressHtml, setAuthImage, statusBadge } from "./ui.js";

const POLL_MS = 3000;
const PAGE = 50;
const BUILTIN = ["synthetic", "cifar10", "stl10"];
const ACTIVE = new Set(["queued", "running", "canceling"]);

const table = document.querySelector("#jobs tbody");
const filter = document.querySelector("#status-filter");
const moreButton = document.querySelector("#more");
const form = document.querySelector("#new-job");

let shown = PAGE; // how many jobs the list holds (grows with "Load more")
let nextCursor = null;
const thumbs = new Map(); // job id -> newest grid step shown in its thumbnail

// --- the list -----------------------------------------------------------------------------

let latestLoad = 0; // a filter change while a poll is in flight: only the newest renders

async function loadJobs() {
  const load = ++latestLoad;
  // one request for everything shown: up to 200 per page, then follow the cursor
  const jobs = [];
  let cursor = null;
  do {
    const page = await request("/v1/jobs", {
      query: { status: filter.value, limit: Math.min(200, shown - jobs.length), cursor },
    });
    jobs.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && jobs.length < shown);
  if (load !== latestLoad) return;
  nextCursor = cursor;
  render(jobs);
}

function render(jobs) {
  const rows = new Map([...table.querySelectorAll("tr[data-job]")].map((tr) => [tr.dataset.job, tr]));
  let previous = null;
  for (const job of jobs) {
    let tr = rows.get(job.id);
    rows.delete(job.id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.job = job.id;
      tr.innerHTML = `<td class="thumb"><div class="none"></div></td><td></td><td></td><td></td><td></td>`;
    }
    const cells = tr.children;
    cells[1].innerHTML = `<a class="job-name" href="/jobs/${esc(job.id)}">${esc(job.name)}</a>
      <div class="muted mono nowrap">${esc(job.id.slice(0, 8))} · ${esc(fmt.time(job.created_at))}</div>`;
    cells[2].innerHTML = statusBadge(job.status);
    cells[3].innerHTML = progressHtml(job.progress, job.status);
    const losses = ["loss_d", "loss_g"].map((n) => metricsText(job.latest_metrics, [n])).filter(Boolean);
    cells[4].innerHTML = `<div class="mono nowrap">${losses.map(esc).join("<br>") || "—"}</div>`;
    // keep the order of the answer (newest first), moving rows only when needed
    const want = previous ? previous.nextSibling : table.firstChild;
    if (want !== tr) table.insertBefore(tr, want);
    previous = tr;
    refreshThumb(job, cells[0]).catch(() => {});
  }
  for (const tr of rows.values()) tr.remove();
  document.querySelector("#jobs-empty").hidden = jobs.length > 0;
  moreButton.hidden = !nextCursor;
}

async function refreshThumb(job, cell) {
  const known = thumbs.get(job.id);
  // a finished job's newest grid does not change; an active one's is looked up each round
  if (known !== undefined && !ACTIVE.has(job.status)) return;
  const { data } = await request(`/v1/jobs/${job.id}/training-samples`);
  const newest = data[data.length - 1];
  if (!newest) {
    thumbs.set(job.id, null);
    return;
  }
  if (known === newest.step) return;
  thumbs.set(job.id, newest.step);
  let img = cell.querySelector("img");
  if (!img) {
    img = document.createElement("img");
    img.alt = `step ${newest.step}`;
    cell.replaceChildren(img);
  }
  img.title = `training grid at step ${newest.step}`;
  await setAuthImage(img, newest.url);
}

async function poll() {
  try {
    await loadJobs();
  } catch (err) {
    console.warn("refreshing the job list failed:", err.message);
  }
  setTimeout(poll, POLL_MS);
}

filter.addEventListener("change", () => {
  shown = PAGE;
  loadJobs();
});
moreButton.addEventListener("click", () => {
  shown += PAGE;
  loadJobs();
});

// --- the new-job form ---------------------------------------------------------------------

async function fillForm() {
  const spec = await jobSchemaDefaults();
  for (const [path, info] of Object.entries(spec)) {
    const input = form.elements.namedItem(path);
    if (!input || input instanceof RadioNodeList) continue;
    if (input.tagName === "SELECT" && info.enum) {
      input.innerHTML = info.enum.map((v) => `<option value="${esc(v)}">${esc(v)}</option>`).join("");
    }
    if (input.type === "checkbox") input.checked = Boolean(info.default);
    else if (info.default !== undefined && info.default !== null) input.value = info.default;
    if (info.description) input.title = info.description;
  }
  const sources = spec["dataset.source"]?.enum || BUILTIN;
  form.querySelector('[data-role="builtin"]').innerHTML = sources
    .map((s) => `<option value="source:${esc(s)}">${esc(s)}</option>`)
    .join("");
  form.elements.dataset.value = `source:${sources.includes("synthetic") ? "synthetic" : sources[0]}`;
  await loadUploads();
}

async function loadUploads(select) {
  const { data } = await request("/v1/datasets");
  form.querySelector('[data-role="uploads"]').innerHTML = data
    .map(
      (d) => `<option value="id:${esc(d.id)}">${esc(d.filename)} (${d.num_images} images,
        ${d.image_size[0]}×${d.image_size[1]})</option>`,
    )
    .join("");
  if (select) form.elements.dataset.value = `id:${select}`;
}

form.elements.dataset.addEventListener("change", () => {
  form.querySelector('[data-role="upload-field"]').hidden = form.elements.dataset.value !== "upload";
});

/** The body of POST /v1/jobs from the form: a field left empty takes the API's default. */
function jobBody(datasetRef) {
  const body = { dataset: datasetRef };
  const number = (v) => (v.trim() === "" || isNaN(Number(v)) ? v : Number(v));
  for (const el of form.elements) {
    if (!el.name || el.name === "dataset" || el.name === "file") continue;
    let value;
    if (el.type === "checkbox") value = el.checked;
    else if (el.value.trim() === "") continue; // the API's default (null widths: the paper's)
    else value = el.type === "number" ? number(el.value) : el.value;
    const path = el.name.split(".");
    let node = body;
    for (const part of path.slice(0, -1)) node = node[part] ??= {};
    node[path[path.length - 1]] = value;
  }
  return body;
}

async function datasetRef() {
  const choice = form.elements.dataset.value;
  if (choice.startsWith("source:")) return { source: choice.slice(7) };
  if (choice.startsWith("id:")) return { id: choice.slice(3) };
  const file = form.elements.file.files[0];
  if (!file) throw new ApiError(422, "validation_error", "choose a file", [{ field: "file", message: "choose a .npz or .zip file" }]);
  const data = new FormData();
  data.append("file", file, file.name);
  state("uploading…");
  const dataset = await request("/v1/datasets", { method: "POST", body: data });
  await loadUploads(dataset.id);
  form.querySelector('[data-role="upload-field"]').hidden = true;
  return { id: dataset.id };
}

function state(text) {
  form.querySelector('[data-role="form-state"]').textContent = text;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  clearErrors(form);
  try {
    const ref = await datasetRef();
    state("submitting…");
    const response = await send("/v1/jobs", { method: "POST", json: jobBody(ref) });
    const job = await response.json();
    state(`queued ${job.id.slice(0, 8)}`);
    await loadJobs();
  } catch (err) {
    state("");
    if (!(err instanceof ApiError)) throw err;
    showErrors(form, err, { "dataset.id": "dataset" });
  } finally {
    button.disabled = false;
  }
});

// --- start --------------------------------------------------------------------------------

initHeader();
// the first request asks for a key when the API wants one (and not at all with auth off)
loadJobs()
  .then(fillForm)
  .catch((err) => console.error(err))
  .finally(() => setTimeout(poll, POLL_MS));
