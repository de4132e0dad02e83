// The compare page (/compare?jobs=a,b,c): 2 to 8 of the key's jobs side by side.
//
// - a checkbox list of the key's jobs; the checked ones are kept in the URL, so a comparison
//   can be bookmarked or sent (ids only; the key never goes in a URL)
// - one plotly chart per metric, one trace per job, on a shared step axis (zooming one chart
//   zooms all); each job loaded downsampled by the server (/metrics?every=N, about MAX_POINTS
//   steps per job), whatever its length
// - each job's training grid nearest the step the slider picks
//
// Everything comes from the public /v1 API through api.js, as a script would get it.

import { esc, fmt, metricsPage, request } from "./api.js";
import { smooth } from "./charts.js";
import { initHeader, notify, setAuthImage, statusBadge } from "./ui.js";

const MIN_JOBS = 2;
const MAX_JOBS = 8;
const MAX_POINTS = 1000; // steps per job and chart: more than a half-width chart has pixels
const LIST_PAGES = 5; // of 200 jobs each in the picker
const TRAIN_NAMES = ["loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s"];
// evaluated every eval.every steps only: fetched without `every`, so none is skipped
const EVAL_NAMES = ["is_mean", "fid", "kid_mean"];
const TITLES = {
  loss_d: "D loss", loss_g: "G loss", d_real: "D(real), mean", d_fake: "D(fake), mean",
  lr: "Learning rate", steps_per_s: "Steps / s", is_mean: "Inception score", fid: "FID",
  kid_mean: "KID",
};
const COLORS = ["#2f6fde", "#e0701b", "#1f9d55", "#b03aa7", "#d64545", "#0f9fb0", "#8a6d1f", "#5b5f97"];

const $ = (selector) => document.querySelector(selector);

const state = {
  jobs: new Map(), // id -> job (GET /v1/jobs), in the picker's order
  selected: [], // ids, in the order they were picked (their colours follow it)
  loaded: new Map(), // id -> Promise<{series: Map name -> {steps, values}, grids: [{step, url}]}>
  smoothing: 0.6,
  logScale: false,
  divs: new Map(), // metric name -> chart div
  syncing: false,
  range: null, // the shared x range while zoomed
  step: null, // the step the slider picked (null: the newest grid of any picked job)
  steps: [], // the slider's stops: every grid step of the picked jobs
  drawn: 0, // increases per redraw; stale loads drop their results
  data: null, // id -> loaded points and grids, as last drawn
};

function colorOf(id) {
  return COLORS[state.selected.indexOf(id) % COLORS.length];
}

// --- the picker ---------------------------------------------------------------------------

async function listJobs() {
  let cursor;
  for (let page = 0; page < LIST_PAGES; page++) {
    const body = await request("/v1/jobs", { query: { limit: 200, cursor } });
    for (const job of body.data) state.jobs.set(job.id, job);
    cursor = body.next_cursor;
    if (!cursor) return;
  }
}

/** Jobs named in the URL but not in the list's pages (an older one): fetched one by one. */
async function addMissing(ids) {
  for (const id of ids) {
    if (state.jobs.has(id)) continue;
    try {
      state.jobs.set(id, await request(`/v1/jobs/${encodeURIComponent(id)}`));
    } catch (err) {
      notify(err.message.includes(id) ? err.message : `job ${id}: ${err.message}`);
    }
  }
}

function renderPicker() {
  const picker = $("#picker");
  $("#picker-empty").hidden = state.jobs.size > 0;
  picker.hidden = state.jobs.size === 0;
  const full = state.selected.length >= MAX_JOBS;
  picker.innerHTML = [...state.jobs.values()]
    .map((job) => {
      const on = state.selected.includes(job.id);
      const swatch = on ? `background:${colorOf(job.id)}` : "background:transparent";
      const p = job.progress;
      return `
        <label data-job="${esc(job.id)}">
          <input type="checkbox" value="${esc(job.id)}" ${on ? "checked" : ""}
            ${!on && full ? "disabled" : ""}>
          <span class="swatch" style="${swatch}"></span>
          <a href="/jobs/${encodeURIComponent(job.id)}">${esc(job.name)}</a>
          ${statusBadge(job.status)}
          <span class="meta muted">${p.step.toLocaleString()} / ${p.total_steps.toLocaleString()}
            steps · ${esc(fmt.time(job.created_at))}</span>
        </label>`;
    })
    .join("");
  const n = state.selected.length;
  $("#pick-note").textContent =
    n < MIN_JOBS
      ? `Pick ${MIN_JOBS} to ${MAX_JOBS} jobs (${n} picked).`
      : `${n} picked${full ? ` (at most ${MAX_JOBS})` : ""}.`;
}

function onPick(event) {
  const box = event.target.closest('input[type="checkbox"]');
  if (!box) return;
  const id = box.value;
  if (box.checked && !state.selected.includes(id)) {
    if (state.selected.length >= MAX_JOBS) {
      box.checked = false;
      return;
    }
    state.selected.push(id);
  } else if (!box.checked) {
    state.selected = state.selected.filter((x) => x !== id);
  }
  const url = state.selected.length ? `/compare?jobs=${state.selected.join(",")}` : "/compare";
  history.replaceState(null, "", url);
  renderPicker();
  redraw();
}

// --- loading a job's points and grids -----------------------------------------------------

async function fetchSeries(jobId, names, every) {
  const out = new Map(names.map((n) => [n, { steps: [], values: [] }]));
  let after;
  for (;;) {
    const page = await metricsPage(jobId, {
      names: names.join(","), every: every > 1 ? every : undefined, after_step: after, limit: 10_000,
    });
    for (const [name, values] of Object.entries(page.series)) {
      const s = out.get(name);
      if (!s) continue;
      values.forEach((value, i) => {
        if (value === null) return; // no point of this name at that step
        s.steps.push(page.steps[i]);
        s.values.push(value);
      });
    }
    if (page.next_after_step === null) return out;
    after = page.next_after_step;
  }
}

function load(id) {
  if (!state.loaded.has(id)) {
    const job = state.jobs.get(id);
    const every = Math.max(1, Math.ceil(job.progress.step / MAX_POINTS));
    const promise = Promise.all([
      fetchSeries(id, TRAIN_NAMES, every),
      fetchSeries(id, EVAL_NAMES, 1),
      request(`/v1/jobs/${encodeURIComponent(id)}/training-samples`),
    ]).then(([train, evals, grids]) => ({
      series: new Map([...train, ...evals]),
      grids: grids.data,
      every,
    }));
    promise.catch(() => state.loaded.delete(id)); // try again on the next redraw
    state.loaded.set(id, promise);
  }
  return state.loaded.get(id);
}

// --- curves -------------------------------------------------------------------------------

function layout(name) {
  return {
    title: { text: TITLES[name] || name, font: { size: 13 }, x: 0.02, xanchor: "left" },
    margin: { l: 52, r: 12, t: 30, b: 32 },
    showlegend: true,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.16, font: { size: 10 } },
    xaxis: { title: { text: "step", font: { size: 11 } }, range: state.range || undefined,
      autorange: !state.range },
    yaxis: { type: state.logScale ? "log" : "linear", exponentformat: "e", automargin: true },
    uirevision: state.logScale ? "log" : "linear",
    font: { size: 11 },
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
  };
}

function chartDiv(name) {
  let div = state.divs.get(name);
  if (div) return div;
  div = document.createElement("div");
  div.className = "chart";
  div.id = `chart-${name}`;
  div.dataset.metric = name;
  $("#charts").append(div);
  state.divs.set(name, div);
  Plotly.newPlot(div, [], layout(name), { displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["lasso2d", "select2d"] });
  div.on("plotly_relayout", (e) => onRelayout(div, e));
  return div;
}

/** Zooming one chart zooms every other to the same steps: the axes are shared. */
function onRelayout(source, e) {
  if (state.syncing) return;
  let update = null;
  if (e["xaxis.autorange"]) {
    state.range = null;
    update = { "xaxis.autorange": true };
  } else if (e["xaxis.range[0]"] !== undefined || e["xaxis.range"]) {
    state.range = e["xaxis.range"] || [e["xaxis.range[0]"], e["xaxis.range[1]"]];
    update = { "xaxis.range": state.range };
  }
  if (!update) return;
  state.syncing = true;
  Promise.all(
    [...state.divs.values()].filter((d) => d !== source).map((d) => Plotly.relayout(d, update)),
  ).finally(() => {
    state.syncing = false;
  });
}

function drawCharts(data) {
  const names = [...TRAIN_NAMES, ...EVAL_NAMES];
  for (const name of names) {
    const traces = [];
    for (const id of state.selected) {
      const s = data.get(id)?.series.get(name);
      if (!s || !s.steps.length) continue;
      const smoothed = state.smoothing > 0 && s.steps.length > 2 && !EVAL_NAMES.includes(name);
      traces.push({
        x: s.steps,
        y: smoothed ? smooth(s.values, state.smoothing) : s.values,
        name: state.jobs.get(id).name,
        type: "scatter",
        mode: s.steps.length > 50 ? "lines" : "lines+markers",
        line: { color: colorOf(id), width: 1.6 },
        marker: { size: 4 },
      });
    }
    if (!traces.length && !state.divs.has(name)) continue; // IS/FID/KID only when present
    const div = chartDiv(name);
    div.hidden = !traces.length;
    Plotly.react(div, traces, layout(name));
  }
  const every = [...data.values()].map((d) => d.every).filter((e) => e > 1);
  $("#curves-note").textContent = every.length
    ? `Long runs are drawn downsampled (every ${Math.max(...every)}th step at most); zoom for a closer look.`
    : "";
}

// --- grids at one step --------------------------------------------------------------------

function gridSteps(data) {
  const steps = new Set();
  for (const d of data.values()) d.grids.forEach((g) => steps.add(g.step));
  return [...steps].sort((a, b) => a - b);
}

function nearest(grids, step) {
  let best = null;
  for (const g of grids) {
    if (best === null || Math.abs(g.step - step) < Math.abs(best.step - step)) best = g;
  }
  return best;
}

function drawGrids(data) {
  const steps = gridSteps(data);
  state.steps = steps;
  const slider = $("#step");
  slider.max = String(Math.max(0, steps.length - 1));
  // the stop nearest the picked step: picking other jobs keeps the slider where it was
  let index = steps.length - 1;
  if (state.step !== null && steps.length) {
    index = steps.reduce(
      (best, s, i) => (Math.abs(s - state.step) < Math.abs(steps[best] - state.step) ? i : best),
      0,
    );
  }
  slider.value = String(Math.max(0, index));
  slider.disabled = steps.length < 2;
  const step = steps.length ? steps[index] : 0;
  $("#step-value").textContent = step.toLocaleString();

  const box = $("#grids");
  // one figure per selected job, kept across redraws so an unchanged image is not refetched
  for (const figure of [...box.children]) {
    if (!state.selected.includes(figure.dataset.job)) figure.remove();
  }
  for (const id of state.selected) {
    let figure = box.querySelector(`figure[data-job="${CSS.escape(id)}"]`);
    if (!figure) {
      figure = document.createElement("figure");
      figure.dataset.job = id;
      figure.innerHTML = `<img alt="training grid" hidden><div class="placeholder">No grid yet</div>
        <figcaption></figcaption>`;
    }
    box.append(figure); // in the picked order
    const grid = data.has(id) ? nearest(data.get(id).grids, step) : null;
    const img = figure.querySelector("img");
    const name = esc(state.jobs.get(id).name);
    const swatch = `<span class="swatch" style="background:${colorOf(id)}"></span>`;
    if (!grid) {
      img.hidden = true;
      figure.querySelector(".placeholder").hidden = false;
      figure.querySelector("figcaption").innerHTML = `${swatch}${name}: no training grid`;
      continue;
    }
    figure.querySelector("figcaption").innerHTML =
      `${swatch}${name} · step ${grid.step.toLocaleString()}`;
    if (img.dataset.step === String(grid.step)) continue;
    img.dataset.step = String(grid.step);
    setAuthImage(img, grid.url)
      .then(() => {
        if (img.dataset.step !== String(grid.step)) return; // the slider moved on meanwhile
        img.hidden = false;
        figure.querySelector(".placeholder").hidden = true;
        img.dataset.loaded = String(grid.step);
      })
      .catch((err) => notify(`grid of ${state.jobs.get(id).name}: ${err.message}`));
  }
}

// --- putting it together ------------------------------------------------------------------

async function redraw() {
  const turn = ++state.drawn;
  delete document.body.dataset.chartsReady;
  const results = await Promise.allSettled(state.selected.map((id) => load(id)));
  if (turn !== state.drawn) return; // a newer selection is being drawn
  const data = new Map();
  results.forEach((r, i) => {
    if (r.status === "fulfilled") data.set(state.selected[i], r.value);
    else notify(`${state.jobs.get(state.selected[i])?.name}: ${r.reason.message}`);
  });
  await waitForPlotly();
  drawCharts(data);
  drawGrids(data);
  state.data = data;
  document.body.dataset.chartsReady = "1"; // for tests and benchmarks: the curves are drawn
}

function waitForPlotly() {
  // plotly.min.js is a deferred classic script: normally there before this module runs
  if (window.Plotly) return Promise.resolve();
  return new Promise((resolve) => window.addEventListener("load", resolve, { once: true }));
}

async function main() {
  initHeader();
  const wanted = (new URLSearchParams(location.search).get("jobs") || "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  await listJobs();
  await addMissing(wanted);
  state.selected = [...new Set(wanted)].filter((id) => state.jobs.has(id)).slice(0, MAX_JOBS);
  renderPicker();
  $("#picker").addEventListener("change", onPick);

  $("#smoothing").addEventListener("input", (e) => {
    state.smoothing = Number(e.target.value);
    $("#smoothing-value").textContent = state.smoothing.toFixed(2);
    if (state.data) drawCharts(state.data);
  });
  $("#log-scale").addEventListener("change", (e) => {
    state.logScale = e.target.checked;
    if (state.data) drawCharts(state.data);
  });
  $("#step").addEventListener("input", (e) => {
    state.step = state.steps[Number(e.target.value)] ?? null;
    if (state.data) drawGrids(state.data);
  });
  await redraw();
}

main().catch((err) => notify(err.message));
