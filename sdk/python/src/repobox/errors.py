"""Errors raised by the client.

Every error the server answers is JSON ``{"error", "detail", "timestamp"}``; it is
raised as the :class:`RepoboxError` subclass for its status code, carrying those
fields. Failures to reach the server at all are :class:`TransportError`.
"""

from typing import Any, Dict, Optional, Type

__all__ = [
    "RepoboxError",
    "TransportError",
    "APIError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "Unprocessable",
    "TooManyRequests",
    "ServerError",
    "ServiceUnavailable",
    "error_for_status",
]


class RepoboxError(Exception):
    """Base of every error this package raises.

    ``status`` is the HTTP status (``None`` when no answer came), ``error`` the
    server's short message, ``detail`` its explanation, ``code`` the stable machine
    code when the server sends one (e.g. ``"route_not_found"``), ``body`` the whole
    decoded error body (a dict, possibly empty).
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        error: Optional[str] = None,
        detail: Optional[str] = None,
        timestamp: Optional[str] = None,
        body: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.detail = detail
        self.timestamp = timestamp
        self.body: Dict[str, Any] = body or {}
        code = self.body.get("code")
        self.code: Optional[str] = str(code) if code is not None else None


class TransportError(RepoboxError):
    """The server could not be reached or the connection broke (wraps httpx's error)."""


class APIError(RepoboxError):
    """The server answered with an error status (generic: codes without a subclass)."""


class BadRequest(APIError):
    """400: malformed or invalid request."""


class Unauthorized(APIError):
    """401: missing or wrong API key."""


class Forbidden(APIError):
    """403: refused by policy (e.g. ``COMMAND_ALLOWLIST``)."""


class NotFound(APIError):
    """404: unknown sandbox, process, snapshot, job or path."""


class Conflict(APIError):
    """409: the sandbox (or process, job) is not in a state that allows this."""


class PayloadTooLarge(APIError):
    """413: body or file above a limit."""


class UnsupportedMediaType(APIError):
    """415: wrong content type."""


class Unprocessable(APIError):
    """422: the repository, branch or commit cannot be checked out (and similar)."""


class TooManyRequests(APIError):
    """429: a limit (containers, processes, snapshots) is reached."""


class ServerError(APIError):
    """5xx other than 503."""


class ServiceUnavailable(ServerError):
    """503: Docker unreachable, or the server not ready."""


_BY_STATUS: Dict[int, Type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def error_for_status(status: int, body: Any, fallback_text: str = "") -> APIError:
    """The exception for an error answer with decoded JSON ``body`` (or anything else)."""
    if not isinstance(body, dict):
        body = {}
    error = body.get("error")
    detail = body.get("detail")
    error = str(error) if error is not None else None
    detail = str(detail) if detail is not None else None
    if error is None and detail is None and fallback_text:
        detail = fallback_text[:2000]
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    message = "HTTP {}: {}".format(status, error or "error")
    if detail:
        message += ": " + detail
    return cls(
        message,
        status=status,
        error=error,
        detail=detail,
        timestamp=body.get("timestamp"),
        body=body,
    )
