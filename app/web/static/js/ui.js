// Pieces every page shows: the header's key control, status badges, progress bars, and
// images that need the Authorization header (an <img src> cannot send it).

import { esc, fmt, getKey, requestBlob, setKey } from "./api.js";

/** Wire the header's "forget key" button; it shows only while a key is held. */
export function initHeader() {
  const button = document.querySelector('[data-role="forget-key"]');
  if (!button) return;
  const sync = () => {
    button.hidden = !getKey();
  };
  button.addEventListener("click", () => {
    setKey(null);
    location.reload();
  });
  document.addEventListener("sngan:key", sync);
  sync();
}

/** <span class="status status-running">running</span> */
export function statusBadge(status) {
  return `<span class="status status-${esc(status)}" data-role="status">${esc(status)}</span>`;
}

/** A progress bar with "step / total · steps/s · ETA" under it, from a job's `progress`. */
export function progressHtml(progress, status) {
  const pct = Math.round(1000 * (progress.fraction || 0)) / 10;
  const live = status === "running" || status === "canceling";
  const rate = progress.steps_per_s ? `${fmt.number(progress.steps_per_s)} steps/s` : "";
  const eta = live && progress.eta_s !== null ? `ETA ${fmt.duration(progress.eta_s)}` : "";
  const text = [`${progress.step.toLocaleString()} / ${progress.total_steps.toLocaleString()}`, rate, eta]
    .filter(Boolean)
    .join(" · ");
  return `
    <div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="${progress.total_steps}"
         aria-valuenow="${progress.step}" data-step="${progress.step}">
      <div class="bar status-${esc(status)}" style="width:${pct}%"></div>
    </div>
    <div class="progress-text muted" data-role="progress-text">${esc(text)}</div>`;
}

/** "loss_d 1.234 · loss_g 0.5" from latest_metrics (the names given, in that order). */
export function metricsText(latest, names = ["loss_d", "loss_g"]) {
  return names
    .filter((n) => latest && latest[n] !== undefined)
    .map((n) => `${n} ${fmt.number(latest[n])}`)
    .join(" · ");
}

const objectUrls = new WeakMap();

/** Load an authenticated image into `img` (fetched as a Blob, shown via an object URL; the
 * previous one is released). Resolves to the Blob; a failure leaves `img` as it was. */
export async function setAuthImage(img, path, options = {}) {
  const { blob, headers } = await requestBlob(path, options);
  const old = objectUrls.get(img);
  const url = URL.createObjectURL(blob);
  objectUrls.set(img, url);
  await new Promise((resolve) => {
    img.addEventListener("load", resolve, { once: true });
    img.addEventListener("error", resolve, { once: true });
    img.src = url;
  });
  if (old) URL.revokeObjectURL(old);
  return { blob, headers };
}

/** Short message on the page's toast line (errors of buttons that have no form). */
export function notify(message, kind = "error") {
  let box = document.querySelector(".toast");
  if (!box) {
    box = document.createElement("div");
    box.className = "toast";
    box.setAttribute("role", "status");
    document.body.append(box);
  }
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(box._timer);
  box._timer = setTimeout(() => {
    box.hidden = true;
  }, 6000);
}
