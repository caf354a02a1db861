// The example page: sign a batch, PUT each file straight to storage, complete it.
// A plain ES module, no build step. Every name and message goes into the DOM as text.

const page = document.querySelector("#uploader");
const API = page.dataset.api; // the extension's URL prefix, e.g. "/obitox"
const BATCH_MAX = Number(page.dataset.batchMax) || 100;
const PARALLEL_UPLOADS = 4;

const input = document.querySelector("#file-input");
const dropZone = document.querySelector("#drop-zone");
const list = document.querySelector("#files");
const summary = document.querySelector("#summary");
const clearButton = document.querySelector("#clear");

const rows = new Set();

class UploadError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// -- talking to the app and to storage ---------------------------------------------

async function postJSON(path, body) {
  let response;
  try {
    response = await fetch(API + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body ?? {}),
      credentials: "same-origin",
    });
  } catch (error) {
    throw new UploadError("NETWORK_ERROR", `The app could not be reached (${error.message}).`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON: reported below from the status alone.
  }
  if (!response.ok) {
    throw new UploadError(
      data?.error ?? `HTTP_${response.status}`,
      data?.message ?? `The app answered ${response.status} ${response.statusText}.`,
    );
  }
  return data;
}

// S3 answers errors as XML: <Error><Code>…</Code><Message>…</Message></Error>.
function storageError(xhr) {
  const doc = new DOMParser().parseFromString(xhr.responseText || "<none/>", "application/xml");
  const code = doc.querySelector("Error > Code")?.textContent;
  const message = doc.querySelector("Error > Message")?.textContent;
  return new UploadError(
    code || `HTTP_${xhr.status}`,
    `Storage refused the upload (HTTP ${xhr.status})${message ? `: ${message}` : "."}`,
  );
}

// XMLHttpRequest rather than fetch: only XHR reports upload progress.
function putFile(signed, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(signed.method || "PUT", signed.url);
    for (const [name, value] of Object.entries(signed.headers ?? {})) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300 ? resolve() : reject(storageError(xhr)));
    xhr.onerror = () =>
      reject(new UploadError("NETWORK_ERROR", "The upload to storage failed (network or CORS error)."));
    xhr.onabort = () => reject(new UploadError("ABORTED", "The upload was aborted."));
    xhr.send(file);
  });
}

// -- one row per file ----------------------------------------------------------------

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

function createRow(file) {
  const item = element("li", "file");
  const status = element("span", "status");
  const progress = element("progress");
  progress.max = 1;
  progress.value = 0;
  const detail = element("div", "detail");
  item.append(element("span", "name", file.name), element("span", "size", formatBytes(file.size)), status, progress, detail);
  list.append(item);

  const row = {
    status: "",
    set(state, label = state) {
      row.status = state;
      item.dataset.status = state;
      status.textContent = label;
      updateSummary();
    },
    progress(fraction) {
      progress.value = fraction;
      status.textContent = `${Math.floor(fraction * 100)} %`;
    },
    reject(error) {
      progress.hidden = true;
      detail.replaceChildren(element("code", "error-code", error.code), ` ${error.message}`);
      row.set("rejected");
    },
    complete(result) {
      progress.value = 1;
      progress.hidden = true;
      detail.replaceChildren("key ", element("code", "", result.key), " · ETag ", element("code", "", result.etag));
      row.set("completed");
    },
  };
  rows.add(row);
  row.set("signing", "waiting");
  return row;
}

function updateSummary() {
  const counts = {};
  for (const row of rows) counts[row.status] = (counts[row.status] ?? 0) + 1;
  const done = (counts.completed ?? 0) + (counts.rejected ?? 0);
  const parts = [`${rows.size} file${rows.size === 1 ? "" : "s"}`];
  for (const state of ["completed", "rejected"]) if (counts[state]) parts.push(`${counts[state]} ${state}`);
  if (done < rows.size) parts.push(`${rows.size - done} in progress`);
  summary.textContent = rows.size ? parts.join(" · ") : "";
  clearButton.hidden = rows.size === 0 || done < rows.size;
}

// -- the flow: sign a batch, then PUT and complete, a few at a time --------------------

async function uploadOne(file, signed, row) {
  try {
    row.set("uploading");
    await putFile(signed, file, (fraction) => row.progress(fraction));
    row.set("uploading", "verifying");
    row.complete(await postJSON(`/uploads/${encodeURIComponent(signed.uploadId)}/complete`));
  } catch (error) {
    row.reject(error instanceof UploadError ? error : new UploadError("ERROR", String(error)));
  }
}

async function runLimited(tasks, limit) {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
}

async function uploadBatch(files) {
  const batchRows = files.map(createRow);
  let answer;
  try {
    answer = await postJSON("/uploads/batch", {
      files: files.map((file) => ({
        filename: file.name,
        contentType: file.type || "application/octet-stream",
        size: file.size,
      })),
    });
  } catch (error) {
    for (const row of batchRows) row.reject(error);
    return;
  }
  for (const refused of answer.errors) {
    batchRows[refused.index].reject(new UploadError(refused.error, refused.message));
  }
  for (const signed of answer.uploads) batchRows[signed.index].set("signed");
  await runLimited(
    answer.uploads.map((signed) => () => uploadOne(files[signed.index], signed, batchRows[signed.index])),
    PARALLEL_UPLOADS,
  );
}

async function uploadFiles(fileList) {
  const files = Array.from(fileList);
  for (let start = 0; start < files.length; start += BATCH_MAX) {
    await uploadBatch(files.slice(start, start + BATCH_MAX));
  }
}

// -- wiring ----------------------------------------------------------------------------

input.addEventListener("change", () => {
  const files = Array.from(input.files);
  input.value = ""; // choosing the same files again fires "change" again
  if (files.length) uploadFiles(files);
});

for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) {
  dropZone.addEventListener(type, () => dropZone.classList.remove("over"));
}
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  const files = event.dataTransfer?.files;
  if (files?.length) uploadFiles(files);
});

clearButton.addEventListener("click", () => {
  rows.clear();
  list.replaceChildren();
  updateSummary();
});
