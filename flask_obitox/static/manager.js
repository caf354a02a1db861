// The upload manager page (DESIGN §16): the caller's groups and uploads, newest first,
// kept live by GET /events; actions cancel, delete, retry and download. Built on
// obitox.js, no build step. Every element is made with createElement and textContent
// (nothing a user named is ever parsed as HTML) and styled by class only (the page's
// Content-Security-Policy allows no inline script or style).

import { ObitoX } from "./obitox.js";

const root = document.getElementById("manager");
const client = ObitoX({ endpoint: root.dataset.endpoint });
const PAGE_SIZE = 20;
const OPEN_GROUP = new Set(["pending", "in_progress"]);
/** Uploads whose parts storage still holds apart (GET /multipart answers 409 after). */
const OPEN_UPLOAD = new Set(["pending", "uploading"]);

/** What the page shows: `mine` (the caller's, live) or `admin` (one owner's, read-only). */
const view = {
  mode: "mine",
  adminQuery: null,
  uploads: new Map(), // uploadId -> {upload, element}
  groups: new Map(), // groupId -> {group, element}
  uploadCursor: null,
  groupCursor: null,
};

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function button(label, onClick, className = "") {
  const node = element("button", className, label);
  node.type = "button";
  node.addEventListener("click", async () => {
    node.disabled = true;
    try {
      await onClick();
    } catch (error) {
      notice(error.message || String(error));
    } finally {
      node.disabled = false;
    }
  });
  return node;
}

function notice(message) {
  const box = document.getElementById("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

function bytes(count) {
  if (count == null) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function badge(status) {
  return element("span", `status status-${status}`, status.replace("_", " "));
}

function progressBar(percentage, label) {
  const bar = element("progress", "bar");
  bar.max = 100;
  bar.value = percentage ?? 0;
  bar.setAttribute("aria-label", label);
  return bar;
}

// -- uploads ---------------------------------------------------------------------------

/** The part grid of a multipart upload: one cell per part, its class its status. */
function partGrid(upload, parts) {
  const grid = element("ol", "parts");
  grid.setAttribute("aria-label", `Parts of ${upload.filename}`);
  for (const part of parts) {
    const cell = element("li", `part part-${part.status}`);
    cell.dataset.part = String(part.partNumber);
    cell.dataset.status = part.status;
    cell.title = `Part ${part.partNumber}: ${part.status}`;
    cell.append(element("span", "visually-hidden", `Part ${part.partNumber}: ${part.status}`));
    grid.append(cell);
  }
  return grid;
}

/** Parts as far as the upload view knows them: all uploaded once completed, else as
 *  many as it counts uploaded (GET /multipart/<id> tells which). */
function guessedParts(upload) {
  const total = upload.totalParts ?? 0;
  const done = upload.status === "completed" ? total : (upload.completedParts ?? 0);
  return Array.from({ length: total }, (_, index) => ({
    partNumber: index + 1,
    status: index < done ? "uploaded" : "pending",
  }));
}

const partFetches = new Map(); // uploadId -> {running, again}

/** Ask storage (GET /multipart/<id>) which parts it holds; one call at a time per
 *  upload, and one more when events came in meanwhile. */
function refreshParts(uploadId) {
  const entry = partFetches.get(uploadId) ?? { running: false, again: false };
  partFetches.set(uploadId, entry);
  if (entry.running) {
    entry.again = true;
    return;
  }
  entry.running = true;
  client
    .multipartStatus(uploadId)
    .then((answer) => {
      const shown = view.uploads.get(uploadId);
      if (shown && answer.parts) {
        shown.parts = answer.parts;
        shown.element.querySelector(".parts")?.replaceWith(partGrid(shown.upload, answer.parts));
      }
    })
    .catch(() => {}) // finished and forgotten by storage: the view's parts stay
    .finally(() => {
      entry.running = false;
      if (entry.again) {
        entry.again = false;
        refreshParts(uploadId);
      }
    });
}

function thumbnailOf(upload, name, run) {
  const key = run.result && typeof run.result.thumbnail === "string" ? run.result.thumbnail : null;
  if (!key || view.mode !== "mine") return null;
  const image = element("img", "thumbnail");
  image.alt = `Thumbnail of ${upload.filename}`;
  client
    .downloadUrl(upload.uploadId, { inline: true, derived: key })
    .then((link) => {
      image.src = link.url;
    })
    .catch(() => image.remove());
  return image;
}

function processingList(upload) {
  const runs = Object.entries(upload.processing || {});
  if (!runs.length) return null;
  const list = element("ul", "processing");
  list.setAttribute("aria-label", "Processing");
  for (const [name, run] of runs) {
    const item = element("li", `job job-${run.status}`);
    item.dataset.processor = name;
    const line = element("p", "job-line");
    line.append(element("strong", "", name), " ", badge(run.status), ` attempt ${run.attempts}`);
    item.append(line);
    if (run.error) item.append(element("p", "error", run.error));
    if (run.result != null) {
      const thumbnail = thumbnailOf(upload, name, run);
      if (thumbnail) item.append(thumbnail);
      item.append(element("code", "result", JSON.stringify(run.result)));
    }
    if (run.status === "failed" && upload.status === "completed") {
      item.append(
        button(`Retry ${name}`, async () => {
          const id = encodeURIComponent(upload.uploadId);
          showUpload(await client.api("POST", `/uploads/${id}/processing/${encodeURIComponent(name)}/retry`, {}));
        }, "retry"),
      );
    }
    list.append(item);
  }
  return list;
}

function uploadActions(upload) {
  const actions = element("div", "actions");
  if (view.mode !== "mine") return actions;
  if (upload.status === "completed") {
    actions.append(
      button(`Download ${upload.filename}`, async () => {
        const link = await client.downloadUrl(upload.uploadId);
        window.location.assign(link.url);
      }, "download"),
    );
  }
  if (upload.status !== "deleted") {
    actions.append(
      button(`Delete ${upload.filename}`, async () => showUpload(await client.deleteUpload(upload.uploadId)), "delete"),
    );
  }
  return actions;
}

function renderUpload(upload) {
  const card = element("li", `card upload upload-${upload.status}`);
  card.dataset.uploadId = upload.uploadId;
  card.dataset.status = upload.status;
  const head = element("div", "card-head");
  head.append(element("h3", "name", upload.filename), badge(upload.status));
  card.append(head);
  const facts = element("p", "facts");
  facts.append(`${bytes(upload.uploadedBytes)} of ${bytes(upload.size)} · ${upload.percentage}% · ${upload.kind}`);
  if (upload.groupId) {
    const group = view.groups.get(upload.groupId);
    facts.append(` · group ${group ? group.group.name : upload.groupId}`);
  }
  card.append(facts, progressBar(upload.percentage, `${upload.filename} uploaded`));
  if (upload.kind === "multipart") {
    const shown = view.uploads.get(upload.uploadId);
    // Completed: every part is in the object (storage no longer lists them apart).
    const known = upload.status === "completed" ? null : shown?.parts;
    card.append(partGrid(upload, known ?? guessedParts(upload)));
  }
  if (upload.reason) card.append(element("p", "error", upload.reason));
  const jobs = processingList(upload);
  if (jobs) card.append(jobs);
  card.append(uploadActions(upload));
  return card;
}

/** Show `upload` (new ones first: the list is newest first). */
function showUpload(upload, { append = false } = {}) {
  const shown = view.uploads.get(upload.uploadId);
  if (shown && shown.upload.updatedAt > upload.updatedAt) return; // an older event
  const entry = shown ?? { parts: null };
  entry.upload = upload;
  const card = renderUpload(upload);
  const list = document.getElementById("uploads");
  if (shown) shown.element.replaceWith(card);
  else if (append) list.append(card);
  else list.prepend(card);
  entry.element = card;
  view.uploads.set(upload.uploadId, entry);
  document.getElementById("no-uploads").hidden = view.uploads.size > 0;
}

// -- groups ----------------------------------------------------------------------------

function renderGroup(group) {
  const card = element("li", `card group group-${group.status}`);
  card.dataset.groupId = group.groupId;
  card.dataset.status = group.status;
  const head = element("div", "card-head");
  head.append(element("h3", "name", group.name), badge(group.status));
  card.append(head);
  card.append(
    element(
      "p",
      "facts",
      `${group.completedFiles} of ${group.totalFiles} files · ${bytes(group.uploadedBytes)} of ` +
        `${bytes(group.totalBytes)} · ${group.percentage}%${group.sealed ? "" : " · open"}`,
    ),
    progressBar(group.percentage, `Group ${group.name} uploaded`),
  );
  if (group.failedFiles) card.append(element("p", "error", `${group.failedFiles} failed`));
  const actions = element("div", "actions");
  if (OPEN_GROUP.has(group.status)) {
    actions.append(button(`Cancel ${group.name}`, async () => showGroup(await client.cancelGroup(group.groupId)), "cancel"));
  }
  if (group.status !== "deleted") {
    actions.append(button(`Delete ${group.name}`, async () => showGroup(await client.deleteGroup(group.groupId)), "delete"));
  }
  card.append(actions);
  return card;
}

function showGroup(group, { append = false } = {}) {
  const shown = view.groups.get(group.groupId);
  if (shown && shown.group.updatedAt > group.updatedAt) return;
  const { uploads: members, ...plain } = group;
  const card = renderGroup(plain);
  const list = document.getElementById("groups");
  if (shown) shown.element.replaceWith(card);
  else if (append) list.append(card);
  else list.prepend(card);
  view.groups.set(group.groupId, { group: plain, element: card });
  document.getElementById("no-groups").hidden = view.groups.size > 0;
  for (const member of members ?? []) showUpload(member);
}

// -- loading, paging and live events ---------------------------------------------------

function clear() {
  view.uploads.clear();
  view.groups.clear();
  partFetches.clear();
  document.getElementById("uploads").replaceChildren();
  document.getElementById("groups").replaceChildren();
}

async function moreUploads() {
  let page;
  if (view.mode === "admin") {
    const params = new URLSearchParams({ ...view.adminQuery, limit: String(PAGE_SIZE) });
    if (view.uploadCursor) params.set("cursor", view.uploadCursor);
    page = await client.api("GET", `/admin/uploads?${params}`);
  } else {
    page = await client.uploads({ limit: PAGE_SIZE, cursor: view.uploadCursor ?? undefined });
  }
  for (const upload of page.uploads) {
    showUpload(upload, { append: true });
    if (upload.kind === "multipart" && view.mode === "mine" && OPEN_UPLOAD.has(upload.status)) refreshParts(upload.uploadId);
  }
  view.uploadCursor = page.nextCursor;
  document.getElementById("more-uploads").hidden = !page.nextCursor;
  document.getElementById("no-uploads").hidden = view.uploads.size > 0;
}

async function moreGroups() {
  const page = await client.groups({ limit: PAGE_SIZE, cursor: view.groupCursor ?? undefined });
  for (const group of page.groups) showGroup(group, { append: true });
  view.groupCursor = page.nextCursor;
  document.getElementById("more-groups").hidden = !page.nextCursor;
  document.getElementById("no-groups").hidden = view.groups.size > 0;
}

function onEvent(event) {
  if (view.mode !== "mine" || !event.data) return;
  const { type, data } = event;
  if (type.startsWith("group.")) {
    showGroup(data);
  } else if (data.uploadId) {
    showUpload(data);
    if (data.kind === "multipart" && OPEN_UPLOAD.has(data.status)) refreshParts(data.uploadId);
  }
}

function live() {
  const status = document.getElementById("live");
  const stream = client.events({
    onEvent,
    onError: () => {
      status.textContent = "Reconnecting…";
      status.dataset.state = "reconnecting";
    },
  });
  stream.source.addEventListener("open", () => {
    status.textContent = "Live";
    status.dataset.state = "live";
  });
  return stream;
}

async function showMine() {
  view.mode = "mine";
  view.uploadCursor = view.groupCursor = null;
  clear();
  document.getElementById("groups-section").hidden = false;
  document.getElementById("uploads-title").textContent = "Uploads";
  await Promise.all([moreGroups(), moreUploads()]);
}

function adminControls() {
  const form = document.getElementById("admin");
  if (!form) return;
  const back = document.getElementById("admin-back");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    notice("");
    const owner = document.getElementById("admin-owner").value.trim();
    const status = document.getElementById("admin-status").value;
    view.mode = "admin";
    view.adminQuery = status ? { owner, status } : { owner };
    view.uploadCursor = null;
    clear();
    document.getElementById("groups-section").hidden = true;
    document.getElementById("uploads-title").textContent = `Uploads of ${owner}${status ? ` (${status})` : ""}`;
    back.hidden = false;
    try {
      await moreUploads();
    } catch (error) {
      notice(error.message);
    }
  });
  back.addEventListener("click", async () => {
    back.hidden = true;
    notice("");
    await showMine().catch((error) => notice(error.message));
  });
}

document.getElementById("more-uploads").addEventListener("click", () => moreUploads().catch((e) => notice(e.message)));
document.getElementById("more-groups").addEventListener("click", () => moreGroups().catch((e) => notice(e.message)));
adminControls();
live();
showMine()
  .then(() => {
    root.dataset.loaded = "true";
  })
  .catch((error) => notice(error.message));
