// obitox.js: the browser client of flask-obitox. A plain ES module, no build step:
//
//   import { ObitoX } from "/obitox/static/obitox.js";
//   const ox = ObitoX({ endpoint: "/obitox" });
//   await ox.uploadFiles(input.files, { onProgress, onFileDone, group: "holiday" });
//   const upload = ox.resumableUpload(bigFile, { onProgress });  // pause(), resume(), abort()
//   const result = await upload;
//   const stream = ox.events({ groupId, onEvent });               // stream.close()
//
// Bytes go straight from the browser to storage with the URLs the server signed; the
// server is asked only to sign, to say which parts storage holds, and to complete. A
// failed PUT is retried after `retryDelays`; progress is reported to the server (for
// its listings and live events), never trusted by it.

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
/** Waits before each retry of a failed PUT (Uppy's `retryDelays`): four retries. */
const RETRY_DELAYS = [0, 1000, 3000, 5000];
/** The Python client's multipart threshold (the server's OBITOX_MULTIPART_THRESHOLD). */
const MULTIPART_THRESHOLD = 100 * MiB;
/** Progress reports to the server: at most one a second per file (DESIGN §12). */
const PROGRESS_INTERVAL = 1000;

/** The server's `networkType` values (flask_obitox.config.NETWORK_TYPES). */
export const NETWORK_TYPES = ["slow-2g", "2g", "3g", "4g", "wifi", "unknown"];

/** Event types of `GET /events` (DESIGN §13), each an EventSource event name. */
export const EVENT_TYPES = [
  "upload.signed", "upload.progress", "multipart.initiated", "upload.completed",
  "upload.rejected", "upload.aborted", "upload.expired", "upload.deleted",
  "group.created", "group.progress", "group.completed", "group.failed",
  "group.cancelled", "processing.completed", "processing.failed", "upload.ready",
];

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

/** The connection's `networkType` for the server's URL expiry, from the Network
 *  Information API: a measured slow class (`slow-2g`, `2g`, `3g`) wins, then a Wi-Fi or
 *  Ethernet link (`wifi`), then `4g`; `unknown` without the API (Firefox, Safari). */
export function networkType(connection = globalThis.navigator?.connection) {
  const effective = connection?.effectiveType;
  if (["slow-2g", "2g", "3g"].includes(effective)) return effective;
  if (["wifi", "ethernet"].includes(connection?.type)) return "wifi";
  return effective === "4g" ? "4g" : "unknown";
}

/** Types browsers leave empty or spell differently, by extension and by alias (the
 *  server folds the same aliases: flask_obitox.validation.rules._ALIASES). */
const TYPE_OF_EXTENSION = {
  png: "image/png", apng: "image/apng", jpg: "image/jpeg", jpeg: "image/jpeg",
  jfif: "image/jpeg", gif: "image/gif", webp: "image/webp", avif: "image/avif",
  heic: "image/heic", heif: "image/heif", pdf: "application/pdf", zip: "application/zip",
  gz: "application/gzip", bz2: "application/x-bzip2", xz: "application/x-xz",
  "7z": "application/x-7z-compressed", rar: "application/vnd.rar", mp4: "video/mp4",
  m4v: "video/x-m4v", m4a: "audio/mp4", mov: "video/quicktime", webm: "video/webm",
  mkv: "video/x-matroska", ogg: "audio/ogg", ogv: "video/ogg", opus: "audio/opus",
  wav: "audio/wav", epub: "application/epub+zip", txt: "text/plain", csv: "text/csv",
  json: "application/json",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  pptx: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
  odt: "application/vnd.oasis.opendocument.text",
  ods: "application/vnd.oasis.opendocument.spreadsheet",
};
const TYPE_ALIASES = {
  "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/jpe": "image/jpeg",
  "image/x-png": "image/png", "application/x-pdf": "application/pdf",
  "application/x-zip-compressed": "application/zip", "application/x-zip": "application/zip",
  "application/x-gzip": "application/gzip", "application/x-rar-compressed": "application/vnd.rar",
  "application/x-rar": "application/vnd.rar", "audio/x-wav": "audio/wav",
  "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav", "audio/x-m4a": "audio/mp4",
  "audio/m4a": "audio/mp4",
};

/** The type sent for `file`: what the browser says, else what its extension says. */
export function contentTypeOf(file) {
  return file.type || TYPE_OF_EXTENSION[extensionOf(file.name)] || "application/octet-stream";
}

function normalizeType(type) {
  const base = type.split(";")[0].trim().toLowerCase();
  return TYPE_ALIASES[base] ?? base;
}

/** Signatures of the types whose files always carry one (the server's strict
 *  families, flask_obitox.validation.content._STRICT_FAMILIES): every puremagic header
 *  signature of 3 bytes or more for the family, as [offset, hex]. The server counts any
 *  of them as the family, so the client refuses only a head that matches none
 *  (tests/test_obitox_js.py checks each against the server's verify_content). */
const SIGNATURES = {
  "7z": [[0, "377a5c3237345c3235375c3034375c303334"], [0, "377abcaf271c"]],
  bzip2: [[0, "425a68"]],
  ebml: [[0, "1a45dfa3"], [24, "6d6174726f736b61"], [31, "6d6174726f736b61"]],
  gif: [[0, "474946383761"], [0, "474946383961"]],
  gzip: [[0, "1f8b08"], [0, "5c3033375c323133"]],
  isobmff: [
    [0, "0000001466747970336770"], [0, "000000146674797069736f6d"],
    [0, "000000146674797071742020"], [0, "000000186674797033677035"],
    [0, "00000018667479706d703432"], [0, "0000001c66747970"], [0, "0000002066747970336770"],
    // "ftyp" with any brand, and the QuickTime atoms free, mdat, moov, pnot, skip, wide.
    [4, "66747970"], [4, "66726565"], [4, "6d646174"], [4, "6d6f6f76"], [4, "706e6f74"],
    [4, "736b6970"], [4, "77696465"], [20, "69736f32617663316d7034"],
  ],
  jpeg: [[0, "0000000c6a502020"], [0, "5c3337375c3333305c333737"], [0, "ffd8ff"]],
  ogg: [[0, "4f676753"]],
  pdf: [[0, "0d0a25504446"], [0, "25504446"]],
  png: [[0, "5c783839504e47"], [0, "89504e470d0a1a0a"]],
  rar: [[0, "52617221"]],
  wav: [[0, "52494646"], [8, "57415620"], [8, "57415645"]],
  webp: [[0, "52494646"]],
  xz: [[0, "5c7866645c7833375c7837615c7835385c7835615c783030"], [0, "fd377a585a00"]],
  zip: [
    [0, "3c3f786d6c2076657273696f6e3d22312e302220656e636f64696e673d225554462d38223f3e0a3c46696374696f6e426f6f6b"],
    [0, "504b0304"], [0, "504b0506"], [0, "504b0708"], [0, "504b5c3030335c303034"],
    [0, "5f27a889"], [30, "504b4c495445"],
    [30, "6d696d65747970656170706c69636174696f6e2f657075622b7a6970"],
    [73, "70726573656e746174696f6e"], [73, "7370726561647368656574"], [73, "74657874"],
    [526, "504b537058"],
  ],
};
const at = (bytes, offset, ...sig) => sig.every((b, i) => bytes[offset + i] === b);
const ascii = (text) => Array.from(text, (c) => c.charCodeAt(0));
for (const rows of Object.values(SIGNATURES)) {
  for (const row of rows) row[1] = row[1].match(/../g).map((h) => parseInt(h, 16));
}

function hasSignature(head, family) {
  // PDF readers accept "%PDF-" anywhere in the first 1024 bytes, and so does the server.
  if (family === "pdf" && latin1(head.slice(0, 1024)).includes("%PDF-")) return true;
  return SIGNATURES[family].some(([offset, bytes]) => at(head, offset, ...bytes));
}

function latin1(bytes) {
  return Array.from(bytes, (b) => String.fromCharCode(b)).join("");
}

const FAMILY_OF = {
  "image/png": "png", "image/apng": "png", "image/jpeg": "jpeg", "image/gif": "gif",
  "image/webp": "webp", "application/pdf": "pdf", "application/zip": "zip",
  "application/epub+zip": "zip", "application/java-archive": "zip",
  "application/vnd.android.package-archive": "zip", "application/gzip": "gzip",
  "application/x-bzip2": "bzip2", "application/x-xz": "xz",
  "application/x-7z-compressed": "7z", "application/vnd.rar": "rar",
  "video/mp4": "isobmff", "audio/mp4": "isobmff", "video/x-m4v": "isobmff",
  "video/quicktime": "isobmff", "video/3gpp": "isobmff", "video/3gpp2": "isobmff",
  "audio/3gpp": "isobmff", "image/heic": "isobmff", "image/heif": "isobmff",
  "image/heic-sequence": "isobmff", "image/heif-sequence": "isobmff", "image/avif": "isobmff",
  "video/webm": "ebml", "audio/webm": "ebml", "video/x-matroska": "ebml",
  "audio/x-matroska": "ebml", "application/ogg": "ogg", "audio/ogg": "ogg",
  "video/ogg": "ogg", "audio/opus": "ogg", "audio/wav": "wav",
};
const ZIP_PREFIXES = [
  "application/vnd.openxmlformats-officedocument.", "application/vnd.oasis.opendocument.",
  "application/vnd.ms-word.", "application/vnd.ms-excel.", "application/vnd.ms-powerpoint.",
];

function familyOf(type) {
  const family = FAMILY_OF[type];
  if (family) return family;
  return ZIP_PREFIXES.some((p) => type.startsWith(p)) || type.endsWith("+zip") ? "zip" : null;
}

/** What the first bytes say the file is, when it is a program: the server's
 *  signatures (PE/COFF, ELF, Mach-O, Java class, `#!` scripts), which it checks again
 *  after upload and deletes what matches. */
function sniffExecutable(bytes) {
  if (at(bytes, 0, 0x4d, 0x5a)) return bytes.slice(2, 64).includes(0) ? "a Windows program" : null;
  if (at(bytes, 0, 0x7f, ...ascii("ELF"))) return "an ELF program";
  for (const magic of [[0xfe, 0xed, 0xfa, 0xce], [0xfe, 0xed, 0xfa, 0xcf],
                       [0xce, 0xfa, 0xed, 0xfe], [0xcf, 0xfa, 0xed, 0xfe]]) {
    if (at(bytes, 0, ...magic)) return "a Mach-O program";
  }
  if (at(bytes, 0, 0xca, 0xfe, 0xba, 0xbe) && bytes.length >= 8) {
    const count = new DataView(bytes.buffer, bytes.byteOffset).getUint32(4);
    return count < 45 ? "a Mach-O program" : "a Java class";
  }
  // "#!/bin/sh", "#! /usr/bin/env python"; not "#![allow(...)]" (Rust).
  if (/^#![ \t]*\//.test(latin1(bytes.slice(0, 64)))) return "a script";
  return null;
}

/** Why the first bytes `head` of a file declared as `type` would be refused by the
 *  server's content check, or null. Only what the server surely refuses: programs (with
 *  `blockExecutables`), and types that always carry a signature without it. */
export function contentRefusal(head, type, blockExecutables = true) {
  const program = sniffExecutable(head);
  if (program && blockExecutables) return `content is ${program}, which is not accepted`;
  const declared = normalizeType(type);
  const family = familyOf(declared);
  if (family && SIGNATURES[family] && !hasSignature(head, family)) {
    return head.length
      ? `content does not start with the signature of ${declared}`
      : `content is empty, not ${declared}`;
  }
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

/** The error of a transfer stopped by pause(), abort() or the client's abort(). */
const stopped = () => new ObitoXError("ABORTED", "The upload was stopped.");

/** Wait `ms`; rejects with ABORTED as soon as `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(stopped());
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(stopped());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Storage answers worth another try: its own failures (5xx) and "slow down" (429, 408). */
function retryable(response) {
  return response.status >= 500 || response.status === 429 || response.status === 408;
}

/** One PUT of `body` to a signed `target` ({url, headers}), retried like Uppy's
 *  `retryDelays`: after a network error or a retryable answer it waits `retryDelays[n]`
 *  ms and sends again, once per delay. An expired URL (403 "Request has expired") is
 *  signed again by `resign` once and sent at once. Any other answer (a 4xx: the request
 *  itself is wrong, e.g. a size or a type storage refuses) fails at once. */
async function transfer({ target, resign, body, xhrs, onProgress, onRetry, retryDelays, signal }) {
  let retries = 0;
  let resigned = false;
  for (;;) {
    let response = null;
    let failure = null;
    try {
      response = await sendBytes(target.url, { headers: target.headers, body, xhrs, onProgress });
      if (response.status >= 200 && response.status < 300) return response;
    } catch (error) {
      if (error.code === "ABORTED") throw error;
      failure = error;
    }
    if (response && isExpired(response) && resign && !resigned) {
      resigned = true;
      target = await resign();
      continue;
    }
    const error = failure ?? storageError(response);
    if ((response && !retryable(response)) || retries >= retryDelays.length) throw error;
    onProgress?.(0); // the failed attempt's bytes go again
    onRetry?.(error);
    await sleep(retryDelays[retries++], signal);
  }
}

/** Reports one upload's progress to the server (`POST /uploads/<id>/progress`) for its
 *  listings and live events: at most one call every `interval` ms (a finished part is
 *  reported at once), one call in flight, the latest figures always sent last. The
 *  server never trusts these reports, so a failed one is dropped, never the upload: a
 *  settled upload (409, 410, 404) is not reported again, and a server without the route
 *  is not asked again by this client. */
class ProgressReporter {
  constructor(client, uploadId) {
    this.client = client;
    this.uploadId = uploadId;
    this.bytes = 0;
    this.parts = new Map();
    this.dirty = false;
    this.last = -Infinity;
    this.timer = null;
    this.sending = null;
    this.done = false;
  }

  /** New figures: `bytes` uploaded in all (never less than before), and the parts whose
   *  status changed (`{partNumber, status, etag?}`). `urgent` skips the wait. */
  update(bytes, parts = [], urgent = false) {
    if (this.done || !this.client.reportProgress) return;
    this.bytes = Math.max(this.bytes, bytes);
    for (const part of parts) this.parts.set(part.partNumber, part);
    this.dirty = true;
    if (this.sending) return; // its end sends what came meanwhile
    const wait = urgent ? 0 : this.last + this.client.progressInterval - Date.now();
    if (wait <= 0) {
      clearTimeout(this.timer);
      this.timer = null;
      this._send();
    } else {
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this._send();
      }, wait);
    }
  }

  stop() {
    this.done = true;
    clearTimeout(this.timer);
  }

  _send() {
    if (!this.dirty || this.done || !this.client.reportProgress) return;
    const parts = [...this.parts.values()];
    const body = { uploadedBytes: this.bytes, ...(parts.length ? { parts } : {}) };
    this.parts.clear();
    this.dirty = false;
    this.last = Date.now();
    this.sending = this.client
      .api("POST", `/uploads/${this.uploadId}/progress`, body)
      .catch((error) => {
        if ([409, 410].includes(error.status) || error.code === "UPLOAD_NOT_FOUND") {
          this.stop();
        } else if ([404, 405].includes(error.status)) {
          this.client.reportProgress = false; // an older server: no such route
        } else {
          for (const part of parts) if (!this.parts.has(part.partNumber)) this.parts.set(part.partNumber, part);
          this.dirty = true;
        }
      })
      .finally(() => {
        this.sending = null;
        if (this.dirty) this.update(this.bytes);
      });
  }
}

/** `?name=value&...` of the parameters that are set, or "". */
function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value != null) search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
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
  constructor({
    endpoint = "/obitox",
    headers = {},
    rules = {},
    storage,
    retryDelays = RETRY_DELAYS,
    multipartThreshold = MULTIPART_THRESHOLD,
    networkType: fixedNetworkType,
    reportProgress = true,
    progressInterval = PROGRESS_INTERVAL,
  } = {}) {
    this.endpoint = endpoint.replace(/\/+$/, "");
    this.headers = headers;
    this.rules = { blockExecutables: true, allowEmpty: false, ...rules };
    this.storage = storage ?? globalThis.localStorage;
    this.retryDelays = retryDelays;
    this.multipartThreshold = multipartThreshold;
    this.fixedNetworkType = fixedNetworkType;
    this.reportProgress = reportProgress;
    this.progressInterval = progressInterval;
    this.xhrs = new Set();
    this.resumables = new Set();
    this.stopper = new AbortController();
  }

  /** The `networkType` sent with every create and signing call: the client's option,
   *  else what the browser says now (it changes as the user moves). */
  networkType() {
    return this.fixedNetworkType ?? networkType();
  }

  /** Call a JSON route; a non-2xx answer throws the server's error. */
  async api(method, path, body) {
    const init = {
      method,
      headers: { Accept: "application/json", ...this.headers },
      credentials: "same-origin",
    };
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

  /** The server's checks that can run before any request: size (an empty file too,
   *  unless `allowEmpty`), type, extension, executables by name, and the first bytes
   *  against the declared type (programs, and types that always carry a signature
   *  without it). Throws an ObitoXError with the code the server would answer. */
  async check(file, rules = {}) {
    const r = { ...this.rules, ...rules };
    if (r.maxSize != null && file.size > r.maxSize) {
      throw new ObitoXError("FILE_TOO_LARGE", `size ${file.size} exceeds the limit (${r.maxSize})`, {
        field: "size",
        limit: r.maxSize,
        actual: file.size,
      });
    }
    const minSize = Math.max(r.minSize ?? 0, r.allowEmpty ? 0 : 1);
    if (file.size < minSize) {
      throw new ObitoXError("VALIDATION_FAILED", `size ${file.size} is below the minimum (${minSize})`, {
        field: "size",
        reason: "too_small",
        limit: minSize,
        actual: file.size,
      });
    }
    const type = contentTypeOf(file);
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
    // The server reads the same 4 KiB after upload (flask_obitox.validation.HEAD_BYTES).
    const head = new Uint8Array(await file.slice(0, 4096).arrayBuffer());
    const reason = contentRefusal(head, type, r.blockExecutables);
    if (reason) {
      throw new ObitoXError("CONTENT_MISMATCH", `The file was refused: ${reason}.`, {
        field: "content",
        reason,
      });
    }
  }

  /** Upload files, each the way its size suits: below `multipartThreshold` one batch
   *  call signs them all, the PUTs run in parallel and each finished file is completed
   *  (verified) by the server; from it (or when the file has a resume token) a
   *  resumable multipart upload, one file at a time. Resolves to one entry per file,
   *  in order: `{file, result}` or `{file, error}`; never rejects for one file. With
   *  `group` (a name, or `{name, description, metadata}`) the files form a new group,
   *  sealed once every file joined; with `groupId` they join an open one. The result
   *  array's `groupId` names it. `profile` names an upload profile of the server's
   *  `OBITOX_PROFILES`. */
  async uploadFiles(files, options = {}) {
    const {
      concurrency = 4,
      onProgress,
      onFileDone,
      validation,
      metadata,
      group,
      groupId,
      profile,
      multipartThreshold = this.multipartThreshold,
      partSize,
      partConcurrency = 3,
      retryDelays = this.retryDelays,
    } = options;
    files = Array.from(files);
    const outcomes = files.map((file) => ({ file, result: null, error: null }));
    outcomes.groupId = groupId ?? null;
    const loaded = files.map(() => 0);
    const total = files.reduce((sum, f) => sum + f.size, 0);
    const progress = () =>
      onProgress?.({ loaded: loaded.reduce((a, b) => a + b, 0), total, perFile: loaded.slice() });
    const fail = (index, error) => {
      outcomes[index].error = error;
      onFileDone?.(files[index], null, error);
    };
    const succeed = (index, result) => {
      outcomes[index].result = result;
      onFileDone?.(files[index], result, null);
    };
    const small = [];
    const large = [];
    for (const [index, file] of files.entries()) {
      try {
        await this.check(file, validation);
      } catch (error) {
        fail(index, error);
        continue;
      }
      const resumable = file.size >= multipartThreshold || this.resumeToken(file) !== null;
      (resumable ? large : small).push(index);
    }
    if (!small.length && !large.length) return outcomes;

    // A batch alone makes its group in the same call (`group:{name}`); multipart files
    // join one made first, which is sealed once every file joined.
    let newGroup = null;
    if (group != null && groupId == null && large.length) {
      try {
        newGroup = await this.api("POST", "/groups", typeof group === "string" ? { name: group } : group);
      } catch (error) {
        for (const index of [...small, ...large]) fail(index, error);
        return outcomes;
      }
      outcomes.groupId = newGroup.groupId;
    }
    const joined = outcomes.groupId;
    const batchGroup = group != null && joined == null ? group : null;

    const sending = { loaded, progress, retryDelays, fail, succeed, outcomes };
    const signed = this._signBatch(files, small, {
      validation,
      metadata,
      joined,
      batchGroup,
      profile,
      ...sending,
    });
    let allJoined;
    const largeJoined = new Promise((resolve) => (allJoined = resolve));
    const largeDone = (async () => {
      if (!large.length) allJoined();
      for (const [n, index] of large.entries()) {
        const upload = this.resumableUpload(files[index], {
          partSize,
          concurrency: partConcurrency,
          metadata,
          validation,
          groupId: joined ?? undefined,
          profile,
          retryDelays,
          onProgress: ({ loaded: bytes }) => {
            loaded[index] = bytes;
            progress();
          },
        });
        if (n === large.length - 1) upload.created.then(allJoined);
        try {
          succeed(index, await upload);
        } catch (error) {
          fail(index, error);
        }
      }
    })();
    const sealed = newGroup
      ? Promise.all([signed, largeJoined]).then(() =>
          this.api("POST", `/groups/${newGroup.groupId}/seal`, {}).catch((error) => {
            outcomes.groupError = error;
          }),
        )
      : null;
    await Promise.all([this._putBatch(await signed, files, concurrency, sending), largeDone, sealed]);
    return outcomes;
  }

  /** `POST /uploads/batch` for the files at `indices`; marks each refused file. */
  async _signBatch(files, indices, { validation, metadata, joined, batchGroup, profile, fail, outcomes }) {
    if (!indices.length) return null;
    const rules = serverValidation(validation);
    const body = {
      files: indices.map((i) => ({
        filename: files[i].name,
        contentType: contentTypeOf(files[i]),
        size: files[i].size,
        ...(metadata ? { metadata } : {}),
      })),
      networkType: this.networkType(),
      ...(rules ? { validation: rules } : {}),
      ...(joined ? { groupId: joined } : {}),
      ...(batchGroup ? { group: typeof batchGroup === "string" ? { name: batchGroup } : batchGroup } : {}),
      ...(profile ? { profile } : {}),
    };
    let signed;
    try {
      signed = await this.api("POST", "/uploads/batch", body);
    } catch (error) {
      for (const i of indices) fail(i, error);
      return null;
    }
    if (signed.groupId) outcomes.groupId = signed.groupId;
    for (const e of signed.errors) {
      fail(indices[e.index], new ObitoXError(e.error, e.message, e.details, 422));
    }
    return { indices, uploads: signed.uploads };
  }

  /** The PUTs of a signed batch, in parallel, each retried and then completed. */
  async _putBatch(signed, files, concurrency, { loaded, progress, retryDelays, fail, succeed }) {
    if (!signed) return;
    await pool(signed.uploads, concurrency, async (upload) => {
      const index = signed.indices[upload.index];
      const file = files[index];
      const reporter = new ProgressReporter(this, upload.uploadId);
      try {
        await transfer({
          target: upload,
          body: file,
          xhrs: this.xhrs,
          retryDelays,
          signal: this.stopper.signal,
          onProgress: (bytes) => {
            loaded[index] = bytes;
            progress();
            reporter.update(bytes);
          },
        });
        reporter.stop();
        loaded[index] = file.size;
        progress();
        succeed(index, await this.api("POST", `/uploads/${upload.uploadId}/complete`, {}));
      } catch (error) {
        reporter.stop();
        fail(index, error);
      }
    });
  }

  /** A resumable multipart upload of `file`; see ResumableUpload. */
  resumableUpload(file, options = {}) {
    const upload = new ResumableUpload(this, file, options);
    this.resumables.add(upload);
    upload.done.then(
      () => this.resumables.delete(upload),
      () => this.resumables.delete(upload),
    );
    return upload;
  }

  /** The resume token kept for `file` by an earlier page, or null. */
  resumeToken(file) {
    return this.storage?.getItem(resumeKey(file)) ?? null;
  }

  /** The caller's events (`GET /events`, DESIGN §13), optionally of one group or one
   *  upload, over EventSource: `onEvent({type, timestamp, data}, message)` for each.
   *  EventSource reconnects by itself and sends `Last-Event-ID`, so the server replays
   *  what was missed. It sends cookies but no custom headers: the server must know the
   *  caller by its cookies (`withCredentials` for another origin). Returns
   *  `{source, close()}`. */
  events({ groupId, uploadId, onEvent, onError, withCredentials = false, types = [] } = {}) {
    const source = new EventSource(`${this.endpoint}/events${query({ groupId, uploadId })}`, {
      withCredentials,
    });
    const deliver = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return; // not an event body
      }
      onEvent?.(event, message);
    };
    // EventSource hands a named event only to listeners of that name.
    for (const type of new Set([...EVENT_TYPES, ...types, "message"])) {
      source.addEventListener(type, deliver);
    }
    if (onError) source.addEventListener("error", onError);
    return { source, close: () => source.close() };
  }

  // -- managing uploads and groups (DESIGN §11, what the upload manager page uses) ----

  /** The caller's uploads, newest first: `{uploads, nextCursor}`; pass `nextCursor`
   *  back as `cursor` for the next page. Filters: `status`, `kind`, `groupId`. */
  uploads({ status, kind, groupId, limit, cursor } = {}) {
    return this.api("GET", `/uploads${query({ status, kind, groupId, limit, cursor })}`);
  }

  /** One upload of the caller's, as every reader sees it (`GET /uploads/<id>`). */
  upload(uploadId) {
    return this.api("GET", `/uploads/${encodeURIComponent(uploadId)}`);
  }

  /** What storage holds of a multipart upload, part by part (`GET /multipart/<id>`). */
  multipartStatus(uploadId) {
    return this.api("GET", `/multipart/${encodeURIComponent(uploadId)}`);
  }

  /** Delete an upload: an open one is aborted, a completed one's object (and derived
   *  objects) deleted. Resolves to the upload, status `deleted`. */
  deleteUpload(uploadId) {
    return this.api("DELETE", `/uploads/${encodeURIComponent(uploadId)}`);
  }

  /** A short-lived download link of a completed upload: `{url, expiresAt}`
   *  (`inline` for a browser to show it rather than save it; `derived`: the key of an
   *  object a processor made of it, such as a thumbnail, instead). */
  downloadUrl(uploadId, { inline = false, derived } = {}) {
    const id = encodeURIComponent(uploadId);
    const params = query({ inline: inline ? 1 : undefined, derived });
    return this.api("GET", `/uploads/${id}/download${params}`);
  }

  /** The caller's groups, newest first: `{groups, nextCursor}`; filter: `status`. */
  groups({ status, limit, cursor } = {}) {
    return this.api("GET", `/groups${query({ status, limit, cursor })}`);
  }

  /** One group with its uploads in the order they joined (`GET /groups/<id>`). */
  group(groupId) {
    return this.api("GET", `/groups/${encodeURIComponent(groupId)}`);
  }

  /** A new, open group: `{name, description?, metadata?}` (or just a name). */
  createGroup(spec) {
    return this.api("POST", "/groups", typeof spec === "string" ? { name: spec } : spec);
  }

  /** No more members for the group; it completes once every member did. */
  sealGroup(groupId) {
    return this.api("POST", `/groups/${encodeURIComponent(groupId)}/seal`, {});
  }

  /** Abort every member not yet finished; the group is `cancelled`. */
  cancelGroup(groupId) {
    return this.api("POST", `/groups/${encodeURIComponent(groupId)}/cancel`, {});
  }

  /** Cancel the group, then delete every member's object; the group is `deleted`. */
  deleteGroup(groupId) {
    return this.api("DELETE", `/groups/${encodeURIComponent(groupId)}`);
  }

  /** Stop every transfer of this client; resumable uploads are aborted on the server. */
  abort() {
    for (const upload of [...this.resumables]) upload.abort();
    this.stopper.abort();
    this.stopper = new AbortController();
    for (const xhr of [...this.xhrs]) xhr.abort();
  }
}

/** A multipart upload that survives pauses, failed parts and page reloads.
 *
 *  Thenable: `await upload` gives the server's completion answer. The resume token
 *  (the server's uploadId) is kept in localStorage under the file's name, size and
 *  lastModified; a later `resumableUpload` of the same file asks the server which parts
 *  storage holds (`GET /multipart/<id>`) and sends only the others. `created` resolves
 *  once the server knows the upload (to its uploadId, or null when it never did). */
export class ResumableUpload {
  constructor(client, file, options = {}) {
    const { partSize, concurrency = 3, onProgress, metadata, validation, groupId, profile } = options;
    const retryDelays = options.retryDelays ?? client.retryDelays;
    this.client = client;
    this.file = file;
    this.options = { partSize, concurrency, onProgress, metadata, validation, groupId, profile, retryDelays };
    this.uploadId = null;
    this.resumed = false;
    this.skippedParts = [];
    this.sentParts = [];
    this.retriedParts = [];
    this.xhrs = new Set();
    this.reporter = null;
    this._paused = null;
    this._aborted = false;
    this._stopper = new AbortController();
    this.created = new Promise((resolve) => (this._created = resolve));
    this.done = this._run();
    this.done.then(
      () => this._created(this.uploadId),
      () => this._created(this.uploadId),
    );
  }

  then(onResolved, onRejected) {
    return this.done.then(onResolved, onRejected);
  }

  catch(onRejected) {
    return this.done.catch(onRejected);
  }

  finally(onSettled) {
    return this.done.finally(onSettled);
  }

  /** Stop sending; parts already in storage stay there. */
  pause() {
    if (this._paused || this._aborted) return;
    let release;
    this._paused = { promise: new Promise((r) => (release = r)), release };
    this._stop();
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
    this._stop();
    this.reporter?.stop();
    this._forget();
    this.resume();
    if (this.uploadId) this.client.api("DELETE", `/multipart/${this.uploadId}`).catch(() => {});
  }

  _stop() {
    this._stopper.abort();
    this._stopper = new AbortController();
    for (const xhr of [...this.xhrs]) xhr.abort();
  }

  _forget() {
    this.client.storage?.removeItem(resumeKey(this.file));
  }

  async _run() {
    await this.client.check(this.file, this.options.validation);
    for (;;) {
      try {
        const result = await this._attempt();
        this.reporter?.stop();
        return result;
      } catch (error) {
        if (this._aborted) throw new ObitoXError("ABORTED", "The upload was aborted.");
        if (!this._paused) {
          this.reporter?.stop();
          throw error;
        }
        await this._paused.promise;
        if (this._aborted) throw new ObitoXError("ABORTED", "The upload was aborted.");
      }
    }
  }

  _known(uploadId) {
    this.uploadId = uploadId;
    this.reporter ??= new ProgressReporter(this.client, uploadId);
    this._created(uploadId);
  }

  async _view() {
    const token = this.uploadId ?? this.client.resumeToken(this.file);
    if (token) {
      try {
        const view = await this.client.api("GET", `/multipart/${token}`);
        if (this.uploadId == null) this.resumed = true;
        this._known(token);
        return view;
      } catch (error) {
        // Gone, aborted or expired on the server: start over rather than fail.
        if (![404, 409, 410].includes(error.status)) throw error;
        this._forget();
        this.uploadId = null;
      }
    }
    const { file, options } = this;
    const rules = serverValidation(options.validation);
    const created = await this.client.api("POST", "/multipart", {
      filename: file.name,
      contentType: contentTypeOf(file),
      size: file.size,
      networkType: this.client.networkType(),
      ...(options.partSize ? { partSize: Math.max(options.partSize, MIN_PART_SIZE) } : {}),
      ...(options.metadata ? { metadata: options.metadata } : {}),
      ...(options.profile ? { profile: options.profile } : {}),
      ...(rules ? { validation: rules } : {}),
      ...(options.groupId ? { groupId: options.groupId } : {}),
    });
    this.client.storage?.setItem(resumeKey(file), created.uploadId);
    this._known(created.uploadId);
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
    const report = (parts = [], urgent = false) => {
      let loaded = done;
      for (const bytes of inFlight.values()) loaded += bytes;
      this.options.onProgress?.({
        loaded,
        total: this.file.size,
        percent: this.file.size ? (100 * loaded) / this.file.size : 100,
        uploadId: this.uploadId,
      });
      this.reporter.update(loaded, parts, urgent);
    };
    report();
    const urls = new Map();
    const sign = async (numbers) => {
      const { parts } = await this.client.api("POST", `/multipart/${this.uploadId}/parts`, {
        partNumbers: numbers,
        networkType: this.client.networkType(),
      });
      for (const part of parts) urls.set(part.partNumber, part);
    };
    for (let i = 0; i < remainingParts.length; i += MAX_PARTS_PER_CALL) {
      await sign(remainingParts.slice(i, i + MAX_PARTS_PER_CALL));
    }
    const signal = this._stopper.signal;
    await pool(remainingParts, this.options.concurrency, async (number) => {
      if (signal.aborted) throw stopped();
      const start = (number - 1) * partSize;
      const body = this.file.slice(start, Math.min(start + partSize, this.file.size));
      const uploading = [{ partNumber: number, status: "uploading" }];
      const sent = await transfer({
        target: urls.get(number),
        resign: async () => {
          await sign([number]); // the URL outlived its signature: a fresh one
          return urls.get(number);
        },
        body,
        xhrs: this.xhrs,
        retryDelays: this.options.retryDelays,
        signal,
        onProgress: (bytes) => {
          inFlight.set(number, bytes);
          report(uploading);
        },
        onRetry: () => {
          this.retriedParts.push(number);
          report([{ partNumber: number, status: "failed" }]);
        },
      }).finally(() => inFlight.delete(number));
      done += body.size;
      this.sentParts.push(number);
      report([{ partNumber: number, status: "uploaded", ...(sent.etag ? { etag: sent.etag } : {}) }], true);
    }).catch((error) => {
      // One part failed for good: the parts on their way stop too (resuming sends them).
      this._stop();
      throw error;
    });
    this.reporter.stop();
    const result = await this.client.api("POST", `/multipart/${this.uploadId}/complete`, {});
    this._forget();
    return result;
  }
}

/** `ObitoX({endpoint, headers, rules, retryDelays, multipartThreshold, networkType,
 *  reportProgress, progressInterval})`: a client for the routes under `endpoint`. */
export function ObitoX(options = {}) {
  return new Client(options);
}

export default ObitoX;
