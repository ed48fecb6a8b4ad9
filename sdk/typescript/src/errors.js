// Errors raised by the client. Every error the server answers is JSON
// `{error, detail, timestamp, code}`; it is thrown as the RepoboxError subclass for
// its HTTP status, carrying those fields. Failing to reach the server at all is a
// TransportError (status undefined).

/** Base of every error this package throws. */
export class RepoboxError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, error?: string, detail?: string,
   *   timestamp?: string, body?: any, cause?: unknown}} [fields]
   */
  constructor(message, fields = {}) {
    super(message, fields.cause !== undefined ? { cause: fields.cause } : undefined);
    this.name = new.target.name;
    /** HTTP status, or undefined when no answer came. */
    this.status = fields.status;
    /** The server's stable machine code, e.g. `container_not_found`. */
    this.code = fields.code;
    /** The server's short message, e.g. `Container not found`. */
    this.error = fields.error;
    /** The server's explanation. */
    this.detail = fields.detail;
    this.timestamp = fields.timestamp;
    /** The decoded error body (an object, possibly empty). */
    this.body = fields.body ?? {};
  }
}

/** The server could not be reached, the connection broke, or a call timed out. */
export class TransportError extends RepoboxError {}

/** The client-side deadline of a call passed (see the client's `timeoutMs`). */
export class TimeoutError extends TransportError {}

/** The server answered an error status without a more specific class. */
export class APIError extends RepoboxError {}
/** 400: malformed or invalid request (the field and reason are in `detail`). */
export class ValidationError extends APIError {}
/** 401: missing or wrong API key. */
export class AuthError extends APIError {}
/** 403: refused by policy (`COMMAND_ALLOWLIST`, image builds off, …). */
export class ForbiddenError extends APIError {}
/** 404: unknown sandbox, process, session, snapshot, job, image or path. */
export class NotFoundError extends APIError {}
/** 409: not in a state that allows this (e.g. the sandbox is not running). */
export class ConflictError extends APIError {}
/** 413: body, file or checkout above a limit. */
export class TooLargeError extends APIError {}
/** 415: wrong content type. */
export class UnsupportedMediaTypeError extends APIError {}
/** 422: the repository, branch or commit cannot be checked out (and similar). */
export class UnprocessableError extends APIError {}
/** 429: a limit is reached (containers, processes, snapshots, …). */
export class RateLimitError extends APIError {}
/** 5xx. */
export class ServerError extends APIError {}
/** 501: the server's backend cannot serve this route. */
export class NotSupportedError extends ServerError {}
/** 503: Docker unreachable, or the server not ready. */
export class ServiceUnavailableError extends ServerError {}

const BY_STATUS = {
  400: ValidationError,
  401: AuthError,
  403: ForbiddenError,
  404: NotFoundError,
  409: ConflictError,
  413: TooLargeError,
  415: UnsupportedMediaTypeError,
  422: UnprocessableError,
  429: RateLimitError,
  501: NotSupportedError,
  503: ServiceUnavailableError,
};

/** The status each of the server's error codes is answered with (for errors that
 * arrive inside an answer: fork entries, job results, stream events). */
export const STATUS_OF_CODE = {
  invalid_request: 400,
  unauthorized: 401,
  command_not_allowed: 403,
  builds_disabled: 403,
  forbidden: 403,
  container_not_found: 404,
  path_not_found: 404,
  session_not_found: 404,
  snapshot_not_found: 404,
  process_not_found: 404,
  job_not_found: 404,
  image_not_found: 404,
  route_not_found: 404,
  method_not_allowed: 405,
  container_not_running: 409,
  conflict: 409,
  no_capacity: 409,
  too_large: 413,
  unsupported_media_type: 415,
  checkout_failed: 422,
  missing_tool: 422,
  image_unavailable: 422,
  sandbox_error: 422,
  too_many_containers: 429,
  limit_reached: 429,
  internal: 500,
  not_supported: 501,
  port_closed: 502,
  docker_unavailable: 503,
};

/** The error class for an HTTP status. */
export function errorClassFor(status) {
  return BY_STATUS[status] ?? (status >= 500 ? ServerError : APIError);
}

/**
 * The error for an answer with `status` and decoded JSON `body` (or anything else).
 * @param {number | undefined} status
 * @param {any} body
 * @param {string} [text] the raw body, used when it is not an error object
 */
export function errorFromBody(status, body, text = '') {
  if (!body || typeof body !== 'object' || Array.isArray(body)) body = {};
  const str = (v) => (v === undefined || v === null ? undefined : String(v));
  const code = str(body.code);
  if (status === undefined && code !== undefined) status = STATUS_OF_CODE[code];
  const error = str(body.error);
  let detail = str(body.detail);
  if (error === undefined && detail === undefined && text) detail = text.slice(0, 2000);
  const Cls = status === undefined ? APIError : errorClassFor(status);
  let message = `${status !== undefined ? `HTTP ${status}: ` : ''}${error ?? 'error'}`;
  if (detail) message += `: ${detail}`;
  return new Cls(message, { status, code, error, detail, timestamp: str(body.timestamp), body });
}
