// Types of the repobox client. The server's models (ContainerResponse, ExecResult, …)
// are generated from its OpenAPI document into types/openapi.d.ts; what is below is
// the client's own surface, built on them.

import type {
  ContainerResponse,
  CreateContainerRequest,
  CreateImageRequest,
  CreateSessionRequest,
  CreateSnapshotRequest,
  DirectoryListing,
  EgressResponse,
  ErrorBody,
  ExecResult,
  ExecuteCommandRequest,
  FileContent,
  FileSystemItem,
  ForkRequest,
  GitStatus,
  HealthResponse,
  Image,
  InfoResponse,
  JobRepo,
  JobRequest,
  JobResult,
  JobView,
  Port,
  Process,
  ProcessOutputResponse,
  ReadyResponse,
  ResetRequest,
  SessionInfo,
  Snapshot,
  StartProcessRequest,
} from './types/openapi.js';

export type * from './types/openapi.js';

export declare const VERSION: string;
export declare const API_PREFIX: '/api/v1';
export declare const DEFAULT_URL: string;
export declare const DEFAULT_TIMEOUT_MS: number;
/** Every route the client calls (`METHOD /path/{param}` under /api/v1). */
export declare const ROUTES: Readonly<Record<string, string>>;

// --- options -------------------------------------------------------------------

/** Per-call options every method takes. */
export interface CallOptions {
  /** Aborts the call (for a stream: closes it). */
  signal?: AbortSignal;
  /** Deadline of this call in milliseconds (`null`: none); default the client's `timeoutMs`,
   * raised for calls that wait on a command or a clone. */
  timeoutMs?: number | null;
}

export interface ClientOptions {
  /** Base URL of the server; default `$REPOBOX_URL` or `http://127.0.0.1:8000`. */
  url?: string;
  /** Sent as `Authorization: Bearer <key>`; default `$REPOBOX_API_KEY`. */
  apiKey?: string;
  /** Deadline of one call in milliseconds (default 120000). */
  timeoutMs?: number;
  /** A fetch to use instead of the global one (e.g. undici's with its own dispatcher). */
  fetch?: typeof fetch;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
}

export type CreateOptions = CreateContainerRequest & CallOptions & {
  /** A snapshot (or its id) to start from instead of a repository. */
  snapshot?: string | Pick<Snapshot, 'snapshot_id'>;
};

export type ExecOptions = Omit<ExecuteCommandRequest, 'command'> & CallOptions;
export type StartProcessOptions = Omit<StartProcessRequest, 'command'> & CallOptions;
export type CreateSessionOptions = CreateSessionRequest & CallOptions;
export type SnapshotOptions = CreateSnapshotRequest & CallOptions;
export type ForkOptions = Partial<ForkRequest> & CallOptions;
export type ResetOptions = ResetRequest & CallOptions;
export type JobOptions = Omit<JobRequest, 'command' | 'repos'> & CallOptions;
export type RunJobOptions = JobOptions & {
  /** Resolve once the job finished (default true); false: at once. */
  wait?: boolean;
  waitTimeoutMs?: number;
};
export type BuildImageOptions = Partial<Omit<CreateImageRequest, 'repo_url'>> & CallOptions & {
  wait?: boolean;
  waitTimeoutMs?: number;
};
export interface OffsetOptions {
  stdout_offset?: number;
  stderr_offset?: number;
}
export interface DiffOptions extends CallOptions {
  /** Any revision (default: the sandbox's commit). */
  base?: string;
  /** Include untracked files (default true). */
  untracked?: boolean;
}
export interface WaitOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** What can be written: text (as UTF-8), bytes, a Blob or a stream of bytes. */
export type Body = string | Uint8Array | ArrayBuffer | ArrayBufferView | Blob | ReadableStream<Uint8Array>;

// --- stream events --------------------------------------------------------------

/** Output of a command or process. `offset` (process streams only): where `data` begins. */
export interface OutputEvent {
  type: 'stdout' | 'stderr';
  data: string;
  offset?: number;
}
/** The end of a command: ExecResult's fields without its output. For a process, `process_id` too. */
export type ExitEvent = { type: 'exit'; process_id?: string } & Omit<ExecResult, 'stdout' | 'stderr'>;
/** An event of a kind this client does not know yet. */
export interface UnknownEvent {
  type: string;
  data: unknown;
}
export type ExecEvent = OutputEvent | ExitEvent;
export type JobEvent = { type: 'result'; result: JobResult } | { type: 'done'; job: JobView };
export type ImageEvent = { type: 'log'; text: string } | { type: 'done'; image: Image };

export interface ForkResult {
  snapshot_id: string;
  /** One per copy, in order: the sandbox, or why it could not be made (not thrown). */
  forks: Array<Sandbox | RepoboxError>;
  sandboxes: Sandbox[];
  errors: RepoboxError[];
}

// --- the client -------------------------------------------------------------------

export declare class Client {
  constructor(options?: ClientOptions);
  readonly url: string;
  readonly apiKey: string | undefined;
  readonly timeoutMs: number;
  readonly snapshots: Snapshots;
  readonly jobs: Jobs;
  readonly images: Images;

  health(options?: CallOptions): Promise<HealthResponse>;
  /** `{status: "ready"}`; ServiceUnavailableError (503) with the reason otherwise. */
  ready(options?: CallOptions): Promise<ReadyResponse>;
  info(options?: CallOptions): Promise<InfoResponse>;
  /** Creates a sandbox; resolves once it is running. */
  create(repoUrl: string, options?: CreateOptions): Promise<Sandbox>;
  create(options: CreateOptions): Promise<Sandbox>;
  /** Creates a sandbox, passes it to `fn`, destroys it when `fn` settles. */
  withSandbox<T>(repoUrl: string, fn: (box: Sandbox) => Promise<T>): Promise<T>;
  withSandbox<T>(repoUrl: string, options: CreateOptions, fn: (box: Sandbox) => Promise<T>): Promise<T>;
  withSandbox<T>(options: CreateOptions, fn: (box: Sandbox) => Promise<T>): Promise<T>;
  list(options?: CallOptions): Promise<Sandbox[]>;
  get(containerId: string | Pick<ContainerResponse, 'container_id'>, options?: CallOptions): Promise<Sandbox>;
  destroy(containerId: string | Pick<ContainerResponse, 'container_id'>, options?: CallOptions): Promise<void>;
}

/** A sandbox: its fields as of the last answer, and what can be done with it. */
export declare class Sandbox implements AsyncDisposable {
  private constructor();
  readonly processes: Processes;
  readonly sessions: Sessions;
  readonly git: Git;

  refresh(options?: CallOptions): Promise<this>;
  /** Expires `secs` seconds from now; `null`: never. */
  extend(secs: number | null, options?: CallOptions): Promise<this>;
  destroy(options?: CallOptions): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;

  /** Runs `command` (by bash) to its end; a non-zero exit is not an error. */
  exec(command: string, options?: ExecOptions): Promise<ExecResult>;
  /** Output as it comes, then one exit event. Leaving the loop early kills the command. */
  stream(command: string, options?: ExecOptions): AsyncGenerator<ExecEvent, void, undefined>;

  readBytes(path: string, options?: CallOptions): Promise<Uint8Array>;
  /** UTF-8 (invalid sequences become U+FFFD). */
  readText(path: string, options?: CallOptions): Promise<string>;
  /** The JSON file endpoint: text as is, anything else base64 (`is_binary`). */
  readFile(path: string, options?: CallOptions): Promise<FileContent>;
  writeFile(path: string, data: Body, options?: CallOptions): Promise<FileSystemItem>;
  listDir(path?: string, options?: CallOptions): Promise<DirectoryListing['items']>;
  /** A tar of a file or directory. */
  downloadArchive(path: string, options?: CallOptions): Promise<Uint8Array>;
  /** Unpacks a tar into the directory `path`. */
  uploadArchive(path: string, tar: Body, options?: CallOptions): Promise<void>;

  /** The allow-list (`network: {allow}` on create) and the egress proxy's decisions. */
  egress(options?: CallOptions): Promise<EgressResponse>;
  /** The TCP ports listening inside the sandbox, each with a process holding it. */
  ports(options?: CallOptions): Promise<Port[]>;
  /**
   * The URL of `path` on the server at `port` inside the sandbox; with an API key and
   * `withToken` (the default), `?access_token=` for a browser.
   */
  portUrl(port: number, path?: string, options?: { withToken?: boolean }): string;

  reset(options?: ResetOptions): Promise<this>;
  snapshot(options?: SnapshotOptions): Promise<Snapshot>;
  fork(options?: ForkOptions): Promise<ForkResult>;
}
export interface Sandbox extends ContainerResponse {}

export declare class Processes {
  private constructor();
  start(command: string, options?: StartProcessOptions): Promise<Process>;
  list(options?: CallOptions): Promise<Process[]>;
  get(process: ProcessRef, options?: CallOptions): Promise<Process>;
  output(process: ProcessRef, options?: OffsetOptions & CallOptions): Promise<ProcessOutputResponse>;
  /** Kept output from the offsets, then live, then one exit event. Leaving the loop does not stop the process. */
  stream(process: ProcessRef, options?: OffsetOptions & { signal?: AbortSignal }): AsyncGenerator<ExecEvent, void, undefined>;
  /** Text is sent as is, bytes as base64. */
  stdin(process: ProcessRef, data?: string | Uint8Array | null, options?: { eof?: boolean } & CallOptions): Promise<void>;
  kill(process: ProcessRef, signal?: string | number, options?: CallOptions): Promise<void>;
  remove(process: ProcessRef, options?: CallOptions): Promise<void>;
  wait(process: ProcessRef, options?: WaitOptions & { intervalMs?: number }): Promise<Process>;
}
export type ProcessRef = string | Pick<Process, 'process_id'>;

export declare class Session {
  private constructor();
  exec(command: string, options?: ExecOptions): Promise<ExecResult>;
  delete(options?: CallOptions): Promise<void>;
}
export interface Session extends SessionInfo {}

export declare class Sessions {
  private constructor();
  create(options?: CreateSessionOptions): Promise<Session>;
  list(options?: CallOptions): Promise<Session[]>;
  delete(session: string | Pick<SessionInfo, 'session_id'>, options?: CallOptions): Promise<void>;
}

export declare class Git {
  private constructor();
  status(options?: CallOptions): Promise<GitStatus>;
  diff(options?: DiffOptions): Promise<string>;
  diffBytes(options?: DiffOptions): Promise<Uint8Array>;
  /** All or nothing: UnprocessableError when it does not apply. */
  apply(patch: string | Uint8Array, options?: CallOptions): Promise<GitStatus>;
}

export declare class Snapshots {
  private constructor();
  list(options?: CallOptions): Promise<Snapshot[]>;
  get(snapshot: SnapshotRef, options?: CallOptions): Promise<Snapshot>;
  delete(snapshot: SnapshotRef, options?: CallOptions): Promise<void>;
}
export type SnapshotRef = string | Pick<Snapshot, 'snapshot_id'>;

export type JobRef = string | Pick<JobView, 'job_id'>;
export declare class Jobs {
  private constructor();
  create(command: string, repos: Array<string | JobRepo>, options?: JobOptions): Promise<JobView>;
  run(command: string, repos: Array<string | JobRepo>, options?: RunJobOptions): Promise<JobView>;
  /** Progress: a result event per finished entry, then done. */
  events(job: JobRef, options?: { signal?: AbortSignal }): AsyncGenerator<JobEvent, void, undefined>;
  wait(job: JobRef, options?: WaitOptions): Promise<JobView>;
  get(job: JobRef, options?: CallOptions): Promise<JobView>;
  list(options?: CallOptions): Promise<JobView[]>;
  results(job: JobRef, options?: CallOptions): Promise<JobResult[]>;
  cancel(job: JobRef, options?: CallOptions): Promise<JobView>;
  delete(job: JobRef, options?: CallOptions): Promise<void>;
}

export type ImageRef = string | Pick<Image, 'image_id'>;
export declare class Images {
  private constructor();
  build(repoUrl: string, options?: BuildImageOptions): Promise<Image>;
  logs(image: ImageRef, options?: { signal?: AbortSignal }): AsyncGenerator<ImageEvent, void, undefined>;
  wait(image: ImageRef, options?: WaitOptions): Promise<Image>;
  get(image: ImageRef, options?: CallOptions): Promise<Image>;
  list(options?: CallOptions): Promise<Image[]>;
  delete(image: ImageRef, options?: CallOptions): Promise<void>;
}

// --- errors -------------------------------------------------------------------------

export interface RepoboxErrorFields {
  status?: number;
  code?: string;
  error?: string;
  detail?: string;
  timestamp?: string;
  body?: Partial<ErrorBody> & Record<string, unknown>;
  cause?: unknown;
}

/** Base of every error this package throws. */
export declare class RepoboxError extends Error {
  constructor(message: string, fields?: RepoboxErrorFields);
  /** HTTP status; undefined when no answer came. */
  readonly status: number | undefined;
  /** The server's stable machine code, e.g. `container_not_found`. */
  readonly code: string | undefined;
  /** The server's short message. */
  readonly error: string | undefined;
  /** The server's explanation. */
  readonly detail: string | undefined;
  readonly timestamp: string | undefined;
  readonly body: Partial<ErrorBody> & Record<string, unknown>;
}
export declare class TransportError extends RepoboxError {}
export declare class TimeoutError extends TransportError {}
export declare class APIError extends RepoboxError {}
/** 400 */
export declare class ValidationError extends APIError {}
/** 401 */
export declare class AuthError extends APIError {}
/** 403 */
export declare class ForbiddenError extends APIError {}
/** 404 */
export declare class NotFoundError extends APIError {}
/** 409 */
export declare class ConflictError extends APIError {}
/** 413 */
export declare class TooLargeError extends APIError {}
/** 415 */
export declare class UnsupportedMediaTypeError extends APIError {}
/** 422 */
export declare class UnprocessableError extends APIError {}
/** 429 */
export declare class RateLimitError extends APIError {}
/** 5xx */
export declare class ServerError extends APIError {}
/** 501 */
export declare class NotSupportedError extends ServerError {}
/** 503 */
export declare class ServiceUnavailableError extends ServerError {}

/** The HTTP status each server error `code` is answered with. */
export declare const STATUS_OF_CODE: Readonly<Record<string, number>>;
export declare function errorClassFor(status: number): typeof APIError;
export declare function errorFromBody(status: number | undefined, body: unknown, text?: string): APIError;

/** The text/event-stream framing. */
export declare class SSEDecoder {
  feed(text: string): Array<{ event: string; data: string }>;
  end(): Array<{ event: string; data: string }>;
}
