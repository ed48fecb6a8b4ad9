//! Files: browse, read, write and transfer.
//!
//! Small reads answer JSON; raw files and archives stream both ways with memory
//! bounded whatever their size. The PUT routes lift the global JSON body limit (their
//! own bound is `MAX_UPLOAD_BYTES`, enforced as the body streams).

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::{API_PREFIX, AppState, Json, Query};
use crate::backend::{BodyStream, WORKSPACE};
use crate::error::{Error, ErrorBody, Result};
use crate::files::{self, FileSystemItem, Upload};
use crate::id::SandboxId;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(browse_directory))
        .routes(routes!(read_file))
        .routes(routes!(download_file))
        .routes(unlimited_body(routes!(upload_file)))
        .routes(routes!(download_archive))
        .routes(unlimited_body(routes!(upload_archive)))
}

/// Lifts the global body limit from an upload route (the innermost limit wins); the
/// handler bounds the body itself.
fn unlimited_body(
    (schemas, paths, method_router): UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    (
        schemas,
        paths,
        method_router.layer(DefaultBodyLimit::disable()),
    )
}

/// Query of `GET /containers/{id}/browse`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BrowseQuery {
    /// Absolute path of a directory; `/workspace` by default.
    #[param(example = "/workspace")]
    pub path: Option<String>,
}

/// Query of the routes that name a file.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// Absolute path of a file.
    #[param(example = "/workspace/README.md")]
    pub file_path: String,
}

/// Query of the archive routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArchiveQuery {
    /// Absolute path: what to pack (GET), or the directory to unpack into (PUT).
    #[param(example = "/workspace")]
    pub path: String,
}

/// A directory's entries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DirectoryListing {
    /// The directory, as asked for.
    pub path: String,
    /// Every entry (hidden ones too, not `.` or `..`), sorted by name in byte order.
    pub items: Vec<FileSystemItem>,
    /// Number of items.
    pub total_items: usize,
}

/// Raw bytes (a file or a tar), as the OpenAPI document describes a body.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawBytes(pub Vec<u8>);

/// How [`FileContent::content`] is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Encoding {
    /// The file is valid UTF-8, given as is.
    #[serde(rename = "utf-8")]
    Utf8,
    /// Anything else: base64 of the exact bytes.
    #[serde(rename = "base64")]
    Base64,
}

/// A file's content.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileContent {
    /// The file, as asked for.
    pub path: String,
    /// The content: text, or base64 when `is_binary`.
    pub content: String,
    /// Size in bytes.
    pub size: u64,
    /// `utf-8` or `base64`.
    pub encoding: Encoding,
    /// Whether the file is not valid UTF-8 (and `content` is base64).
    pub is_binary: bool,
}

/// List a directory: every entry, hidden ones included, sorted by name. A symlink to a
/// directory lists the directory.
#[utoipa::path(get, path = "/containers/{container_id}/browse", tag = "files",
    params(("container_id" = String, Path, description = "Sandbox id"), BrowseQuery),
    responses(
        (status = 200, body = DirectoryListing),
        (status = 400, body = ErrorBody, description = "Invalid path, or a file"),
        (status = 404, body = ErrorBody, description = "Unknown container or missing path"),
        (status = 409, body = ErrorBody),
    ))]
pub async fn browse_directory(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Query(query): Query<BrowseQuery>,
) -> Result<Json<DirectoryListing>> {
    state.sandboxes.get(&container_id)?;
    let path = query.path.unwrap_or_else(|| WORKSPACE.to_owned());
    files::validate_path("path", &path)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let items = files::list_directory(&agent, &path).await?;
    Ok(Json(DirectoryListing {
        path,
        total_items: items.len(),
        items,
    }))
}

/// Read a file: UTF-8 text as is, anything else base64. Files above `MAX_FILE_BYTES`
/// are refused (413) in favour of `/files/raw`. A symlink is read through to its target.
#[utoipa::path(get, path = "/containers/{container_id}/files", tag = "files",
    params(("container_id" = String, Path, description = "Sandbox id"), FileQuery),
    responses(
        (status = 200, body = FileContent),
        (status = 400, body = ErrorBody, description = "Invalid path, or a directory"),
        (status = 404, body = ErrorBody, description = "Unknown container or missing file"),
        (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "Above MAX_FILE_BYTES: use /files/raw"),
    ))]
pub async fn read_file(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Query(query): Query<FileQuery>,
) -> Result<Json<FileContent>> {
    state.sandboxes.get(&container_id)?;
    let path = query.file_path;
    files::validate_path("file_path", &path)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let content = files::read_file(&agent, &path, state.config.max_file_bytes)
        .await
        .map_err(|err| match err {
            Error::TooLarge(detail) => Error::TooLarge(format!(
                "{detail}; download it from {}",
                raw_url(container_id.as_str(), &path)
            )),
            other => other,
        })?;
    let size = content.len() as u64;
    let (content, encoding) = match String::from_utf8(content) {
        Ok(text) => (text, Encoding::Utf8),
        Err(err) => (
            base64::engine::general_purpose::STANDARD.encode(err.as_bytes()),
            Encoding::Base64,
        ),
    };
    Ok(Json(FileContent {
        path,
        content,
        size,
        encoding,
        is_binary: encoding == Encoding::Base64,
    }))
}

/// A streamed download of `content_type`, with its length when known.
pub(super) fn streamed<S>(stream: S, content_type: &'static str, length: Option<u64>) -> Response
where
    S: futures_util::TryStream + Send + 'static,
    S::Ok: Into<axum::body::Bytes>,
    S::Error: Into<axum::BoxError>,
{
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// The raw endpoint for a file, as a client would call it.
fn raw_url(container_id: &str, path: &str) -> String {
    let path: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    format!("{API_PREFIX}/containers/{container_id}/files/raw?file_path={path}")
}

/// (ext) Download a file's exact bytes, any size, streamed. A symlink is read through
/// to its target.
#[utoipa::path(get, path = "/containers/{container_id}/files/raw", tag = "files",
    params(("container_id" = String, Path, description = "Sandbox id"), FileQuery),
    responses(
        (status = 200, body = inline(RawBytes), content_type = "application/octet-stream"),
        (status = 400, body = ErrorBody, description = "Invalid path, or a directory"),
        (status = 404, body = ErrorBody, description = "Unknown container or missing file"),
        (status = 409, body = ErrorBody),
    ))]
pub async fn download_file(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Query(query): Query<FileQuery>,
) -> Result<Response> {
    state.sandboxes.get(&container_id)?;
    files::validate_path("file_path", &query.file_path)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let file = files::open_file(&agent, &query.file_path, None).await?;
    Ok(streamed(
        file.data,
        "application/octet-stream",
        Some(file.size),
    ))
}

/// (ext) Write the request body to a file (any size up to `MAX_UPLOAD_BYTES`):
/// missing parent directories are created, the file gets mode 0644 and owner root.
/// The file is replaced only once the whole body is in. Answers the file's item.
#[utoipa::path(put, path = "/containers/{container_id}/files/raw", tag = "files",
    params(("container_id" = String, Path, description = "Sandbox id"), FileQuery),
    request_body(content = inline(RawBytes), content_type = "application/octet-stream"),
    responses(
        (status = 201, body = FileSystemItem, description = "Written"),
        (status = 400, body = ErrorBody, description = "Invalid path, a directory there, or a body of another length than its Content-Length"),
        (status = 404, body = ErrorBody, description = "Unknown container"),
        (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "Above MAX_UPLOAD_BYTES"),
    ))]
pub async fn upload_file(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Query(query): Query<FileQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FileSystemItem>)> {
    state.sandboxes.get(&container_id)?;
    let path = query.file_path;
    files::validate_path("file_path", &path)?;
    files::split_file_path(&path)?;
    let limit = state.config.max_upload_bytes;
    let length = content_length(&headers, limit)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let upload = Upload::new(body_stream(body), length, limit);
    let item = files::write_file(&agent, &path, upload).await?;
    Ok((StatusCode::CREATED, Json(item)))
}

/// (ext) Download a tar of a path (a directory with everything under it, a file, or a
/// symlink as a link), streamed.
#[utoipa::path(get, path = "/containers/{container_id}/archive", tag = "files",
    params(("container_id" = String, Path, description = "Sandbox id"), ArchiveQuery),
    responses(
        (status = 200, body = inline(RawBytes), content_type = "application/x-tar"),
        (status = 400, body = ErrorBody, description = "Invalid path"),
        (status = 404, body = ErrorBody, description = "Unknown container or missing path"),
        (status = 409, body = ErrorBody),
    ))]
pub async fn download_archive(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Query(query): Query<ArchiveQuery>,
) -> Result<Response> {
    state.sandboxes.get(&container_id)?;
    files::validate_path("path", &query.path)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let tar = files::download_archive(&agent, &query.path).await?;
    Ok(streamed(tar, "application/x-tar", None))
}

/// (ext) Unpack a tar body into an existing directory (up to `MAX_UPLOAD_BYTES`).
/// Answers 204 No Content.
#[utoipa::path(put, path = "/containers/{container_id}/archive", tag = "files",
    params(("container_id" = String, Path, description = "Sandbox id"), ArchiveQuery),
    request_body(content = inline(RawBytes), content_type = "application/x-tar"),
    responses(
        (status = 204, description = "Unpacked"),
        (status = 400, body = ErrorBody, description = "Invalid path, not a directory, or not a valid tar"),
        (status = 404, body = ErrorBody, description = "Unknown container or missing directory"),
        (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "Above MAX_UPLOAD_BYTES"),
    ))]
pub async fn upload_archive(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
    Query(query): Query<ArchiveQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode> {
    state.sandboxes.get(&container_id)?;
    files::validate_path("path", &query.path)?;
    let limit = state.config.max_upload_bytes;
    let length = content_length(&headers, limit)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let upload = Upload::new(body_stream(body), length, limit);
    files::upload_archive(&agent, &query.path, upload).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The declared body length, refused at once when above `limit`.
pub(super) fn content_length(headers: &HeaderMap, limit: u64) -> Result<Option<u64>> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    let length: u64 = value
        .to_str()
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| Error::invalid("Content-Length is not a number"))?;
    if length > limit {
        return Err(Error::TooLarge(format!(
            "the upload is {length} bytes, above the limit of {limit} bytes"
        )));
    }
    Ok(Some(length))
}

pub(super) fn body_stream(body: Body) -> BodyStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_url_encodes_the_path() {
        assert_eq!(
            raw_url("repo-container-1-0", "/workspace/a b&c.txt"),
            "/api/v1/containers/repo-container-1-0/files/raw?file_path=%2Fworkspace%2Fa+b%26c.txt"
        );
    }

    #[test]
    fn content_length_is_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers, 10).unwrap(), None);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(10u64));
        assert_eq!(content_length(&headers, 10).unwrap(), Some(10));
        assert_eq!(
            content_length(&headers, 9).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("ten"));
        assert_eq!(
            content_length(&headers, 10).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
