// The generate panel: images from a checkpoint now (GET /v1/jobs/{id}/samples), their
// sha256 shown beside them (same seed and checkpoint: same bytes, same hash), and the same
// request as PNG / ZIP / NPY downloads.

import { ApiError, clearErrors, download, requestBlob, showErrors } from "./api.js";

/** Hex sha256 of a Blob (crypto.subtle exists on https and on localhost / 127.0.0.1). */
export async function sha256Hex(blob) {
  if (!globalThis.crypto?.subtle) return null;
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export class GeneratePanel {
  constructor(jobId) {
    this.jobId = jobId;
    this.form = document.querySelector("#generate-form");
    this.figure = document.querySelector("#generated");
    this.image = document.querySelector("#generated-image");
    this.last = null; // the query of the image shown: the downloads repeat it
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.generate();
    });
    this.figure.querySelectorAll("[data-format]").forEach((button) =>
      button.addEventListener("click", () => this.download(button.dataset.format)),
    );
  }

  /** Show the class-label field for conditional jobs; the EMA switch only when there is one. */
  configure(job) {
    const model = job.config.model || {};
    this.form.querySelector('[data-role="labels-field"]').hidden = !model.conditional;
    const ema = this.form.elements.ema;
    const hasEma = Boolean(job.config.train && job.config.train.ema_decay);
    ema.disabled = !hasEma;
    ema.checked = hasEma;
    ema.closest("label").title = hasEma ? "" : "this job keeps no EMA of G (train.ema_decay)";
  }

  /** The checkpoint picker: "latest" and every kept step. */
  setCheckpoints(checkpoints) {
    const select = this.form.elements.checkpoint;
    const chosen = select.value;
    select.innerHTML = `<option value="latest">latest</option>${checkpoints
      .slice()
      .reverse()
      .map((c) => `<option value="${c.step}">step ${c.step}</option>`)
      .join("")}`;
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }

  query() {
    const f = this.form.elements;
    return {
      seed: f.seed.value,
      n: f.n.value,
      labels: f.labels.value.trim() || undefined,
      checkpoint: f.checkpoint.value,
      ema: f.ema.disabled ? undefined : String(f.ema.checked),
    };
  }

  async generate() {
    const state = this.form.querySelector('[data-role="form-state"]');
    const button = this.form.querySelector('button[type="submit"]');
    clearErrors(this.form);
    button.disabled = true;
    state.textContent = "generating…";
    try {
      const query = this.query();
      const { blob, headers } = await requestBlob(`/v1/jobs/${this.jobId}/samples`, {
        query: { ...query, format: "grid" },
      });
      // the hash first, then the image and its hash together: never a new image beside the
      // previous one's hash
      const hash = await sha256Hex(blob);
      const old = this.image.src;
      this.image.src = URL.createObjectURL(blob);
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      const hashEl = document.querySelector("#generated-hash");
      hashEl.textContent = hash ? hash.slice(0, 16) : "(needs https or localhost)";
      hashEl.title = hash || "";
      this.image.dataset.sha256 = hash || "";
      const step = headers.get("X-Checkpoint-Step");
      document.querySelector("#generated-info").textContent =
        `checkpoint step ${step} · seed ${query.seed} · ${query.n} images`;
      this.last = { ...query, checkpoint: step || query.checkpoint };
      this.figure.hidden = false;
      state.textContent = "";
    } catch (err) {
      state.textContent = "";
      if (!(err instanceof ApiError)) throw err;
      showErrors(this.form, err);
    } finally {
      button.disabled = false;
    }
  }

  async download(format) {
    if (!this.last) return;
    const q = this.last;
    const suffix = { grid: "png", zip: "zip", npy: "npy" }[format];
    const name = `${this.jobId.slice(0, 8)}-step${q.checkpoint}-seed${q.seed}.${suffix}`;
    try {
      await download(`/v1/jobs/${this.jobId}/samples`, name, { query: { ...q, format } });
    } catch (err) {
      showErrors(this.form, err);
    }
  }
}
