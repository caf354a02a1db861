// obitox.js: the browser client of flask-obitox. A plain ES module, no build step:
//
//   import { ObitoX } from "/obitox/static/obitox.js";
//   const ox = ObitoX({ endpoint: "/obitox" });
//   await ox.uploadFiles(input.files, { onProgress, onFileDone });
//   const upload = ox.resumableUpload(bigFile, { onProgress });  // pause(), resume(), abort()
//   const result = await upload;
//
// Bytes go straight from the browser to storage with the URLs the server signed; the
// server is asked only to sign, to say which parts storage holds, and to complete.

/** Extensions the server refuses while OBITOX_BLOCK_EXECUTABLES is on (kept equal to
 *  flask_obitox.validation.DANGEROUS_EXTENSIONS by tests/test_obitox_js.py). */
export const DANGEROUS_EXTENSIONS = new Set([
  "apk", "app", "appimage", "application", "appref-ms", "appx", "appxbundle", "bash",
  "bat", "chm", "cmd", "com", "command", "cpl", "csh", "deb", "dll", "dmg", "drv", "exe",
  "fish", "gadget", "hta", "inf", "ipa", "jar", "jnlp", "js", "jse", "ksh", "lnk", "mpkg",
  "msc", "msh", "msh1", "msh1xml", "msh2", "msh2xml", "mshxml", "msi", "msix",
  "msixbundle", "msp", "mst", "msu", "ocx", "pif", "pkg", "ps1", "ps1xml", "ps2", "ps2xml",
  "psc1", "psc2", "psd1", "psm1", "reg", "rpm", "run", "scf", "scr", "sct",
  "settingcontent-ms", "sh", "shb", "shs", "sys", "tcsh", "url", "vb", "vba", "vbe", "vbs",
  "ws", "wsc", "wsf", "wsh", "xapk", "xbap", "zsh",
]);

const MiB = 1024 * 1024;
const MIN_PART_SIZE = 5 * MiB;
const MAX_PARTS_PER_CALL = 1000;
const TOKEN_PREFIX = "obitox:resume:";

/** A failure with the server's error shape: `code`, `message`, `details`, `status`. */
export class ObitoXError extends Error {
  constructor(code, message, details = {}, status = 0) {
    super(message);
    this.name = "ObitoXError";
    this.code = code;
    this.details = details;
    this.status = status;
  }
}

/** The key a file's resume token is kept under: same name, size and mtime, same file. */
export function resumeKey(file) {
  return `${TOKEN_PREFIX}${file.name}:${file.size}:${file.lastModified}`;
}

function extensionOf(name) {
  const base = name.split(/[\\/]/).pop().toLowerCase();
  const dot = base.lastIndexOf(".");
  return dot > 0 ? base.slice(dot + 1) : "";
}

function typeMatches(pattern, type) {
  const [want, wantSub] = pattern.toLowerCase().split("/");
  const [have, haveSub] = type.toLowerCase().split(";")[0].trim().split("/");
  return (want === "*" || want === have) && (wantSub === "*" || wantSub === haveSub);
}

/** What the first bytes say the file is, when it is a program (the server sniffs the
 *  same signatures after upload and deletes what does not match). */
function sniffExecutable(bytes) {
  const starts = (...sig) => sig.every((b, i) => bytes[i] === b);
  if (starts(0x4d, 0x5a) && bytes.slice(2, 64).includes(0)) return "a Windows program";
  if (starts(0x7f, 0x45, 0x4c, 0x46)) return "an ELF program";
  for (const sig of [
    [0xfe, 0xed, 0xfa, 0xce],
    [0xfe, 0xed, 0xfa, 0xcf],
    [0xce, 0xfa, 0xed, 0xfe],
    [0xcf, 0xfa, 0xed, 0xfe],
  ]) {
    if (starts(...sig)) return "a Mach-O program";
  }
  if (starts(0x23, 0x21, 0x2f)) return "a script";
  return null;
}

function sendBytes(url, { method = "PUT", headers = {}, body, onProgress, xhrs }) {
  // XMLHttpRequest, not fetch: only it reports upload progress byte by byte.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) {
      // The browser sets Content-Length itself, and refuses to be told.
      if (name.toLowerCase() !== "content-length") xhr.setRequestHeader(name, value);
    }
    if (onProgress) xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => {
      xhrs.delete(xhr);
      resolve({ status: xhr.status, text: xhr.responseText, etag: xhr.getResponseHeader("ETag") });
    };
    xhr.onerror = () => {
      xhrs.delete(xhr);
      reject(new ObitoXError("NETWORK_ERROR", `Storage could not be reached (${method}).`));
    };
    xhr.onabort = () => {
      xhrs.delete(xhr);
      reject(new ObitoXError("ABORTED", "The upload was stopped."));
    };
    xhrs.add(xhr);
    xhr.send(body);
  });
}

function storageError(response) {
  const code = /<Code>([^<]*)<\/Code>/.exec(response.text)?.[1] || `HTTP_${response.status}`;
  const message = /<Message>([^<]*)<\/Message>/.exec(response.text)?.[1] || "Storage refused the upload.";
  return new ObitoXError("STORAGE_REFUSED", `${message} (${code})`, { code }, response.status);
}

function isExpired(response) {
  return response.status === 403 && /Request has expired/i.test(response.text);
}

async function pool(items, concurrency, work) {
  let next = 0;
  const runners = Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, async () => {
    while (next < items.length) {
      const index = next++;
      await work(items[index], index);
    }
  });
  await Promise.all(runners);
}

/** A call's `validation` (the client's rule names, sizes in bytes) as the server's
 *  `validation` object, so the server tightens its own rules the same way. */
function serverValidation(rules) {
  if (!rules) return undefined;
  const out = {};
  if (rules.maxSize != null) out.maxSizeMB = rules.maxSize / (1024 * 1024);
  if (rules.minSize != null) out.minSizeKB = rules.minSize / 1024;
  if (rules.allowedTypes?.length) out.allowedTypes = rules.allowedTypes;
  if (rules.allowedExtensions?.length) out.allowedExtensions = rules.allowedExtensions;
  if (rules.blockExecutables != null) out.blockExecutables = rules.blockExecutables;
  return Object.keys(out).length ? out : undefined;
}

class Client {
  constructor({ endpoint = "/obitox", headers = {}, rules = {}, storage } = {}) {
    this.endpoint = endpoint.replace(/\/+$/, "");
    this.headers = headers;
    this.rules = { blockExecutables: true, ...rules };
    this.storage = storage ?? globalThis.localStorage;
    this.xhrs = new Set();
    this.uploads = new Set();
  }

  /** Call a JSON route; a non-2xx answer throws the server's error. */
  async api(method, path, body) {
    const init = { method, headers: { ...this.headers }, credentials: "same-origin" };
    if (method !== "GET" && method !== "DELETE") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body ?? {});
    }
    let response;
    try {
      response = await fetch(this.endpoint + path, init);
    } catch (error) {
      throw new ObitoXError("NETWORK_ERROR", `The server could not be reached: ${error.message}`);
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new ObitoXError(
        data.error || `HTTP_${response.status}`,
        data.message || response.statusText,
        data.details || {},
        response.status,
      );
    }
    return data;
  }

  /** The server's checks that can run before any request: size, type, extension,
   *  executables (by name and by the first bytes). Throws an ObitoXError with the code
   *  the server would answer. */
  async check(file, rules = {}) {
    const r = { ...this.rules, ...rules };
    if (r.maxSize != null && file.size > r.maxSize) {
      throw new ObitoXError("FILE_TOO_LARGE", `size ${file.size} exceeds the limit (${r.maxSize})`, {
        field: "size",
        limit: r.maxSize,
        actual: file.size,
      });
    }
    if (r.minSize != null && file.size < r.minSize) {
      throw new ObitoXError("VALIDATION_FAILED", `size ${file.size} is below the minimum (${r.minSize})`, {
        field: "size",
        reason: "too_small",
      });
    }
    const type = file.type || "application/octet-stream";
    if (r.allowedTypes?.length && !r.allowedTypes.some((p) => typeMatches(p, type))) {
      throw new ObitoXError("VALIDATION_FAILED", `content type '${type}' is not allowed`, {
        field: "contentType",
        reason: "type_not_allowed",
        allowed: r.allowedTypes,
      });
    }
    const ext = extensionOf(file.name);
    const allowed = (r.allowedExtensions || []).map((e) => e.replace(/^\./, "").toLowerCase());
    if (r.blockExecutables && DANGEROUS_EXTENSIONS.has(ext)) {
      throw new ObitoXError(
        "VALIDATION_FAILED",
        `filename '${file.name.slice(0, 100)}' has an executable extension, which is not accepted`,
        { field: "filename", reason: "dangerous_extension" },
      );
    }
    if (allowed.length && !allowed.includes(ext)) {
      throw new ObitoXError("VALIDATION_FAILED", `extension '${ext}' is not allowed`, {
        field: "filename",
        reason: "extension_not_allowed",
        allowed,
      });
    }
    if (r.blockExecutables && file.size > 0) {
      const head = new Uint8Array(await file.slice(0, 64).arrayBuffer());
      const program = sniffExecutable(head);
      if (program) {
        throw new ObitoXError("VALIDATION_FAILED", `the file is ${program}, which is not accepted`, {
          field: "content",
          reason: "dangerous_content",
        });
      }
    }
  }

  /** Upload small files: one batch call signs them all, the PUTs run in parallel and
   *  each finished file is completed (verified) by the server. Resolves to one entry per
   *  file, in order: `{file, result}` or `{file, error}`; never rejects for one file. */
  async uploadFiles(
    files,
    { concurrency = 4, onProgress, onFileDone, validation, metadata, profile } = {},
  ) {
    files = Array.from(files);
    const outcomes = files.map((file) => ({ file, result: null, error: null }));
    const loaded = files.map(() => 0);
    const total = files.reduce((sum, f) => sum + f.size, 0);
    const progress = () =>
      onProgress?.({ loaded: loaded.reduce((a, b) => a + b, 0), total, perFile: loaded.slice() });
    const fail = (index, error) => {
      outcomes[index].error = error;
      onFileDone?.(files[index], null, error);
    };
    const wanted = [];
    for (const [index, file] of files.entries()) {
      try {
        await this.check(file, validation);
        wanted.push(index);
      } catch (error) {
        fail(index, error);
      }
    }
    if (!wanted.length) return outcomes;
    const body = {
      files: wanted.map((i) => ({
        filename: files[i].name,
        contentType: files[i].type || "application/octet-stream",
        size: files[i].size,
        ...(metadata ? { metadata } : {}),
      })),
      ...(serverValidation(validation) ? { validation: serverValidation(validation) } : {}),
      ...(profile ? { profile } : {}),
    };
    let signed;
    try {
      signed = await this.api("POST", "/uploads/batch", body);
    } catch (error) {
      for (const i of wanted) fail(i, error);
      return outcomes;
    }
    for (const e of signed.errors) {
      fail(wanted[e.index], new ObitoXError(e.error, e.message, e.details, 422));
    }
    await pool(signed.uploads, concurrency, async (upload) => {
      const index = wanted[upload.index];
      const file = files[index];
      try {
        const sent = await sendBytes(upload.url, {
          headers: upload.headers,
          body: file,
          xhrs: this.xhrs,
          onProgress: (bytes) => {
            loaded[index] = bytes;
            progress();
          },
        });
        if (sent.status < 200 || sent.status >= 300) throw storageError(sent);
        loaded[index] = file.size;
        progress();
        const result = await this.api("POST", `/uploads/${upload.uploadId}/complete`, {});
        outcomes[index].result = result;
        onFileDone?.(file, result, null);
      } catch (error) {
        fail(index, error);
      }
    });
    return outcomes;
  }

  /** A resumable multipart upload of `file`; see ResumableUpload. */
  resumableUpload(file, options = {}) {
    const upload = new ResumableUpload(this, file, options);
    this.uploads.add(upload);
    upload.done.then(
      () => this.uploads.delete(upload),
      () => this.uploads.delete(upload),
    );
    return upload;
  }

  /** The resume token kept for `file` by an earlier page, or null. */
  resumeToken(file) {
    return this.storage?.getItem(resumeKey(file)) ?? null;
  }

  /** Stop every transfer of this client; resumable uploads are aborted on the server. */
  abort() {
    for (const upload of [...this.uploads]) upload.abort();
    for (const xhr of [...this.xhrs]) xhr.abort();
  }
}

/** A multipart upload that survives pauses and page reloads.
 *
 *  Thenable: `await upload` gives the server's completion answer. The resume token
 *  (the server's uploadId) is kept in localStorage under the file's name, size and
 *  lastModified; a later `resumableUpload` of the same file asks the server which parts
 *  storage holds (`GET /multipart/<id>`) and sends only the others. */
export class ResumableUpload {
  constructor(
    client,
    file,
    { partSize, concurrency = 3, onProgress, metadata, validation, profile } = {},
  ) {
    this.client = client;
    this.file = file;
    this.options = { partSize, concurrency, onProgress, metadata, validation, profile };
    this.uploadId = null;
    this.resumed = false;
    this.skippedParts = [];
    this.sentParts = [];
    this.xhrs = new Set();
    this._paused = null;
    this._aborted = false;
    this.done = this._run();
  }

  then(onResolved, onRejected) {
    return this.done.then(onResolved, onRejected);
  }

  /** Stop sending; parts already in storage stay there. */
  pause() {
    if (this._paused || this._aborted) return;
    let release;
    this._paused = { promise: new Promise((r) => (release = r)), release };
    for (const xhr of [...this.xhrs]) xhr.abort();
  }

  /** Go on after pause(): asks the server which parts storage holds, sends the rest. */
  resume() {
    const paused = this._paused;
    this._paused = null;
    paused?.release();
  }

  /** Abort: in-flight parts stop, the server aborts the upload and the token is dropped. */
  abort() {
    if (this._aborted) return;
    this._aborted = true;
    for (const xhr of [...this.xhrs]) xhr.abort();
    this._forget();
    this.resume();
    if (this.uploadId) this.client.api("DELETE", `/multipart/${this.uploadId}`).catch(() => {});
  }

  _forget() {
    this.client.storage?.removeItem(resumeKey(this.file));
  }

  async _run() {
    await this.client.check(this.file, this.options.validation);
    for (;;) {
      try {
        return await this._attempt();
      } catch (error) {
        if (this._aborted) throw new ObitoXError("ABORTED", "The upload was aborted.");
        if (!this._paused) throw error;
        await this._paused.promise;
        if (this._aborted) throw new ObitoXError("ABORTED", "The upload was aborted.");
      }
    }
  }

  async _view() {
    const token = this.uploadId ?? this.client.resumeToken(this.file);
    if (token) {
      try {
        const view = await this.client.api("GET", `/multipart/${token}`);
        if (this.uploadId == null) this.resumed = true;
        this.uploadId = token;
        return view;
      } catch (error) {
        // Gone, aborted or expired on the server: start over rather than fail.
        if (![404, 409, 410].includes(error.status)) throw error;
        this._forget();
        this.uploadId = null;
      }
    }
    const { file, options } = this;
    const created = await this.client.api("POST", "/multipart", {
      filename: file.name,
      contentType: file.type || "application/octet-stream",
      size: file.size,
      ...(options.partSize ? { partSize: Math.max(options.partSize, MIN_PART_SIZE) } : {}),
      ...(options.metadata ? { metadata: options.metadata } : {}),
      ...(options.profile ? { profile: options.profile } : {}),
      ...(serverValidation(options.validation)
        ? { validation: serverValidation(options.validation) }
        : {}),
    });
    this.uploadId = created.uploadId;
    this.client.storage?.setItem(resumeKey(file), created.uploadId);
    return this.client.api("GET", `/multipart/${created.uploadId}`);
  }

  async _attempt() {
    const view = await this._view();
    if (view.status === "completed") {
      this._forget();
      return this.client.api("POST", `/multipart/${this.uploadId}/complete`, {});
    }
    const { partSize, remainingParts } = view;
    if (this.resumed && !this.skippedParts.length) {
      this.skippedParts = view.uploadedParts.map((p) => p.partNumber);
    }
    let done = view.uploadedBytes;
    const inFlight = new Map();
    const report = () => {
      let loaded = done;
      for (const bytes of inFlight.values()) loaded += bytes;
      this.options.onProgress?.({
        loaded,
        total: this.file.size,
        percent: this.file.size ? (100 * loaded) / this.file.size : 100,
        uploadId: this.uploadId,
      });
    };
    report();
    const urls = new Map();
    const sign = async (numbers) => {
      const { parts } = await this.client.api("POST", `/multipart/${this.uploadId}/parts`, {
        partNumbers: numbers,
      });
      for (const part of parts) urls.set(part.partNumber, part);
    };
    for (let i = 0; i < remainingParts.length; i += MAX_PARTS_PER_CALL) {
      await sign(remainingParts.slice(i, i + MAX_PARTS_PER_CALL));
    }
    await pool(remainingParts, this.options.concurrency, async (number) => {
      if (this._paused || this._aborted) throw new ObitoXError("ABORTED", "Paused.");
      const start = (number - 1) * partSize;
      const body = this.file.slice(start, Math.min(start + partSize, this.file.size));
      for (let attempt = 0; ; attempt++) {
        const part = urls.get(number);
        const sent = await sendBytes(part.url, {
          headers: part.headers,
          body,
          xhrs: this.xhrs,
          onProgress: (bytes) => {
            inFlight.set(number, bytes);
            report();
          },
        }).finally(() => inFlight.delete(number));
        if (sent.status >= 200 && sent.status < 300) break;
        if (isExpired(sent) && attempt < 2) {
          await sign([number]); // the URL outlived its signature: a fresh one
          continue;
        }
        throw storageError(sent);
      }
      done += body.size;
      this.sentParts.push(number);
      report();
    });
    const result = await this.client.api("POST", `/multipart/${this.uploadId}/complete`, {});
    this._forget();
    return result;
  }
}

/** `ObitoX({endpoint, headers, rules})`: a client for the routes under `endpoint`. */
export function ObitoX(options = {}) {
  return new Client(options);
}

export default ObitoX;
