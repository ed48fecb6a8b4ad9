// The API client of the dashboard: every call goes to /api/v1 with the key the user
// typed (kept in sessionStorage only, so it ends with the tab), and every failure
// becomes an ApiError carrying the server's own `detail`.

const KEY = 'repobox.api-key';
export const PREFIX = '/api/v1';

export function getKey() {
  return sessionStorage.getItem(KEY) || '';
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** A failed call: `status` (0 when the server could not be reached) and `detail`. */
export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// Listeners told about a 401 (the app shows its login with the server's detail).
const unauthorized = new Set();
export function onUnauthorized(listener) {
  unauthorized.add(listener);
}

async function failure(response) {
  let body = null;
  let detail = `${response.status} ${response.statusText}`;
  try {
    body = await response.json();
    if (body && typeof body.detail === 'string') detail = body.detail;
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is.
  }
  const error = new ApiError(response.status, detail, body);
  if (response.status === 401) unauthorized.forEach((listener) => listener(error));
  return error;
}

// API paths are given without the prefix; /metrics lives outside it.
const url = (path) => (path === '/metrics' ? path : PREFIX + path);

/** fetch() with the key; throws ApiError unless the answer is 2xx. */
export async function request(method, path, { json, body, signal, accept, contentType } = {}) {
  const extra = {};
  if (json !== undefined) {
    extra['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (contentType) {
    extra['Content-Type'] = contentType;
  }
  if (accept) extra.Accept = accept;
  let response;
  try {
    response = await fetch(url(path), {
      method,
      headers: headers(extra),
      body,
      signal,
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, `the server could not be reached (${error.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** A JSON call: the parsed answer, or null for 204. */
export async function api(method, path, json, options = {}) {
  const response = await request(method, path, { ...options, json });
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, options) => api('GET', path, undefined, options);

/**
 * Server-Sent Events over fetch (EventSource can neither POST nor send a key):
 * calls `onEvent(name, data)` for each event, data parsed as JSON when it is.
 * Resolves when the stream ends; abort with `signal`.
 */
export async function stream(method, path, json, onEvent, signal) {
  const response = await request(method, path, { json, signal, accept: 'text/event-stream' });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = 'message';
  let data = [];
  const dispatch = () => {
    if (data.length) {
      const text = data.join('\n');
      let value = text;
      try {
        value = JSON.parse(text);
      } catch {
        // Plain text data stays a string.
      }
      onEvent(event, value);
    }
    event = 'message';
    data = [];
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
      if (line === '') dispatch();
      else if (line.startsWith(':')) continue;
      else {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let rest = colon < 0 ? '' : line.slice(colon + 1);
        if (rest.startsWith(' ')) rest = rest.slice(1);
        if (field === 'event') event = rest;
        else if (field === 'data') data.push(rest);
      }
    }
  }
  dispatch();
}

/**
 * Downloads what `path` answers as a file named `name`. A plain link cannot carry
 * the key, so the bytes are fetched with it and handed to the browser as a blob.
 */
export async function download(path, name) {
  const response = await request('GET', path);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The terminal's WebSocket URL (browsers cannot set headers there: ?access_token=). */
export function terminalUrl(id, cols, rows) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = new URLSearchParams({ cols: String(cols), rows: String(rows) });
  const key = getKey();
  if (key) query.set('access_token', key);
  return `${scheme}//${location.host}${PREFIX}/containers/${encodeURIComponent(id)}/terminal?${query}`;
}

/**
 * The page of a server listening at `port` in a sandbox, with the key as
 * `?access_token=` when one is set (the server trades it for a cookie of that port's
 * path before the page loads, and never forwards it). Open it with
 * rel="noopener noreferrer": the page is the sandbox's, on this origin, and a tab it
 * opens without them would copy this tab's sessionStorage, and with it the key.
 */
export function portUrl(id, port) {
  const key = getKey();
  const query = key ? `?${new URLSearchParams({ access_token: key })}` : '';
  return `${PREFIX}/containers/${encodeURIComponent(id)}/ports/${port}/${query}`;
}

export const enc = encodeURIComponent;
