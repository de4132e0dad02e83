// The sample timeline: the fixed-noise grids saved during training, with a step slider and
// play/pause, and a grid of the dataset's real images beside them.
//
// Grids come from /v1/jobs/{id}/training-samples (list) and .../training-samples/{step}
// (PNG); the real images from /v1/jobs/{id}/dataset-preview. Each grid is fetched once
// (with the key) and kept as an object URL, so scrubbing back and forth is instant.

import { ApiError, request, requestBlob } from "./api.js";
import { setAuthImage } from "./ui.js";

const PLAY_MS = 600;

export class Timeline {
  constructor(jobId) {
    this.jobId = jobId;
    this.samples = []; // [{step, url}] ascending
    this.urls = new Map(); // step -> object URL
    this.timer = null;
    this.img = document.querySelector("#grid");
    this.empty = document.querySelector("#grid-empty");
    this.slider = document.querySelector("#grid-step");
    this.caption = document.querySelector("#grid-caption");
    this.play = document.querySelector("#play");
    this.slider.addEventListener("input", () => this.show(Number(this.slider.value)));
    this.play.addEventListener("click", () => (this.timer ? this.pause() : this.start()));
  }

  async load() {
    const { data } = await request(`/v1/jobs/${this.jobId}/training-samples`);
    this.samples = data.map(({ step, url }) => ({ step, url }));
    this.sync(true);
  }

  /** A `sample` event: a new grid. The slider follows it when it was at the newest one. */
  add(sample) {
    if (this.samples.some((s) => s.step === sample.step)) return;
    const following = Number(this.slider.value) >= this.samples.length - 1;
    this.samples.push({ step: sample.step, url: sample.url });
    this.samples.sort((a, b) => a.step - b.step);
    this.sync(following && !this.timer);
  }

  sync(toNewest) {
    const n = this.samples.length;
    this.slider.max = String(Math.max(0, n - 1));
    this.slider.disabled = n < 2;
    this.play.disabled = n < 2;
    this.empty.hidden = n > 0;
    this.img.hidden = n === 0;
    if (n && toNewest) {
      this.slider.value = String(n - 1);
      this.show(n - 1);
    }
  }

  async show(index) {
    const sample = this.samples[index];
    if (!sample) return;
    this.caption.textContent = `step ${sample.step.toLocaleString()} · grid ${index + 1} of ${this.samples.length}`;
    let url = this.urls.get(sample.step);
    if (!url) {
      const { blob } = await requestBlob(sample.url);
      url = URL.createObjectURL(blob);
      this.urls.set(sample.step, url);
    }
    if (Number(this.slider.value) !== index) return; // the slider moved on meanwhile
    this.img.src = url;
    this.img.dataset.step = String(sample.step);
  }

  start() {
    if (Number(this.slider.value) >= this.samples.length - 1) this.slider.value = "0";
    this.play.textContent = "❚❚";
    const tick = async () => {
      const i = Number(this.slider.value);
      await this.show(i);
      if (i >= this.samples.length - 1) {
        this.pause();
        return;
      }
      this.slider.value = String(i + 1);
      this.timer = setTimeout(tick, PLAY_MS);
    };
    this.timer = setTimeout(tick, 0);
  }

  pause() {
    clearTimeout(this.timer);
    this.timer = null;
    this.play.textContent = "▶";
  }
}

/** The real-image grid beside the samples; a placeholder saying why when there is none. */
export async function showDatasetPreview(jobId, n = 64) {
  const img = document.querySelector("#real");
  const placeholder = document.querySelector("#real-empty");
  try {
    await setAuthImage(img, `/v1/jobs/${jobId}/dataset-preview`, { query: { n } });
    img.hidden = false;
    placeholder.hidden = true;
  } catch (err) {
    placeholder.textContent =
      err instanceof ApiError ? `No preview of the dataset: ${err.message}` : String(err);
  }
}
