//! How the tools reach repobox: through its HTTP API and nothing else, so that every
//! tool call meets the same validation, command policy and API keys as any client.
//!
//! Two ways there: [`OverHttp`], the CLI's client to a server at `REPOBOX_URL` (for
//! `repobox mcp` on stdio), and [`InProcess`], the server's own API router called
//! directly (for the server's `/mcp` endpoint), with the caller's `Authorization`.

use async_trait::async_trait;
use axum::body::Body as AxumBody;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use repobox_client::{API_PREFIX, Client, Error as ApiError, error_from_body};

/// One request to the API.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// Path under `/api/v1` (`/containers/…`), query included, already encoded.
    pub path: String,
    /// The body.
    pub body: Body,
}

/// The body of a [`Call`].
#[derive(Debug, Clone)]
pub enum Body {
    /// None.
    Empty,
    /// JSON.
    Json(Value),
    /// Raw bytes (`application/octet-stream`).
    Bytes(Vec<u8>),
}

impl Call {
    /// `GET path`.
    pub fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            body: Body::Empty,
        }
    }

    /// `POST path` with a JSON body.
    pub fn post(path: String, body: Value) -> Self {
        Self {
            method: Method::POST,
            path,
            body: Body::Json(body),
        }
    }

    /// `PUT path` with raw bytes.
    pub fn put_bytes(path: String, bytes: Vec<u8>) -> Self {
        Self {
            method: Method::PUT,
            path,
            body: Body::Bytes(bytes),
        }
    }

    /// `DELETE path`.
    pub fn delete(path: String) -> Self {
        Self {
            method: Method::DELETE,
            path,
            body: Body::Empty,
        }
    }
}

/// What the MCP request that led to a call carried, to pass on (HTTP transport only).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Its `Authorization` header.
    pub authorization: Option<HeaderValue>,
    /// Its `x-request-id`, so that the API requests it causes log under the same id.
    pub request_id: Option<HeaderValue>,
}

/// The API, as the tools see it.
#[async_trait]
pub trait ApiClient: Send + Sync + 'static {
    /// Makes `call` on behalf of `caller`; the answer's JSON (`Null` when it has none).
    async fn call(&self, call: Call, caller: &Caller) -> Result<Value, ApiError>;
}

/// A server elsewhere, over HTTP: the CLI's client, with its URL and key.
#[derive(Debug, Clone)]
pub struct OverHttp(pub Client);

#[async_trait]
impl ApiClient for OverHttp {
    async fn call(&self, call: Call, _caller: &Caller) -> Result<Value, ApiError> {
        // The key is the client's own (REPOBOX_API_KEY): a stdio peer has no headers.
        let request = self.0.request(call.method, &call.path);
        let request = match call.body {
            Body::Empty => request,
            Body::Json(value) => request.json(&value),
            Body::Bytes(bytes) => request
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes),
        };
        let response = self.0.send(request).await?;
        Ok(repobox_client::json(response).await?)
    }
}

/// The largest answer read from the in-process API. Its own caps (output, file size)
/// keep answers far below; this only bounds a defect.
const MAX_ANSWER_BYTES: usize = 512 * 1024 * 1024;

/// This server's own API router, called in-process.
#[derive(Clone)]
pub struct InProcess {
    api: axum::Router,
}

impl InProcess {
    /// Calls go to `api`: the API routes with the same middleware (keys included) as
    /// the public ones.
    pub fn new(api: axum::Router) -> Self {
        Self { api }
    }
}

#[async_trait]
impl ApiClient for InProcess {
    async fn call(&self, call: Call, caller: &Caller) -> Result<Value, ApiError> {
        let mut request = Request::builder()
            .method(call.method)
            .uri(format!("{API_PREFIX}{}", call.path));
        if let Some(authorization) = &caller.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        if let Some(id) = &caller.request_id {
            request = request.header("x-request-id", id);
        }
        let body = match call.body {
            Body::Empty => AxumBody::empty(),
            Body::Json(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                AxumBody::from(serde_json::to_vec(&value).map_err(internal)?)
            }
            Body::Bytes(bytes) => {
                request = request
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, bytes.len());
                AxumBody::from(bytes)
            }
        };
        let request = request.body(body).map_err(internal)?;
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|err| ApiError::Other(anyhow::anyhow!("reading the API's answer: {err}")))?;
        if !status.is_success() {
            return Err(error_from_body(status, &bytes));
        }
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|err| ApiError::Other(anyhow::anyhow!("the API's answer is not JSON: {err}")))
    }
}

fn internal(err: impl std::fmt::Display) -> ApiError {
    ApiError::Other(anyhow::anyhow!("building the API request: {err}"))
}
