// The example page, on top of obitox.js (the extension's browser client):
//   - small files: ox.uploadFiles (one batch call, parallel PUTs, completion);
//   - large files: ox.resumableUpload (multipart, pause/resume/cancel, resumes after a reload);
//   - the caller's completed uploads with download links, the webhooks the app received, and
//     a banner while the webhook worker is not running.
// A plain ES module, no build step. Every name and message goes into the DOM as text.

import { ObitoX, resumeKey } from "obitox"; // mapped to the blueprint's obitox.js by the page

const config = JSON.parse(document.querySelector("#page-config").textContent);
const ox = ObitoX({ endpoint: config.api, rules: config.rules });
const RESUME_PREFIX = "obitox:resume:";
const POLL_MS = 2000;
// Codes that mean "this file is refused" rather than "this transfer failed".
const REFUSALS = new Set([
  "VALIDATION_FAILED", "FILE_TOO_LARGE", "CONTENT_MISMATCH", "INVALID_INPUT", "UNSUPPORTED_MEDIA_TYPE",
]);

const $ = (selector) => document.querySelector(selector);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function errorCode(error) {
  return error?.code || "ERROR";
}

// -- one row per file of this page ------------------------------------------------------

const list = $("#files");
const rows = new Set();
const FINISHED = new Set(["completed", "rejected", "failed", "cancelled"]);

class FileRow {
  constructor(file, mode) {
    this.file = file;
    this.mode = mode; // "batch" | "resumable"
    this.loaded = 0;
    this.status = "";
    this.upload = null;

    this.item = element("li", "file");
    this.item.dataset.name = file.name;
    this.item.dataset.mode = mode;
    const name = element("span", "name", file.name);
    name.append(element("small", "", mode === "resumable" ? "resumable" : "batch"));
    this.bytes = element("span", "bytes");
    this.badge = element("span", "status");
    this.bar = element("progress");
    this.bar.max = Math.max(file.size, 1);
    this.bar.value = 0;
    this.bar.setAttribute("aria-label", `${file.name} progress`);
    this.actions = element("div", "actions");
    this.detail = element("div", "detail");
    this.item.append(name, this.bytes, this.badge, this.bar, this.actions, this.detail);
    list.append(this.item);
    rows.add(this);
    this.setStatus("waiting");
    this.progress(0);
  }

  get finished() {
    return FINISHED.has(this.status);
  }

  setStatus(status, label = status) {
    this.status = status;
    this.item.dataset.status = status;
    this.badge.textContent = label;
    if (this.finished) {
      this.bar.hidden = status !== "completed";
      this.actions.replaceChildren();
    }
    refreshTotals();
  }

  progress(loaded) {
    if (this.finished) return;
    this.loaded = Math.min(loaded, this.file.size);
    this.bar.value = this.loaded;
    this.bytes.textContent = `${formatBytes(this.loaded)} / ${formatBytes(this.file.size)}`;
    if (this.status === "waiting" && loaded > 0) this.setStatus("uploading");
    else if (this.status === "uploading" && this.loaded === this.file.size) this.setStatus("verifying");
    refreshTotals();
  }

  complete(result, note) {
    this.loaded = this.file.size;
    this.bar.value = this.bar.max;
    this.bytes.textContent = formatBytes(this.file.size);
    this.detail.replaceChildren("key ", element("code", "", result.key));
    if (note) this.detail.append(` · ${note}`);
    this.setStatus("completed");
    refreshCompleted();
  }

  fail(error) {
    const code = errorCode(error);
    if (code === "ABORTED") {
      this.detail.textContent = "Cancelled: the upload was aborted on the server.";
      this.setStatus("cancelled");
      return;
    }
    this.detail.replaceChildren(element("code", "error-code", code), ` ${error?.message ?? String(error)}`);
    this.bytes.textContent = formatBytes(this.file.size);
    this.setStatus(REFUSALS.has(code) ? "rejected" : "failed");
  }

  // Pause/resume and cancel, for a resumable upload.
  control(upload) {
    this.upload = upload;
    const pause = element("button", "pause", "Pause");
    pause.type = "button";
    pause.setAttribute("aria-label", `Pause ${this.file.name}`);
    pause.addEventListener("click", () => {
      if (this.status === "paused") {
        upload.resume();
        pause.textContent = "Pause";
        pause.setAttribute("aria-label", `Pause ${this.file.name}`);
        this.setStatus("uploading");
      } else {
        upload.pause();
        pause.textContent = "Resume";
        pause.setAttribute("aria-label", `Resume ${this.file.name}`);
        this.setStatus("paused");
      }
    });
    const cancel = element("button", "cancel", "Cancel");
    cancel.type = "button";
    cancel.setAttribute("aria-label", `Cancel ${this.file.name}`);
    cancel.addEventListener("click", () => upload.abort());
    this.actions.replaceChildren(pause, cancel);
  }
}

// -- totals ---------------------------------------------------------------------------

const totalBox = $("#total");
const totalBar = $("#total-progress");
const totalNumbers = $("#total-numbers");
const summary = $("#summary");
const clearButton = $("#clear");
const filesEmpty = $("#files-empty");
let totalsQueued = false;

// Progress events come per chunk of every transfer: draw at most once per frame.
function refreshTotals() {
  if (totalsQueued) return;
  totalsQueued = true;
  requestAnimationFrame(() => {
    totalsQueued = false;
    let loaded = 0;
    let total = 0;
    const counts = {};
    for (const row of rows) {
      counts[row.status] = (counts[row.status] ?? 0) + 1;
      if (["rejected", "failed", "cancelled"].includes(row.status)) continue;
      loaded += row.loaded;
      total += row.file.size;
    }
    const finished = [...rows].filter((row) => row.finished).length;
    totalBox.hidden = rows.size === 0;
    filesEmpty.hidden = rows.size > 0;
    totalBar.max = Math.max(total, 1);
    totalBar.value = loaded;
    totalNumbers.textContent =
      `${formatBytes(loaded)} of ${formatBytes(total)} · ${counts.completed ?? 0} of ${rows.size} files done`;
    const parts = [`${rows.size} file${rows.size === 1 ? "" : "s"}`];
    for (const state of ["completed", "rejected", "failed", "cancelled", "paused"]) {
      if (counts[state]) parts.push(`${counts[state]} ${state}`);
    }
    if (finished < rows.size) parts.push(`${rows.size - finished} in progress`);
    const text = parts.join(" · ");
    if (summary.textContent !== text) summary.textContent = text; // read out on change only
    clearButton.hidden = finished === 0;
  });
}

clearButton.addEventListener("click", () => {
  for (const row of [...rows]) {
    if (!row.finished) continue;
    rows.delete(row);
    row.item.remove();
  }
  refreshTotals();
});

// -- sending files ------------------------------------------------------------------------

/** The upload profile picked on the page (OBITOX_PROFILES), or none: the defaults. */
function chosenProfile() {
  return document.getElementById("profile")?.value || undefined;
}

async function uploadSmall(batch) {
  // One batch call per BATCH_MAX files (the server's OBITOX_BATCH_MAX_FILES).
  for (let start = 0; start < batch.length; start += config.batchMax) {
    const chunk = batch.slice(start, start + config.batchMax);
    const files = chunk.map((row) => row.file);
    await ox.uploadFiles(files, {
      concurrency: 4,
      profile: chosenProfile(),
      validation: { maxSize: config.maxFileSize },
      onProgress: ({ perFile }) => perFile.forEach((bytes, i) => chunk[i].progress(bytes)),
      onFileDone: (file, result, error) => {
        const row = chunk[files.indexOf(file)];
        if (error) row.fail(error);
        else row.complete(result);
      },
    });
  }
}

async function uploadLarge(row) {
  const upload = ox.resumableUpload(row.file, {
    concurrency: 3,
    profile: chosenProfile(),
    validation: { maxSize: config.maxMultipartSize },
    onProgress: ({ loaded }) => {
      if (row.status !== "paused") row.progress(loaded);
    },
  });
  row.control(upload);
  refreshResumable();
  try {
    const result = await upload;
    const note = upload.resumed
      ? `resumed: ${upload.skippedParts.length} part(s) already in storage skipped, ${upload.sentParts.length} sent`
      : `${upload.sentParts.length} part(s)`;
    row.complete(result, note);
  } catch (error) {
    row.fail(error);
  }
  refreshResumable();
}

function addFiles(fileList) {
  const small = [];
  for (const file of Array.from(fileList)) {
    // A file with a resume token continues its multipart upload whatever its size.
    const resumable = file.size >= config.threshold || ox.resumeToken(file) !== null;
    const row = new FileRow(file, resumable ? "resumable" : "batch");
    if (resumable) uploadLarge(row);
    else small.push(row);
  }
  if (small.length) uploadSmall(small);
}

const input = $("#file-input");
const dropZone = $("#drop-zone");

input.addEventListener("change", () => {
  const files = Array.from(input.files);
  input.value = ""; // choosing the same files again fires "change" again
  if (files.length) addFiles(files);
});

// A file dropped anywhere must not make the browser navigate away from the page.
for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, () => dropZone.classList.add("over"));
}
for (const type of ["dragleave", "drop"]) {
  dropZone.addEventListener(type, () => dropZone.classList.remove("over"));
}
dropZone.addEventListener("drop", (event) => {
  const files = event.dataTransfer?.files;
  if (files?.length) addFiles(files);
});

// -- unfinished uploads left by an earlier page ------------------------------------------------

const resumableBox = $("#resumable");
const resumableList = $("#resumable-list");

// obitox.js keeps each token under "obitox:resume:<name>:<size>:<lastModified>".
function savedTokens() {
  const saved = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (!key?.startsWith(RESUME_PREFIX)) continue;
    const match = /^(.*):(\d+):(\d+)$/.exec(key.slice(RESUME_PREFIX.length));
    if (match) saved.push({ key, token: localStorage.getItem(key), name: match[1], size: Number(match[2]) });
  }
  return saved;
}

async function refreshResumable() {
  const active = new Set([...rows].filter((row) => row.upload && !row.finished).map((row) => resumeKey(row.file)));
  const entries = [];
  for (const saved of savedTokens()) {
    if (active.has(saved.key)) continue; // shown as a row of this page
    try {
      const view = await ox.api("GET", `/multipart/${encodeURIComponent(saved.token)}`);
      if (view.status === "completed" || view.status === "aborted") {
        localStorage.removeItem(saved.key);
        continue;
      }
      entries.push({ saved, view });
    } catch (error) {
      // Gone from the server (aborted, expired, another demo user): nothing to resume.
      if ([404, 409, 410].includes(error.status)) localStorage.removeItem(saved.key);
    }
  }
  resumableList.replaceChildren(
    ...entries.map(({ saved, view }) => {
      const item = element("li");
      item.dataset.name = saved.name;
      const forget = element("button", "forget", "Discard");
      forget.type = "button";
      forget.setAttribute("aria-label", `Discard the unfinished upload of ${saved.name}`);
      forget.addEventListener("click", async () => {
        forget.disabled = true;
        await ox.api("DELETE", `/multipart/${encodeURIComponent(saved.token)}`).catch(() => {});
        localStorage.removeItem(saved.key);
        refreshResumable();
      });
      item.append(
        element("span", "name", saved.name),
        element(
          "span",
          "where",
          `${view.uploadedParts.length} of ${view.totalParts} parts in storage · ` +
            `${formatBytes(view.uploadedBytes)} of ${formatBytes(view.totalBytes)}`,
        ),
        forget,
      );
      return item;
    }),
  );
  resumableBox.hidden = entries.length === 0;
}

// -- completed uploads (example_app/uploads.py) ---------------------------------------------

const completedList = $("#completed-list");
const completedEmpty = $("#completed-empty");
let shownCompleted = "";

async function refreshCompleted() {
  let uploads;
  try {
    const response = await fetch(config.completedUrl, { credentials: "same-origin" });
    if (!response.ok) return;
    ({ uploads } = await response.json());
  } catch {
    return; // the app restarted or is unreachable: the next tick tries again
  }
  const signature = uploads
    .map((u) => `${u.uploadId}:${Object.values(u.processing ?? {}).map((p) => p.status).join("/")}`)
    .join(",");
  if (signature === shownCompleted) return; // unchanged: keep focus and screen readers calm
  shownCompleted = signature;
  completedEmpty.hidden = uploads.length > 0;
  completedList.replaceChildren(
    ...uploads.map((upload) => {
      const item = element("li", "completed-upload");
      item.dataset.uploadId = upload.uploadId;
      item.dataset.name = upload.filename;
      const link = element("a", "download", "Download");
      link.href = upload.downloadUrl;
      link.setAttribute("aria-label", `Download ${upload.filename}`);
      const meta = element("div", "meta");
      const when = new Date(upload.completedAt * 1000).toLocaleTimeString();
      meta.append(
        `${upload.kind === "multipart" ? "multipart" : "single PUT"} · ${upload.contentType} · completed ${when} · key `,
        element("code", "", upload.key),
      );
      item.append(element("span", "name", upload.filename), element("span", "size", formatBytes(upload.size)), link, meta);
      item.append(renderProcessing(upload));
      return item;
    }),
  );
}

// What the example's processors made of an upload (example_app/processors.py): its thumbnail
// and its SHA-256, or where each processor stands.
function renderProcessing(upload) {
  const box = element("div", "processing");
  if (upload.thumbnailUrl) {
    const image = element("img", "thumbnail");
    image.src = upload.thumbnailUrl;
    image.alt = `Thumbnail of ${upload.filename}`;
    box.append(image);
  }
  for (const [name, run] of Object.entries(upload.processing ?? {})) {
    const line = element("span", "processor");
    line.dataset.processor = name;
    line.dataset.status = run.status;
    if (name === "sha256" && run.status === "completed") {
      line.append("sha256 ", element("code", "", run.result.sha256));
    } else if (run.status !== "completed" || name !== "thumbnail") {
      line.textContent = `${name}: ${run.status}${run.error ? ` (${run.error})` : ""}`;
    } else {
      continue;
    }
    box.append(line);
  }
  return box;
}

// -- webhooks this app received (example_app/webhooks.py) -------------------------------------

const webhookSection = $("#webhooks");
const deliveryList = $("#deliveries");
const noDelivery = $("#deliveries-empty");
const workerBanner = $("#worker-banner");
let shownDeliveries = "";
let shownWorker = "";
let deliveryCount = 0;

// "No delivery yet" is only true while a worker runs to make one: otherwise the banner says why not.
function renderEmptyState() {
  noDelivery.hidden = deliveryCount > 0 || !workerBanner.hidden;
}

function renderDeliveries(deliveries) {
  const signature = deliveries.map((d) => d.webhookId).join(",");
  if (signature === shownDeliveries) return;
  shownDeliveries = signature;
  deliveryCount = deliveries.length;
  renderEmptyState();
  deliveryList.replaceChildren(
    ...deliveries.map((delivery) => {
      const item = element("li", "delivery");
      item.dataset.webhookId = delivery.webhookId;
      item.append(
        element("span", "name", delivery.type),
        element("span", "size", delivery.filename ?? ""),
        element("span", "verified", delivery.verified ? "signature verified" : "unverified"),
      );
      const meta = element("div", "meta");
      meta.append("upload ", element("code", "", delivery.uploadId ?? "none"), " · webhook-id ");
      meta.append(element("code", "", delivery.webhookId), ` · received ${delivery.receivedAt}`);
      item.append(meta);
      return item;
    }),
  );
}

async function pollDeliveries() {
  try {
    const response = await fetch(config.deliveriesUrl, { credentials: "same-origin" });
    if (response.ok) renderDeliveries((await response.json()).deliveries);
  } catch {
    // The app restarted or is unreachable: try again on the next tick.
  }
}

// The worker's health (GET /webhooks/worker): a banner while nothing can deliver.
function renderWorker(health) {
  const down = health.enabled && !health.healthy && health.status !== "starting";
  const log = health.process?.log ?? [];
  const signature = down ? JSON.stringify([health.message, log]) : "";
  if (signature === shownWorker) return; // unchanged: the alert is not announced again
  shownWorker = signature;
  workerBanner.hidden = !down;
  workerBanner.dataset.status = health.status;
  $("#worker-message").textContent = down ? health.message : "";
  $("#worker-log").textContent = down ? log.join("\n") : "";
  $("#worker-log-details").hidden = !down || log.length === 0;
  renderEmptyState();
}

async function pollWorker() {
  try {
    const response = await fetch(webhookSection.dataset.workerUrl, { credentials: "same-origin" });
    if (response.ok) renderWorker(await response.json());
  } catch {
    // The app restarted or is unreachable: try again on the next tick.
  }
}

// -- tabs ------------------------------------------------------------------------------

const tabs = [...document.querySelectorAll('[role="tab"]')];

function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
}

for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    selectTab(tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length]);
  });
}

// -- start ---------------------------------------------------------------------------------

refreshTotals();
refreshResumable();
refreshCompleted();
const hasWebhooks = webhookSection && !webhookSection.hidden;
if (hasWebhooks) {
  pollDeliveries();
  pollWorker();
}
setInterval(() => {
  if (document.visibilityState !== "visible") return;
  refreshCompleted(); // uploads completed from another tab or the Python client too
  if (hasWebhooks) {
    pollDeliveries();
    pollWorker();
  }
}, POLL_MS);
document.querySelector("#uploader").dataset.ready = "true";
