// The job page's curves (plotly.js, served by the app: see app/web/routes.py).
//
// A long run is loaded downsampled by the server (/metrics?every=N, about MAX_POINTS steps per
// series, in the columns form); zooming into a step range fetches that range at full detail
// (or as fine as MAX_POINTS allows) and shows it in place of the overview there. New points
// are fetched after the last loaded step whenever the event stream says there are some
// (update()). Charts share their x axis: zooming one zooms all.

import { metricsPage } from "./api.js";

// steps per series drawn at once: about two per pixel of a chart's width (a half-page chart
// is ~600 px); more costs fetching and drawing and shows nothing more
export const MAX_POINTS = 1000;
const TRAIN_NAMES = ["loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s"];
// evaluated every eval.every steps only: fetched without `every`, so none is skipped; the
// `_ema` ones are the EMA generator's (jobs with train.ema_decay)
const EVAL_BASE = ["is_mean", "is_std", "fid", "kid_mean", "kid_std"];
const EVAL_NAMES = [...EVAL_BASE, ...EVAL_BASE.map((n) => `${n}_ema`)];
const GROUPS = [
  { id: "losses", title: "Losses", names: ["loss_d", "loss_g"] },
  { id: "d", title: "D output (mean)", names: ["d_real", "d_fake"] },
  { id: "lr", title: "Learning rate", names: ["lr"] },
  { id: "speed", title: "Steps / s", names: ["steps_per_s"] },
  { id: "is", title: "Inception score", names: ["is_mean", "is_mean_ema"] },
  { id: "fid", title: "FID / KID", names: ["fid", "kid_mean", "fid_ema", "kid_mean_ema"] },
];
const COLORS = ["#2f6fde", "#e0701b", "#1f9d55", "#b03aa7"];

/** Series of one metric: steps ascending, values aligned. */
class Series {
  constructor() {
    this.steps = [];
    this.values = [];
  }
  get last() {
    return this.steps.length ? this.steps[this.steps.length - 1] : -1;
  }
  add(step, value) {
    if (step > this.last) {
      this.steps.push(step);
      this.values.push(value);
    }
  }
}

/** TensorBoard's smoothing: an exponential moving average, debiased at the start. */
export function smooth(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let acc = 0;
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!isFinite(v)) {
      out[i] = v;
      continue;
    }
    acc = acc * weight + (1 - weight) * v;
    n += 1;
    out[i] = acc / (1 - weight ** n);
  }
  return out;
}

async function fetchPoints(jobId, names, { after, every, until, maxSteps }) {
  // pages of /metrics (each up to 10000 steps) until `until` or `maxSteps` steps
  const out = new Map(names.map((n) => [n, new Series()]));
  let cursor = after;
  let steps = 0;
  for (;;) {
    const page = await metricsPage(jobId, {
      names: names.join(","),
      after_step: cursor >= 0 ? cursor : undefined,
      every: every > 1 ? every : undefined,
      limit: Math.min(10_000, maxSteps - steps),
    });
    const shown = until === undefined ? page.steps.length : page.steps.filter((s) => s <= until).length;
    for (const [name, values] of Object.entries(page.series)) {
      const series = out.get(name);
      if (!series) continue;
      // null: no point of this name at that step (a sparse series beside a dense one)
      for (let i = 0; i < shown; i++) if (values[i] !== null) series.add(page.steps[i], values[i]);
    }
    steps += shown;
    cursor = page.next_after_step;
    if (cursor === null || steps >= maxSteps || (until !== undefined && cursor >= until)) return out;
  }
}

export class Charts {
  /** container: the element to draw in; jobId: the job; note: an element for a status line */
  constructor(container, jobId, note) {
    this.container = container;
    this.jobId = jobId;
    this.note = note;
    this.series = new Map([...TRAIN_NAMES, ...EVAL_NAMES].map((n) => [n, new Series()]));
    this.every = 1;
    this.detail = null; // {from, to, series} while zoomed into a range
    this.range = null;
    this.smoothing = 0.6;
    this.logScale = false;
    this.divs = new Map();
    this.syncing = false;
    this.updating = null;
    this.pending = false;
  }

  /** First load: `lastStep` (the job's step) picks how much the server downsamples;
   * `runPlotly()` (plotly.js, a promise of it having run) is called once the requests for
   * the points are sent, so the server works on them while plotly.js starts. The marks say
   * where the time went (bench/dashboard_load.py reads them). */
  async load(lastStep, runPlotly = () => Promise.resolve()) {
    this.every = Math.max(1, Math.ceil(lastStep / MAX_POINTS));
    const points = this.fetchNew().then(() => performance.mark("sngan:points-in"));
    const plotly = runPlotly().then(() => performance.mark("sngan:plotly-ready"));
    await Promise.all([points, plotly]);
    this.draw();
    performance.mark("sngan:drawn");
  }

  /** New points after the last loaded ones (called on each `metrics` event; calls that
   * arrive while one is running are folded into one more). */
  async update() {
    if (this.updating) {
      this.pending = true;
      return this.updating;
    }
    this.updating = (async () => {
      do {
        this.pending = false;
        await this.fetchNew();
      } while (this.pending);
      this.draw();
    })().finally(() => {
      this.updating = null;
    });
    return this.updating;
  }

  async fetchNew() {
    const lastTrain = Math.max(...TRAIN_NAMES.map((n) => this.series.get(n).last));
    const lastEval = Math.max(...EVAL_NAMES.map((n) => this.series.get(n).last));
    const [train, evals] = await Promise.all([
      fetchPoints(this.jobId, TRAIN_NAMES, { after: lastTrain, every: this.every, maxSteps: 100_000 }),
      fetchPoints(this.jobId, EVAL_NAMES, { after: lastEval, every: 1, maxSteps: 100_000 }),
    ]);
    for (const fetched of [train, evals]) {
      for (const [name, s] of fetched) {
        const mine = this.series.get(name);
        s.steps.forEach((step, i) => mine.add(step, s.values[i]));
      }
    }
    this.describe();
  }

  /** The line under the charts: how much of the run they show. */
  describe() {
    const total = this.series.get("loss_d").steps.length;
    let text = "";
    if (this.every > 1) {
      text = `1 step in ${this.every} shown (${total.toLocaleString()} points per curve); zoom in for full detail.`;
    }
    if (this.detail) {
      const { from, to, every } = this.detail;
      const range = `steps ${Math.ceil(from).toLocaleString()}–${Math.floor(to).toLocaleString()}`;
      text += ` Zoomed: ${range} at ${every > 1 ? `1 step in ${every}` : "full detail"}.`;
    }
    this.note.textContent = text.trim();
  }

  /** Full detail (or as fine as MAX_POINTS allows) for the steps from..to. */
  async zoom(from, to) {
    this.range = [from, to];
    const every = Math.max(1, Math.ceil((to - from) / MAX_POINTS));
    if (every >= this.every) {
      this.detail = null; // the overview is already this fine
      return;
    }
    const start = Math.max(-1, Math.floor(from) - 1);
    const series = await fetchPoints(this.jobId, TRAIN_NAMES, {
      after: start,
      every,
      until: Math.ceil(to),
      maxSteps: MAX_POINTS + 2,
    });
    if (this.range && this.range[0] === from && this.range[1] === to) {
      this.detail = { from, to, series, every };
      this.describe();
      this.draw();
    }
  }

  resetZoom() {
    this.range = null;
    this.detail = null;
    this.describe();
    for (const div of this.divs.values()) Plotly.relayout(div, { "xaxis.autorange": true });
    this.draw();
  }

  /** The points drawn for `name`: the overview, with the zoomed range at detail. */
  points(name) {
    const s = this.series.get(name);
    const d = this.detail && this.detail.series.get(name);
    if (!d || !d.steps.length) return s;
    const out = new Series();
    const { from, to } = this.detail;
    s.steps.forEach((step, i) => {
      if (step < from) out.add(step, s.values[i]);
    });
    d.steps.forEach((step, i) => out.add(step, d.values[i]));
    s.steps.forEach((step, i) => {
      if (step > to) out.add(step, s.values[i]);
    });
    return out;
  }

  draw() {
    for (const group of GROUPS) {
      const present = group.names.filter((n) => this.series.get(n).steps.length);
      if (!present.length) continue; // IS/FID/KID charts appear with their first value
      const traces = [];
      present.forEach((name, i) => {
        const { steps, values } = this.points(name);
        const color = COLORS[i % COLORS.length];
        const smoothed = this.smoothing > 0 && steps.length > 2 && !EVAL_NAMES.includes(name);
        if (smoothed) {
          traces.push({ x: steps, y: values, name: `${name} (raw)`, type: "scatter", mode: "lines",
            line: { color, width: 1 }, opacity: 0.25, showlegend: false, hoverinfo: "skip" });
        }
        traces.push({
          x: steps, y: smoothed ? smooth(values, this.smoothing) : values, name,
          type: "scatter", mode: steps.length > 50 ? "lines" : "lines+markers",
          line: { color, width: 1.6 }, marker: { size: 4 },
        });
      });
      const div = this.divs.get(group.id);
      if (div) Plotly.react(div, traces, this.layout(group));
      else this.newChart(group, traces);
    }
  }

  layout(group) {
    return {
      title: { text: group.title, font: { size: 13 }, x: 0.02, xanchor: "left" },
      margin: { l: 52, r: 12, t: 30, b: 32 },
      showlegend: group.names.length > 1,
      legend: { orientation: "h", x: 1, xanchor: "right", y: 1.14, font: { size: 11 } },
      xaxis: { title: { text: "step", font: { size: 11 } }, range: this.range || undefined,
        autorange: this.range ? false : true },
      yaxis: { type: this.logScale ? "log" : "linear", exponentformat: "e", automargin: true },
      uirevision: this.logScale ? "log" : "linear",
      font: { size: 11 },
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
    };
  }

  /** A chart drawn with its first traces (plotted once, not empty and then again). */
  newChart(group, traces) {
    const div = document.createElement("div");
    div.className = "chart";
    div.id = `chart-${group.id}`;
    this.container.append(div);
    this.divs.set(group.id, div);
    Plotly.newPlot(div, traces, this.layout(group), { displaylogo: false, responsive: true,
      modeBarButtonsToRemove: ["lasso2d", "select2d"] });
    div.on("plotly_relayout", (e) => this.onRelayout(div, e));
  }

  onRelayout(source, e) {
    if (this.syncing) return;
    let update = null;
    if (e["xaxis.autorange"]) {
      this.range = null;
      this.detail = null;
      this.describe();
      update = { "xaxis.autorange": true };
    } else if (e["xaxis.range[0]"] !== undefined || e["xaxis.range"]) {
      const [from, to] = e["xaxis.range"] || [e["xaxis.range[0]"], e["xaxis.range[1]"]];
      update = { "xaxis.range": [from, to] };
      this.zoom(from, to).catch((err) => console.warn("zoom detail failed:", err.message));
    }
    if (!update) return;
    this.syncing = true;
    Promise.all(
      [...this.divs.values()].filter((d) => d !== source).map((d) => Plotly.relayout(d, update)),
    ).finally(() => {
      this.syncing = false;
      if (!this.range) this.draw();
    });
  }

  /** Total points drawn per chart id, for a quick look from a console or a test. */
  counts() {
    return Object.fromEntries(
      [...this.divs].map(([id, div]) => [id, (div.data || []).reduce((s, t) => s + t.x.length, 0)]),
    );
  }
}
