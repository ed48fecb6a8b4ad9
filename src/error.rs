//! The service's one error type and its one JSON shape.
//!
//! Every failure a client can see, including axum's own rejections, becomes an
//! [`Error`], answered as `{"error", "detail", "timestamp", "code"}` with the status
//! the spec gives. 4xx carry a message a user can act on; an internal error is logged
//! once with its source chain and answered generically.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// Result alias for the service.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a field is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// No or wrong API key (401).
    #[error("missing or invalid API key")]
    Unauthorized,
    /// No sandbox with this id (404).
    #[error("no container with id {0}")]
    ContainerNotFound(String),
    /// A path inside a sandbox does not exist (404).
    #[error("no such file or directory: {0}")]
    PathNotFound(String),
    /// No session with this id in the sandbox (404).
    #[error("{0}")]
    SessionNotFound(String),
    /// No process with this id in the sandbox (404).
    #[error("{0}")]
    ProcessNotFound(String),
    /// No snapshot with this id (404).
    #[error("{0}")]
    SnapshotNotFound(String),
    /// No job with this id (404).
    #[error("{0}")]
    JobNotFound(String),
    /// A limit other than `MAX_CONTAINERS` is reached (429).
    #[error("{0}")]
    LimitReached(String),
    /// No such route (404).
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// Route exists, method does not (405).
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// The sandbox is not running (409).
    #[error("{0}")]
    NotRunning(String),
    /// The sandbox cannot do this in its present state, or lacks what it needs (409).
    #[error("{0}")]
    Conflict(String),
    /// A body or file is above a limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A command refused by `COMMAND_ALLOWLIST` (403).
    #[error("{0}")]
    CommandNotAllowed(String),
    /// A request this server does not take from where it comes: a foreign `Host` or
    /// `Origin` (403).
    #[error("{0}")]
    Forbidden(String),
    /// Wrong or missing content type (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The repository, branch or commit cannot be checked out (422).
    #[error("{0}")]
    Checkout(String),
    /// `MAX_CONTAINERS` reached (429).
    #[error("the limit of {0} containers is reached; destroy one first")]
    TooManyContainers(usize),
    /// The backend's engine (Docker, …) cannot be reached (503). Its code stays
    /// `docker_unavailable`, as the contract and its clients name it.
    #[error("{0}")]
    EngineUnavailable(String),
    /// What this server's backend cannot do (an image store on a backend without one)
    /// (501).
    #[error("{0}")]
    NotSupported(String),
    /// No image (built from a repository) with this id (404).
    #[error("{0}")]
    ImageNotFound(String),
    /// An image cannot be had: not on the engine and not pulled (policy, registry's
    /// refusal), or its build failed (422).
    #[error("{0}")]
    ImageUnavailable(String),
    /// Image builds are off on this server (403).
    #[error("{0}")]
    BuildsDisabled(String),
    /// The sandbox image lacks a tool an operation needs (422).
    #[error("{0}")]
    MissingTool(String),
    /// An operation inside the sandbox failed for a reason of the sandbox's own (an
    /// errno such as EIO reading `/proc/self/mem`): the client's or the sandbox's
    /// doing, never the server's (422).
    #[error("{0}")]
    Sandbox(String),
    /// The host cannot give what a create asks for (memory, disk) (409).
    #[error("{0}")]
    NoCapacity(String),
    /// Nothing listens on the sandbox port a request was forwarded to (502).
    #[error("{0}")]
    PortClosed(String),
    /// The server on a sandbox port answered with something that is not HTTP, or
    /// broke the connection before its answer (502).
    #[error("{0}")]
    BadGateway(String),
    /// The server on a sandbox port sent no response head within its bound (504).
    #[error("{0}")]
    PortTimeout(String),
    /// Anything else: a defect or an unexpected answer from a dependency (500).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(detail: impl Into<String>) -> Self {
        Error::Invalid(detail.into())
    }

    /// Shorthand for [`Error::Internal`] from a message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Error::Internal(anyhow::anyhow!("{detail}"))
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::ContainerNotFound(_)
            | Error::PathNotFound(_)
            | Error::SessionNotFound(_)
            | Error::SnapshotNotFound(_)
            | Error::ProcessNotFound(_)
            | Error::JobNotFound(_)
            | Error::ImageNotFound(_)
            | Error::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotRunning(_) | Error::Conflict(_) | Error::NoCapacity(_) => {
                StatusCode::CONFLICT
            }
            Error::CommandNotAllowed(_) | Error::BuildsDisabled(_) | Error::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Checkout(_)
            | Error::MissingTool(_)
            | Error::ImageUnavailable(_)
            | Error::Sandbox(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyContainers(_) | Error::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::EngineUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
            Error::PortClosed(_) | Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Error::PortTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short title (`error`) and stable machine code (`code`).
    fn title_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Error::Invalid(_) => ("Invalid request", "invalid_request"),
            Error::Unauthorized => ("Unauthorized", "unauthorized"),
            Error::ContainerNotFound(_) => ("Container not found", "container_not_found"),
            Error::PathNotFound(_) => ("Path not found", "path_not_found"),
            Error::SessionNotFound(_) => ("Session not found", "session_not_found"),
            Error::SnapshotNotFound(_) => ("Snapshot not found", "snapshot_not_found"),
            Error::ProcessNotFound(_) => ("Process not found", "process_not_found"),
            Error::JobNotFound(_) => ("Job not found", "job_not_found"),
            Error::ImageNotFound(_) => ("Image not found", "image_not_found"),
            Error::ImageUnavailable(_) => ("Image unavailable", "image_unavailable"),
            Error::BuildsDisabled(_) => ("Image builds disabled", "builds_disabled"),
            Error::LimitReached(_) => ("Limit reached", "limit_reached"),
            Error::RouteNotFound(_) => ("Not found", "route_not_found"),
            Error::MethodNotAllowed(_) => ("Method not allowed", "method_not_allowed"),
            Error::NotRunning(_) => ("Container not running", "container_not_running"),
            Error::Conflict(_) => ("Conflict", "conflict"),
            Error::CommandNotAllowed(_) => ("Command not allowed", "command_not_allowed"),
            Error::Forbidden(_) => ("Forbidden", "forbidden"),
            Error::TooLarge(_) => ("Payload too large", "too_large"),
            Error::UnsupportedMediaType(_) => ("Unsupported media type", "unsupported_media_type"),
            Error::Checkout(_) => ("Checkout failed", "checkout_failed"),
            Error::MissingTool(_) => ("Image lacks a required tool", "missing_tool"),
            Error::TooManyContainers(_) => ("Too many containers", "too_many_containers"),
            Error::EngineUnavailable(_) => ("Engine unavailable", "docker_unavailable"),
            Error::NotSupported(_) => ("Not supported by this backend", "not_supported"),
            Error::Sandbox(_) => ("Operation failed in the sandbox", "sandbox_error"),
            Error::NoCapacity(_) => ("Not enough capacity", "no_capacity"),
            Error::PortClosed(_) => ("Nothing listens on the port", "port_closed"),
            Error::BadGateway(_) => ("Bad answer from the sandbox", "bad_gateway"),
            Error::PortTimeout(_) => ("No answer from the sandbox", "port_timeout"),
            Error::Internal(_) => ("Internal server error", "internal"),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Short title of the error class.
    pub error: String,
    /// What went wrong, precisely enough to act on.
    pub detail: String,
    /// When the error was answered (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// Stable machine-readable code.
    pub code: String,
}

impl Error {
    /// The body a client sees: an internal error is logged here, once, with its
    /// source chain, and answered generically.
    pub fn public_body(&self) -> ErrorBody {
        let (title, code) = self.title_and_code();
        let detail = match &self {
            Error::Internal(source) => {
                // Logged once here, with the chain; the client gets no internals.
                tracing::error!(error = ?source, "internal error");
                "the server failed to handle this request; see its logs".to_owned()
            }
            Error::EngineUnavailable(reason) => {
                tracing::warn!(%reason, "engine unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        ErrorBody {
            error: title.to_owned(),
            detail,
            timestamp: Utc::now(),
            code: code.to_owned(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.public_body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_source() {
        let response = Error::internal("secret path /etc/x").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn every_client_error_is_4xx() {
        for error in [
            Error::invalid("x"),
            Error::Unauthorized,
            Error::ContainerNotFound("x".into()),
            Error::NotRunning("x".into()),
            Error::TooLarge("x".into()),
            Error::Checkout("x".into()),
            Error::TooManyContainers(1),
        ] {
            assert!(error.status().is_client_error(), "{error:?}");
        }
    }
}
