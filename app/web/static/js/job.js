// The job page (/jobs/{id}): its status and progress, live curves, the sample timeline, the
// generate panel, checkpoints, config, and cancel / resume / delete. Live updates come from
// the job's event stream (GET /v1/jobs/{id}/events, read with fetch: see api.js).

import { ApiError, download, esc, fmt, followEvents, request } from "./api.js";
import { Charts } from "./charts.js";
import { GeneratePanel } from "./generate.js";
import { Timeline, showDatasetPreview } from "./timeline.js";
import { initHeader, metricsText, notify, progressHtml, statusBadge } from "./ui.js";

const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
const head = document.querySelector("#head");
const LOSSES = ["loss_d", "loss_g", "d_real", "d_fake"];

let job = null;
let stream = null;
const charts = new Charts(document.querySelector("#charts"), jobId, document.querySelector("#curves-note"));
const timeline = new Timeline(jobId);
const generator = new GeneratePanel(jobId);

// --- status, progress, buttons ------------------------------------------------------------

function renderHead() {
  document.title = `${job.name} · sngan-service`;
  head.querySelector('[data-role="name"]').textContent = job.name;
  head.querySelector('[data-role="status-badge"]').innerHTML = statusBadge(job.status);
  head.querySelector('[data-role="id"]').textContent = job.id;
  renderProgress();
  const can = {
    cancel: ["queued", "running"].includes(job.status),
    resume: ["failed", "canceled"].includes(job.status),
    delete: ["succeeded", "failed", "canceled"].includes(job.status),
  };
  for (const [action, shown] of Object.entries(can)) {
    head.querySelector(`[data-action="${action}"]`).hidden = !shown;
  }
  const errorBox = document.querySelector("#job-error");
  errorBox.hidden = !job.error;
  if (job.error) {
    errorBox.querySelector('[data-role="code"]').textContent = job.error.code;
    errorBox.querySelector('[data-role="message"]').textContent = job.error.message;
  }
  document.querySelector('[data-role="sample-every"]').textContent = job.config.sample_every;
  renderDetails();
}

function renderProgress() {
  head.querySelector('[data-role="progress"]').innerHTML = progressHtml(job.progress, job.status);
  head.querySelector('[data-role="latest"]').textContent = metricsText(job.latest_metrics, LOSSES);
}

function renderDetails() {
  const facts = {
    Status: job.status,
    Attempts: job.attempts,
    Created: fmt.time(job.created_at),
    Started: fmt.time(job.started_at),
    Finished: fmt.time(job.finished_at),
    Dataset: job.config.dataset.source || `upload ${job.config.dataset.id}`,
  };
  document.querySelector('[data-role="facts"]').innerHTML = Object.entries(facts)
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`)
    .join("");
  document.querySelector('[data-role="config"]').textContent = JSON.stringify(job.config, null, 2);
}

async function reloadJob() {
  job = await request(base);
  renderHead();
}

async function act(action) {
  try {
    if (action === "delete") {
      const dialog = document.querySelector("#confirm-delete");
      dialog.showModal();
      const answer = await new Promise((r) => dialog.addEventListener("close", () => r(dialog.returnValue), { once: true }));
      if (answer !== "delete") return;
      await request(base, { method: "DELETE" });
      stream?.close();
      location.href = "/";
      return;
    }
    job = await request(`${base}/${action}`, { method: "POST" });
    renderHead();
    if (action === "resume") follow(); // the old stream ended with the job's done event
  } catch (err) {
    notify(err instanceof ApiError ? err.message : String(err));
  }
}

head.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", () => act(b.dataset.action)));

// --- checkpoints ----------------------------------------------------------------------------

async function loadCheckpoints() {
  const { data } = await request(`${base}/checkpoints`);
  const section = document.querySelector("#checkpoints");
  section.querySelector('[data-role="empty"]').hidden = data.length > 0;
  section.querySelector("tbody").innerHTML = data
    .slice()
    .reverse()
    .map(
      (c) => `<tr><td>${c.step.toLocaleString()}</td><td>${fmt.bytes(c.size_bytes)}</td>
        <td class="mono" title="${esc(c.sha256)}">${esc(c.sha256.slice(0, 16))}…</td>
        <td>${esc(fmt.time(c.created_at))}</td>
        <td><button type="button" data-step="${c.step}">Download</button></td></tr>`,
    )
    .join("");
  generator.setCheckpoints(data);
}

document.querySelector("#checkpoints tbody").addEventListener("click", (e) => {
  const step = e.target.dataset?.step;
  if (!step) return;
  download(`${base}/checkpoints/${step}`, `${jobId}-step_${String(step).padStart(8, "0")}.pt`).catch((err) =>
    notify(err.message),
  );
});

// --- curves controls ------------------------------------------------------------------------

const smoothing = document.querySelector("#smoothing");
smoothing.addEventListener("input", () => {
  charts.smoothing = Number(smoothing.value);
  document.querySelector("#smoothing-value").textContent = charts.smoothing.toFixed(2);
  charts.draw();
});
document.querySelector("#log-scale").addEventListener("change", (e) => {
  charts.logScale = e.target.checked;
  charts.draw();
});
document.querySelector("#reset-zoom").addEventListener("click", () => charts.resetZoom());

/** fn, run at most once per `ms` however often it is asked for (a replayed stream sends
 * many status and checkpoint events at once); the last call always runs. */
function coalesce(fn, ms = 300) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn().catch((err) => console.warn(err.message));
    }, ms);
  };
}

const reloadSoon = coalesce(reloadJob);
const checkpointsSoon = coalesce(loadCheckpoints);

// --- live ---------------------------------------------------------------------------------

function follow() {
  const lastEventId = stream ? stream.lastEventId() : null;
  stream?.close();
  stream = followEvents(
    jobId,
    {
      progress(p) {
        job.progress = { ...job.progress, ...p };
        renderProgress();
      },
      metrics(m) {
        job.latest_metrics = { ...job.latest_metrics, ...m.metrics };
        renderProgress();
        charts.update().catch((err) => console.warn("metrics update failed:", err.message));
      },
      sample(s) {
        timeline.add(s);
      },
      checkpoint: checkpointsSoon,
      status: reloadSoon,
      done() {
        reloadSoon();
        checkpointsSoon();
        charts.update().catch((err) => console.warn("metrics update failed:", err.message));
      },
      error(err) {
        console.warn("event stream:", err.message);
      },
    },
    { lastEventId },
  );
}

/** Run plotly.js (preloaded by job.html, not run yet); resolves once it has run. */
function runPlotly() {
  if (window.Plotly) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = document.querySelector("#plotly-js").href;
    script.addEventListener("load", resolve, { once: true });
    script.addEventListener("error", () => reject(new Error("plotly.js did not load")), { once: true });
    document.head.append(script);
  });
}

async function main() {
  initHeader();
  try {
    await reloadJob();
  } catch (err) {
    head.querySelector('[data-role="name"]').textContent =
      err instanceof ApiError && err.status === 404 ? "No such job (for this key)" : String(err.message || err);
    return;
  }
  generator.configure(job);
  await Promise.all([
    // the marker tests and bench/dashboard_load.py wait for: the curves are drawn
    charts.load(job.progress.step, runPlotly).then(() => (document.body.dataset.chartsReady = "1")),
    timeline.load(),
    loadCheckpoints(),
    showDatasetPreview(jobId),
  ]).catch((err) => notify(err.message));
  follow();
}

main();
