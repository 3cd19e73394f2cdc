// Every call the console makes: the public API, with the key the operator typed, sent as a
// header (never in a URL). The key lives in this tab's sessionStorage only.

const STORAGE = "sessionpool.console.key";
export const API_VERSION = "2025-02-02-preview";

export function getKey() {
  return sessionStorage.getItem(STORAGE);
}

export function setKey(key) {
  sessionStorage.setItem(STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(STORAGE);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

export function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : { ...extra };
}

async function failure(resp) {
  let code = String(resp.status);
  let message = resp.statusText || `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    const err = body.error || body;
    if (err && typeof err === "object") {
      code = err.code || code;
      message = err.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  if (resp.status === 401) onUnauthorized(message);
  return new ApiError(resp.status, String(code), String(message));
}

/** fetch with the key; throws ApiError for an answer that is not 2xx */
export async function call(path, options = {}) {
  const resp = await fetch(path, {
    ...options,
    headers: authHeaders(options.headers || {}),
    credentials: "omit",
    cache: "no-store",
  });
  if (!resp.ok) throw await failure(resp);
  return resp;
}

export async function json(path, options = {}) {
  const resp = await call(path, options);
  if (resp.status === 204) return null;
  return resp.json();
}

export function poolPath(pool, rest, identifier, params = {}) {
  const q = new URLSearchParams({ ...params, identifier, "api-version": API_VERSION });
  return `/pools/${encodeURIComponent(pool)}/${rest}?${q}`;
}

/** Server-Sent Events from a POST (EventSource can send no header): calls onEvent(name, data) */
export async function streamEvents(path, body, onEvent, signal) {
  const resp = await call(path, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of raw.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const text = data.join("\n");
      let value = text;
      try {
        value = JSON.parse(text);
      } catch {
        // not JSON (the Assistants stream ends with "[DONE]"): the text as it is
      }
      onEvent(name, value);
    }
  }
}

/** An upload with progress (fetch reports none): onProgress(fraction) */
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(xhr.status);
        return;
      }
      let message = `HTTP ${xhr.status}`;
      try {
        message = JSON.parse(xhr.responseText).error.message || message;
      } catch {
        // keep the status
      }
      if (xhr.status === 401) onUnauthorized(message);
      reject(new ApiError(xhr.status, String(xhr.status), message));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "Network", "the upload failed")));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/** Download a file through the API (with the key) and save it under `name` */
export async function download(path, name) {
  const resp = await call(path);
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
