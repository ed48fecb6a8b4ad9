// The client: one Client per server, a Sandbox per sandbox, and the collections
// (processes, sessions, git, snapshots, jobs, images). Plain fetch; streams are
// Server-Sent Events read from the response body as async iterators.

import {
  NotFoundError,
  RepoboxError,
  TimeoutError,
  TransportError,
  errorFromBody,
} from './errors.js';
import { readEvents } from './sse.js';

export const VERSION = '0.1.0';
export const API_PREFIX = '/api/v1';
export const DEFAULT_URL = 'http://127.0.0.1:8000';
/** Default deadline of one call, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 120_000;
/** A create (clone, container start, initial command), a snapshot or a fork gets at least this. */
const CREATE_TIMEOUT_MS = 600_000;
/** Extra time allowed beyond a command's own `timeout_secs`. */
const EXEC_MARGIN_MS = 30_000;
/** The server's default `timeout_secs` of a command. */
const DEFAULT_EXEC_TIMEOUT_SECS = 30;

/**
 * Every route the client calls, `METHOD /path/{param}` under /api/v1. The client
 * builds each request from this table, and test/types.test.mjs checks each against
 * the server's OpenAPI document.
 */
export const ROUTES = Object.freeze({
  health: 'GET /health',
  ready: 'GET /health/ready',
  info: 'GET /info',
  listContainers: 'GET /containers',
  createContainer: 'POST /containers',
  getContainer: 'GET /containers/{container_id}',
  updateContainer: 'PATCH /containers/{container_id}',
  deleteContainer: 'DELETE /containers/{container_id}',
  execute: 'POST /containers/{container_id}/execute',
  executeStream: 'POST /containers/{container_id}/execute/stream',
  browse: 'GET /containers/{container_id}/browse',
  readFile: 'GET /containers/{container_id}/files',
  readRaw: 'GET /containers/{container_id}/files/raw',
  writeRaw: 'PUT /containers/{container_id}/files/raw',
  downloadArchive: 'GET /containers/{container_id}/archive',
  uploadArchive: 'PUT /containers/{container_id}/archive',
  gitStatus: 'GET /containers/{container_id}/git/status',
  gitDiff: 'GET /containers/{container_id}/git/diff',
  gitApply: 'POST /containers/{container_id}/git/apply',
  reset: 'POST /containers/{container_id}/reset',
  startProcess: 'POST /containers/{container_id}/processes',
  listProcesses: 'GET /containers/{container_id}/processes',
  getProcess: 'GET /containers/{container_id}/processes/{process_id}',
  deleteProcess: 'DELETE /containers/{container_id}/processes/{process_id}',
  processOutput: 'GET /containers/{container_id}/processes/{process_id}/output',
  processStream: 'GET /containers/{container_id}/processes/{process_id}/stream',
  processStdin: 'POST /containers/{container_id}/processes/{process_id}/stdin',
  processSignal: 'POST /containers/{container_id}/processes/{process_id}/signal',
  listPorts: 'GET /containers/{container_id}/ports',
  getEgress: 'GET /containers/{container_id}/egress',
  createSession: 'POST /containers/{container_id}/sessions',
  listSessions: 'GET /containers/{container_id}/sessions',
  sessionExecute: 'POST /containers/{container_id}/sessions/{session_id}/execute',
  deleteSession: 'DELETE /containers/{container_id}/sessions/{session_id}',
  createSnapshot: 'POST /containers/{container_id}/snapshots',
  fork: 'POST /containers/{container_id}/fork',
  listSnapshots: 'GET /snapshots',
  getSnapshot: 'GET /snapshots/{snapshot_id}',
  deleteSnapshot: 'DELETE /snapshots/{snapshot_id}',
  createJob: 'POST /jobs',
  listJobs: 'GET /jobs',
  getJob: 'GET /jobs/{job_id}',
  deleteJob: 'DELETE /jobs/{job_id}',
  cancelJob: 'POST /jobs/{job_id}/cancel',
  jobResults: 'GET /jobs/{job_id}/results',
  jobEvents: 'GET /jobs/{job_id}/events',
  createImage: 'POST /images',
  listImages: 'GET /images',
  getImage: 'GET /images/{image_id}',
  deleteImage: 'DELETE /images/{image_id}',
  imageLogs: 'GET /images/{image_id}/logs',
});

/** An id, or an object carrying it under `key`. */
function idOf(value, key) {
  if (value && typeof value === 'object') value = value[key];
  if (typeof value !== 'string' || value === '') {
    throw new TypeError(`${key}: expected a non-empty string or an object with it`);
  }
  return value;
}

/** Copies `obj` without its undefined values. */
function defined(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v;
  return out;
}

function toBytes(data) {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return data; // a Blob or a ReadableStream: fetch sends it as is
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

function parseData(data) {
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}

/** An SSE `error` event as the error it carries. */
function eventError(data) {
  const body = parseData(data);
  return typeof body === 'object' && body !== null
    ? errorFromBody(undefined, body)
    : errorFromBody(undefined, { error: 'Stream error', detail: String(body) });
}

/** The events of an exec or process stream, typed. */
function execEvent({ event, data }) {
  const value = parseData(data);
  switch (event) {
    case 'stdout':
    case 'stderr':
    case 'exit':
      return { ...(typeof value === 'object' && value !== null ? value : { data: value }), type: event };
    case 'error':
      throw eventError(data);
    default:
      return { type: event, data: value };
  }
}

function jobEvent({ event, data }) {
  const value = parseData(data);
  switch (event) {
    case 'result': return { type: 'result', result: value };
    case 'done': return { type: 'done', job: value };
    case 'error': throw eventError(data);
    default: return { type: event, data: value };
  }
}

function imageEvent({ event, data }) {
  switch (event) {
    case 'log': return { type: 'log', text: data };
    case 'done': return { type: 'done', image: parseData(data) };
    case 'error': throw eventError(data);
    default: return { type: event, data: parseData(data) };
  }
}

export class Client {
  /**
   * @param {{url?: string, apiKey?: string, timeoutMs?: number, fetch?: typeof fetch,
   *   headers?: Record<string, string>}} [options]
   */
  constructor(options = {}) {
    const env = globalThis.process?.env ?? {};
    let url = (options.url ?? env.REPOBOX_URL ?? DEFAULT_URL).replace(/\/+$/, '');
    if (url.endsWith(API_PREFIX)) url = url.slice(0, -API_PREFIX.length);
    /** The server's base URL (without /api/v1). */
    this.url = url;
    this.apiKey = options.apiKey ?? (env.REPOBOX_API_KEY || undefined);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this._fetch = options.fetch ?? globalThis.fetch;
    this._headers = { 'user-agent': `repobox-js/${VERSION}`, ...options.headers };
    if (this.apiKey) this._headers.authorization = `Bearer ${this.apiKey}`;
    this.snapshots = new Snapshots(this);
    this.jobs = new Jobs(this);
    this.images = new Images(this);
  }

  // --- plumbing ---------------------------------------------------------------

  /**
   * Sends one request of ROUTES[name]; throws the mapped error for an error answer.
   * @returns {Promise<Response>}
   */
  async _send(name, params = {}, opts = {}) {
    const [method, template] = ROUTES[name].split(' ');
    const path = template.replace(/\{(\w+)\}/g, (_, key) => encodeURIComponent(params[key]));
    const url = new URL(this.url + API_PREFIX + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    const headers = { ...this._headers, accept: opts.accept ?? 'application/json' };
    let body;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.body !== undefined) {
      headers['content-type'] = opts.contentType ?? 'application/octet-stream';
      body = toBytes(opts.body);
    }
    const timeoutMs = opts.timeoutMs === undefined ? this.timeoutMs : opts.timeoutMs;
    const signals = [];
    if (opts.signal) signals.push(opts.signal);
    if (opts.controller) signals.push(opts.controller.signal);
    const timeout = timeoutMs !== null && timeoutMs !== Infinity ? AbortSignal.timeout(timeoutMs) : undefined;
    if (timeout) signals.push(timeout);
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    const init = { method, headers, body, signal };
    if (body && typeof body.getReader === 'function') init.duplex = 'half';
    let response;
    try {
      response = await this._fetch(url, init);
    } catch (err) {
      if (timeout?.aborted && !opts.signal?.aborted) {
        throw new TimeoutError(`${method} ${path}: no answer within ${timeoutMs} ms`, { cause: err });
      }
      if (err?.name === 'AbortError' || opts.signal?.aborted) throw err;
      const why = err?.cause?.message ?? err?.message ?? String(err);
      throw new TransportError(`${method} ${path} failed: ${why}`, { cause: err, detail: why });
    }
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      let json;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      throw errorFromBody(response.status, json, text);
    }
    return response;
  }

  async _json(name, params, opts) {
    const response = await this._send(name, params, opts);
    return response.json();
  }

  async _none(name, params, opts) {
    const response = await this._send(name, params, opts);
    await response.body?.cancel().catch(() => {});
  }

  /** The events of an SSE route as an async generator (mapped by `map`). */
  async *_events(name, params, opts, map) {
    const controller = new AbortController();
    const response = await this._send(name, params, {
      ...opts,
      accept: 'text/event-stream',
      timeoutMs: null,
      controller,
    });
    try {
      for await (const raw of readEvents(response, () => controller.abort())) {
        yield map(raw);
      }
    } catch (err) {
      if (err instanceof RepoboxError || opts?.signal?.aborted) throw err;
      const why = err?.cause?.message ?? err?.message ?? String(err);
      throw new TransportError(`${ROUTES[name]}: the stream broke: ${why}`, { cause: err, detail: why });
    } finally {
      controller.abort();
    }
  }

  _sandbox(info) {
    return new Sandbox(this, info);
  }

  // --- the API ----------------------------------------------------------------

  /** @returns {Promise<import('../index').HealthResponse>} */
  health(opts) {
    return this._json('health', {}, opts);
  }

  /** `{status: "ready"}`, or a ServiceUnavailableError (503) with the reason. */
  ready(opts) {
    return this._json('ready', {}, opts);
  }

  info(opts) {
    return this._json('info', {}, opts);
  }

  /**
   * Creates a sandbox; resolves once it is running.
   * `create(repoUrl, options?)` or `create(options)`.
   */
  async create(repoUrl, options) {
    if (typeof repoUrl === 'object' && repoUrl !== null) {
      options = repoUrl;
      repoUrl = undefined;
    }
    const { signal, timeoutMs, snapshot, ...body } = options ?? {};
    if (repoUrl !== undefined) body.repo_url = repoUrl;
    if (snapshot !== undefined) body.snapshot_id = idOf(snapshot, 'snapshot_id');
    const info = await this._json('createContainer', {}, {
      json: defined(body),
      signal,
      timeoutMs: Math.max(timeoutMs ?? this.timeoutMs, CREATE_TIMEOUT_MS),
    });
    return this._sandbox(info);
  }

  /**
   * Creates a sandbox, passes it to `fn`, and destroys it when `fn` settles.
   * @template T
   * @param {string | object} repoUrlOrOptions
   * @param {object | ((box: Sandbox) => Promise<T>)} optionsOrFn
   * @param {(box: Sandbox) => Promise<T>} [fn]
   * @returns {Promise<T>}
   */
  async withSandbox(repoUrlOrOptions, optionsOrFn, fn) {
    if (typeof optionsOrFn === 'function') {
      fn = optionsOrFn;
      optionsOrFn = undefined;
    }
    const box = await this.create(repoUrlOrOptions, optionsOrFn);
    let failed = false;
    try {
      return await fn(box);
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      try {
        await box.destroy();
      } catch (err) {
        if (!(err instanceof NotFoundError) && !failed) throw err;
      }
    }
  }

  /** The sandboxes (destroyed and expired ones are not listed). */
  async list(opts) {
    const body = await this._json('listContainers', {}, opts);
    return body.containers.map((info) => this._sandbox(info));
  }

  /** A sandbox by id (NotFoundError when unknown or destroyed). */
  async get(containerId, opts) {
    return this._sandbox(await this._json('getContainer', { container_id: idOf(containerId, 'container_id') }, opts));
  }

  /** Destroys a sandbox by id. */
  destroy(containerId, opts) {
    return this._none('deleteContainer', { container_id: idOf(containerId, 'container_id') }, opts);
  }
}

/** A sandbox: its fields (as of the last answer) plus what can be done with it. */
export class Sandbox {
  constructor(client, info) {
    Object.defineProperty(this, '_client', { value: client, enumerable: false });
    Object.assign(this, info);
    Object.defineProperties(this, {
      processes: { value: new Processes(client, this), enumerable: false },
      sessions: { value: new Sessions(client, this), enumerable: false },
      git: { value: new Git(client, this), enumerable: false },
    });
  }

  get _id() {
    return { container_id: this.container_id };
  }

  _assign(info) {
    Object.assign(this, info);
    return this;
  }

  /** Reads the sandbox again (status, expiry) into this object. */
  async refresh(opts) {
    return this._assign(await this._client._json('getContainer', this._id, opts));
  }

  /** The sandbox now expires `secs` seconds from now; `null`: never. */
  async extend(secs, opts) {
    return this._assign(await this._client._json('updateContainer', this._id, {
      ...opts,
      json: { max_runtime_secs: secs },
    }));
  }

  /** Destroys the sandbox. */
  async destroy(opts) {
    await this._client._none('deleteContainer', this._id, opts);
    this.status = 'destroyed';
  }

  /** `await using box = await client.create(...)` destroys it at the end of the block. */
  async [Symbol.asyncDispose ?? Symbol.for('Symbol.asyncDispose')]() {
    try {
      await this.destroy();
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
  }

  // commands

  _execBody(command, options = {}) {
    const { signal, timeoutMs, ...body } = options;
    if (typeof command !== 'string') throw new TypeError('command: expected a string');
    return {
      json: defined({ ...body, command }),
      signal,
      timeoutMs: timeoutMs ?? Math.max(
        this._client.timeoutMs,
        (body.timeout_secs ?? DEFAULT_EXEC_TIMEOUT_SECS) * 1000 + EXEC_MARGIN_MS,
      ),
    };
  }

  /** Runs `command` (by bash) to its end. A non-zero exit is not an error. */
  exec(command, options) {
    return this._client._json('execute', this._id, this._execBody(command, options));
  }

  /**
   * Runs `command` and yields its output as it comes: `{type: "stdout"|"stderr", data}`,
   * then one `{type: "exit", exit_code, timed_out, …}`. Leaving the loop early kills
   * the command.
   */
  stream(command, options) {
    return this._client._events('executeStream', this._id, this._execBody(command, options), execEvent);
  }

  // files

  /** The exact bytes of a file (any size). */
  async readBytes(path, opts) {
    const response = await this._client._send('readRaw', this._id, {
      ...opts,
      query: { file_path: path },
      accept: 'application/octet-stream, application/json',
      timeoutMs: opts?.timeoutMs ?? null,
    });
    return new Uint8Array(await response.arrayBuffer());
  }

  /** A file as text (UTF-8; invalid sequences become U+FFFD). */
  async readText(path, opts) {
    return new TextDecoder().decode(await this.readBytes(path, opts));
  }

  /** `GET /files`: `{path, content, size, encoding, is_binary}` (up to MAX_FILE_BYTES). */
  readFile(path, opts) {
    return this._client._json('readFile', this._id, { ...opts, query: { file_path: path } });
  }

  /** Writes `data` (a string as UTF-8, bytes, a Blob or a stream) to `path`, creating parents. */
  writeFile(path, data, opts) {
    return this._client._json('writeRaw', this._id, {
      ...opts,
      query: { file_path: path },
      body: data,
      timeoutMs: opts?.timeoutMs ?? null,
    });
  }

  /** The entries of a directory, sorted by name. */
  async listDir(path = '/workspace', opts) {
    const listing = await this._client._json('browse', this._id, { ...opts, query: { path } });
    return listing.items;
  }

  // egress

  /**
   * The sandbox's allow-list (`network: {allow: [...]}` on create; `null`: it has no
   * proxy) and what its egress proxy allowed and refused:
   * `{allow, decisions: [{time, host, port, allowed, reason?}]}`, oldest first.
   */
  egress(opts) {
    return this._client._json('getEgress', this._id, opts);
  }

  // ports

  /** The TCP ports listening inside the sandbox: `[{port, process, pid, addresses}]`. */
  ports(opts) {
    return this._client._json('listPorts', this._id, opts);
  }

  /**
   * The URL of `path` on the server listening at `port` in the sandbox (any HTTP,
   * WebSockets included; the sandbox needs no network). With an API key and
   * `withToken` (the default) it carries `?access_token=`, so that it opens in a
   * browser: share it as you would the key. Programs that send the key as a header
   * pass `{withToken: false}`.
   */
  portUrl(port, path = '/', { withToken = true } = {}) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`port: expected an integer from 1 to 65535, not ${port}`);
    }
    const base = this._client.url.replace(/\/+$/, '');
    let url = `${base}${API_PREFIX}/containers/${encodeURIComponent(this.container_id)}/ports/${port}/${String(path).replace(/^\/+/, '')}`;
    const key = this._client.apiKey;
    if (withToken && key) url += `${url.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(key)}`;
    return url;
  }

  /** A tar of `path` (a file or a directory), as bytes. */
  async downloadArchive(path, opts) {
    const response = await this._client._send('downloadArchive', this._id, {
      ...opts,
      query: { path },
      accept: 'application/x-tar, application/json',
      timeoutMs: opts?.timeoutMs ?? null,
    });
    return new Uint8Array(await response.arrayBuffer());
  }

  /** Unpacks a tar (bytes, a Blob or a stream) into the directory `path`. */
  uploadArchive(path, tar, opts) {
    return this._client._none('uploadArchive', this._id, {
      ...opts,
      query: { path },
      body: tar,
      contentType: 'application/x-tar',
      timeoutMs: opts?.timeoutMs ?? null,
    });
  }

  // checkout

  /** Puts /workspace back to its checkout; with `processes` (default true) kills everything first. */
  async reset(options = {}) {
    const { signal, timeoutMs, ...body } = options;
    return this._assign(await this._client._json('reset', this._id, { json: body, signal, timeoutMs }));
  }

  /** A snapshot of the sandbox's filesystem (the sandbox keeps running). */
  snapshot(options = {}) {
    const { signal, timeoutMs, ...body } = options;
    return this._client._json('createSnapshot', this._id, {
      json: defined(body),
      signal,
      timeoutMs: Math.max(timeoutMs ?? this._client.timeoutMs, CREATE_TIMEOUT_MS),
    });
  }

  /**
   * `count` new sandboxes on one snapshot of this one. Each copy succeeds or fails
   * on its own: `forks` holds, in order, a Sandbox or the RepoboxError that says why
   * (not thrown); `sandboxes` and `errors` split them.
   */
  async fork(options = {}) {
    const { signal, timeoutMs, ...body } = options;
    const answer = await this._client._json('fork', this._id, {
      json: defined({ count: 1, ...body }),
      signal,
      timeoutMs: Math.max(timeoutMs ?? this._client.timeoutMs, CREATE_TIMEOUT_MS),
    });
    const forks = answer.forks.map((entry) => (entry.container
      ? this._client._sandbox(entry.container)
      : errorFromBody(undefined, entry.error)));
    return {
      snapshot_id: answer.snapshot_id,
      forks,
      sandboxes: forks.filter((f) => f instanceof Sandbox),
      errors: forks.filter((f) => f instanceof RepoboxError),
    };
  }
}

/** `box.processes`: long-running commands of one sandbox. */
export class Processes {
  constructor(client, box) {
    this._client = client;
    this._box = box;
  }

  _ids(process) {
    return { container_id: this._box.container_id, process_id: idOf(process, 'process_id') };
  }

  /** Starts `command`; it keeps running when this client goes away. */
  start(command, options = {}) {
    const { signal, timeoutMs, ...body } = options;
    return this._client._json('startProcess', this._box._id, {
      json: defined({ ...body, command }),
      signal,
      timeoutMs,
    });
  }

  async list(opts) {
    return (await this._client._json('listProcesses', this._box._id, opts)).processes;
  }

  get(process, opts) {
    return this._client._json('getProcess', this._ids(process), opts);
  }

  /** Kept output from the offsets; pass `stdout_end`/`stderr_end` back to get only what is new. */
  output(process, options = {}) {
    const { signal, timeoutMs, ...query } = options;
    return this._client._json('processOutput', this._ids(process), { query, signal, timeoutMs });
  }

  /**
   * Kept output from the offsets, then live (`{type, data, offset}`), then one
   * `{type: "exit", …}`. Leaving the loop does not stop the process.
   */
  stream(process, options = {}) {
    const { signal, ...query } = options;
    return this._client._events('processStream', this._ids(process), { query, signal }, execEvent);
  }

  /** Writes to a process started with `stdin_open: true` (text, or bytes); `eof` closes its stdin. */
  stdin(process, data, options = {}) {
    const { eof = false, signal, timeoutMs } = options;
    const body = { eof };
    if (typeof data === 'string') body.data = data;
    else if (data !== undefined && data !== null) body.data_base64 = Buffer.from(toBytes(data)).toString('base64');
    return this._client._none('processStdin', this._ids(process), { json: body, signal, timeoutMs });
  }

  /** Sends `signal` (a name such as "SIGTERM" or "TERM", or a number) to all the process started. */
  kill(process, signal = 'SIGTERM', opts) {
    return this._client._none('processSignal', this._ids(process), { ...opts, json: { signal } });
  }

  /** Kills it if running, and forgets it. */
  remove(process, opts) {
    return this._client._none('deleteProcess', this._ids(process), opts);
  }

  /** Polls until the process is no longer running (TimeoutError after `timeoutMs`). */
  async wait(process, options = {}) {
    const { timeoutMs, intervalMs = 200, signal } = options;
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    for (;;) {
      const current = await this.get(process, { signal });
      if (current.status !== 'running') return current;
      if (Date.now() >= deadline) {
        throw new TimeoutError(`process ${current.process_id} still running after ${timeoutMs} ms`);
      }
      await sleep(intervalMs, signal);
    }
  }
}

/** A shell session: state (cwd, variables, functions) carries from one command to the next. */
export class Session {
  constructor(client, box, info) {
    Object.defineProperty(this, '_client', { value: client, enumerable: false });
    Object.defineProperty(this, '_box', { value: box, enumerable: false });
    Object.assign(this, info);
  }

  /** Runs `command` in the session; answers as `Sandbox.exec`. */
  exec(command, options) {
    return this._client._json(
      'sessionExecute',
      { container_id: this._box.container_id, session_id: this.session_id },
      this._box._execBody(command, options),
    );
  }

  delete(opts) {
    return this._client._none(
      'deleteSession',
      { container_id: this._box.container_id, session_id: this.session_id },
      opts,
    );
  }
}

/** `box.sessions`. */
export class Sessions {
  constructor(client, box) {
    this._client = client;
    this._box = box;
  }

  async create(options = {}) {
    const { signal, timeoutMs, ...body } = options;
    const info = await this._client._json('createSession', this._box._id, { json: defined(body), signal, timeoutMs });
    return new Session(this._client, this._box, info);
  }

  async list(opts) {
    const { sessions } = await this._client._json('listSessions', this._box._id, opts);
    return sessions.map((info) => new Session(this._client, this._box, info));
  }

  delete(session, opts) {
    return this._client._none(
      'deleteSession',
      { container_id: this._box.container_id, session_id: idOf(session, 'session_id') },
      opts,
    );
  }
}

/** `box.git`: what changed in the checkout, as git sees it. */
export class Git {
  constructor(client, box) {
    this._client = client;
    this._box = box;
  }

  status(opts) {
    return this._client._json('gitStatus', this._box._id, opts);
  }

  /** The patch from `base` (default: the sandbox's commit) to the working tree, as bytes. */
  async diffBytes(options = {}) {
    const { signal, timeoutMs, ...query } = options;
    const response = await this._client._send('gitDiff', this._box._id, {
      query,
      signal,
      timeoutMs,
      accept: 'text/x-diff, application/json',
    });
    return new Uint8Array(await response.arrayBuffer());
  }

  /** The same patch as text (binary files are in git's base85 form, so it is ASCII-safe
   * unless text files hold invalid UTF-8: use diffBytes to apply it elsewhere then). */
  async diff(options) {
    return new TextDecoder().decode(await this.diffBytes(options));
  }

  /** Applies a patch to the working tree (all or nothing: UnprocessableError if it does not apply). */
  apply(patch, opts) {
    return this._client._json('gitApply', this._box._id, { ...opts, body: patch, contentType: 'text/x-diff' });
  }
}

/** `client.snapshots`. */
export class Snapshots {
  constructor(client) {
    this._client = client;
  }

  async list(opts) {
    return (await this._client._json('listSnapshots', {}, opts)).snapshots;
  }

  get(snapshot, opts) {
    return this._client._json('getSnapshot', { snapshot_id: idOf(snapshot, 'snapshot_id') }, opts);
  }

  /** Deletes a snapshot and its image (ConflictError while a sandbox runs on it). */
  delete(snapshot, opts) {
    return this._client._none('deleteSnapshot', { snapshot_id: idOf(snapshot, 'snapshot_id') }, opts);
  }
}

const FINISHED_JOB = new Set(['completed', 'cancelled']);

/** `client.jobs`: one command across many repositories. */
export class Jobs {
  constructor(client) {
    this._client = client;
  }

  /** Starts a job (answers at once, `queued`). `repos`: URLs or `{repo_url, branch?, commit?}`. */
  create(command, repos, options = {}) {
    if (!Array.isArray(repos)) throw new TypeError('repos: expected an array of URLs or {repo_url, branch?, commit?}');
    const { signal, timeoutMs, ...rest } = options;
    const body = defined({
      ...rest,
      command,
      repos: repos.map((r) => (typeof r === 'string' ? { repo_url: r } : defined(r))),
    });
    return this._client._json('createJob', {}, { json: body, signal, timeoutMs });
  }

  /** Starts a job and resolves with it once finished (`wait: false`: at once). */
  async run(command, repos, options = {}) {
    const { wait = true, waitTimeoutMs, ...rest } = options;
    const job = await this.create(command, repos, rest);
    return wait ? this.wait(job, { timeoutMs: waitTimeoutMs, signal: rest.signal }) : job;
  }

  /**
   * The job's progress: `{type: "result", result}` for each entry already finished,
   * then for each as it finishes, then `{type: "done", job}`.
   */
  events(job, opts = {}) {
    return this._client._events('jobEvents', { job_id: idOf(job, 'job_id') }, opts, jobEvent);
  }

  /** Resolves with the job once finished (TimeoutError after `timeoutMs`). */
  async wait(job, options = {}) {
    const { timeoutMs, signal } = options;
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    const controller = new AbortController();
    const timer = Number.isFinite(deadline) ? setTimeout(() => controller.abort(), timeoutMs) : undefined;
    const signals = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
    try {
      for await (const event of this.events(job, { signal: signals })) {
        if (event.type === 'done') return event.job;
      }
    } catch (err) {
      if (signal?.aborted) throw err;
      if (!(err instanceof TransportError) && err?.name !== 'AbortError') throw err;
      // a broken or timed-out stream: polling below decides
    } finally {
      clearTimeout(timer);
    }
    for (;;) {
      const current = await this.get(job, { signal });
      if (FINISHED_JOB.has(current.status)) return current;
      if (Date.now() >= deadline) throw new TimeoutError(`job ${current.job_id} not finished after ${timeoutMs} ms`);
      await sleep(500, signal);
    }
  }

  get(job, opts) {
    return this._client._json('getJob', { job_id: idOf(job, 'job_id') }, opts);
  }

  async list(opts) {
    return (await this._client._json('listJobs', {}, opts)).jobs;
  }

  /** One result per entry, in request order. */
  async results(job, opts) {
    return (await this._client._json('jobResults', { job_id: idOf(job, 'job_id') }, opts)).results;
  }

  /** Stops it: pending entries never start, running ones are killed. */
  cancel(job, opts) {
    return this._client._json('cancelJob', { job_id: idOf(job, 'job_id') }, opts);
  }

  /** Forgets a finished job (ConflictError while it runs). */
  delete(job, opts) {
    return this._client._none('deleteJob', { job_id: idOf(job, 'job_id') }, opts);
  }
}

const FINISHED_IMAGE = new Set(['ready', 'failed']);

/** `client.images`: images built from a repository's Dockerfile or devcontainer
 * (the server needs `ALLOW_IMAGE_BUILDS=true`, else ForbiddenError). */
export class Images {
  constructor(client) {
    this._client = client;
  }

  /** Starts a build (`from`: "dockerfile" or "devcontainer"); with `wait` (default) resolves once it ended. */
  async build(repoUrl, options = {}) {
    const { wait = true, waitTimeoutMs, signal, timeoutMs, ...rest } = options;
    const image = await this._client._json('createImage', {}, {
      json: defined({ from: 'dockerfile', ...rest, repo_url: repoUrl }),
      signal,
      timeoutMs: Math.max(timeoutMs ?? this._client.timeoutMs, CREATE_TIMEOUT_MS),
    });
    if (!wait || FINISHED_IMAGE.has(image.status)) return image;
    return this.wait(image, { timeoutMs: waitTimeoutMs, signal });
  }

  /** `{type: "log", text}` per chunk of build output, then `{type: "done", image}`. */
  logs(image, opts = {}) {
    return this._client._events('imageLogs', { image_id: idOf(image, 'image_id') }, opts, imageEvent);
  }

  async wait(image, options = {}) {
    const { timeoutMs, signal } = options;
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    try {
      for await (const event of this.logs(image, { signal })) {
        if (event.type === 'done') return event.image;
        if (Date.now() >= deadline) break;
      }
    } catch (err) {
      if (!(err instanceof TransportError)) throw err;
    }
    for (;;) {
      const current = await this.get(image, { signal });
      if (FINISHED_IMAGE.has(current.status)) return current;
      if (Date.now() >= deadline) throw new TimeoutError(`image ${current.image_id} not built after ${timeoutMs} ms`);
      await sleep(500, signal);
    }
  }

  get(image, opts) {
    return this._client._json('getImage', { image_id: idOf(image, 'image_id') }, opts);
  }

  async list(opts) {
    return (await this._client._json('listImages', {}, opts)).images;
  }

  delete(image, opts) {
    return this._client._none('deleteImage', { image_id: idOf(image, 'image_id') }, opts);
  }
}

