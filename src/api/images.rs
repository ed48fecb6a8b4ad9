//! Images built from a repository's own recipe: its Dockerfile or devcontainer.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Json};
use crate::error::{ErrorBody, Result};
use crate::git::{RepoUrl, validate_branch, validate_commit};
use crate::image::{Build, BuildFrom, BuildRequest, Image};
use crate::request::validate_env;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_image, list_images))
        .routes(routes!(get_image, delete_image))
        .routes(routes!(image_logs))
}

/// Body of `POST /images`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateImageRequest {
    /// `http`/`https` URL of a git repository on an allowed host.
    pub repo_url: String,
    /// Branch; the remote's default branch when omitted.
    pub branch: Option<String>,
    /// Commit (full or at least 7 hex digits).
    pub commit: Option<String>,
    /// `dockerfile` (the repository's `Dockerfile`, or `dockerfile`) or
    /// `devcontainer` (`.devcontainer/devcontainer.json` or `.devcontainer.json`).
    pub from: BuildFrom,
    /// Path of the Dockerfile in the repository (`from: dockerfile`; default
    /// `Dockerfile`); the repository's root is the context.
    pub dockerfile: Option<String>,
    /// Build arguments (`ARG`s), over a devcontainer's `build.args`.
    pub build_args: Option<BTreeMap<String, String>>,
}

/// Body of `GET /images`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    /// Every image, oldest first.
    pub images: Vec<Image>,
}

/// Build an image from the repository's Dockerfile or devcontainer (only with
/// `ALLOW_IMAGE_BUILDS=true`). The repository is resolved and the recipe read before
/// the answer; the build runs after it (follow it at `/images/{image_id}/logs`). The
/// same repository tree and recipe answer the image already built (or building).
#[utoipa::path(post, path = "/images", tag = "images", request_body = CreateImageRequest, responses(
    (status = 202, body = Image, description = "Building, or the same image already built"),
    (status = 400, body = ErrorBody, description = "Invalid field, or a recipe repobox does not support (e.g. devcontainer features)"),
    (status = 403, body = ErrorBody, description = "Builds are off (ALLOW_IMAGE_BUILDS=false)"),
    (status = 413, body = ErrorBody),
    (status = 415, body = ErrorBody),
    (status = 422, body = ErrorBody, description = "The repository, commit or recipe file cannot be found"),
    (status = 429, body = ErrorBody, description = "MAX_IMAGES reached"),
    (status = 503, body = ErrorBody, description = "Docker unreachable"),
))]
pub async fn create_image(
    State(state): State<AppState>,
    Json(request): Json<CreateImageRequest>,
) -> Result<(StatusCode, Json<Image>)> {
    let repo = RepoUrl::parse(&request.repo_url, state.config.allowed_git_hosts.items())?;
    let branch = request.branch.filter(|branch| !branch.is_empty());
    if let Some(branch) = &branch {
        validate_branch(branch)?;
    }
    let commit = request
        .commit
        .filter(|commit| !commit.is_empty())
        .as_deref()
        .map(validate_commit)
        .transpose()?;
    let build_args = request.build_args.unwrap_or_default();
    validate_env("build_args", &build_args)?;
    let image = state
        .sandboxes
        .build_image(BuildRequest {
            repo,
            branch,
            commit,
            from: request.from,
            dockerfile: request.dockerfile,
            build_args,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(image)))
}

/// Every image built (or being built, or failed), oldest first.
#[utoipa::path(get, path = "/images", tag = "images", responses((status = 200, body = ImageList)))]
pub async fn list_images(State(state): State<AppState>) -> Json<ImageList> {
    Json(ImageList {
        images: state.sandboxes.images().list(),
    })
}

/// One image.
#[utoipa::path(get, path = "/images/{image_id}", tag = "images",
    params(("image_id" = String, Path, description = "Image id")),
    responses((status = 200, body = Image), (status = 404, body = ErrorBody)))]
pub async fn get_image(
    State(state): State<AppState>,
    Path(image_id): Path<String>,
) -> Result<Json<Image>> {
    Ok(Json(state.sandboxes.images().get(&image_id)?.record()))
}

/// Delete an image (its record, its output, and the engine's image).
#[utoipa::path(delete, path = "/images/{image_id}", tag = "images",
    params(("image_id" = String, Path, description = "Image id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A sandbox runs on it, or it is still building"),
        (status = 503, body = ErrorBody, description = "Docker unreachable"),
    ))]
pub async fn delete_image(
    State(state): State<AppState>,
    Path(image_id): Path<String>,
) -> Result<StatusCode> {
    state.sandboxes.delete_image(&image_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The build's output as Server-Sent Events: `log` events (the output, as it comes),
/// then `done` with the Image. A finished build replays at once.
#[utoipa::path(get, path = "/images/{image_id}/logs", tag = "images",
    params(("image_id" = String, Path, description = "Image id")),
    responses(
        (status = 200, content_type = "text/event-stream", description = "Events: log (output text), done (the Image)"),
        (status = 404, body = ErrorBody),
    ))]
pub async fn image_logs(
    State(state): State<AppState>,
    Path(image_id): Path<String>,
) -> Result<Response> {
    let build = state.sandboxes.images().get(&image_id)?;
    let mut response = Sse::new(events(build))
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The feed of one build: its output since the last look, at every change, then done.
fn events(
    build: std::sync::Arc<Build>,
) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
    let watch = build.subscribe();
    futures_util::stream::unfold(Some((build, watch, 0usize)), |state| async move {
        let (build, mut watch, offset) = state?;
        loop {
            // Marked seen before reading: a change after this read wakes us.
            watch.borrow_and_update();
            let (text, next, finished) = build.output_since(offset);
            if finished {
                let mut events = Vec::new();
                if !text.is_empty() {
                    events.push(SseEvent::default().event("log").data(text));
                }
                let done = SseEvent::default()
                    .event("done")
                    .json_data(build.record())
                    .unwrap_or_else(|_| {
                        SseEvent::default()
                            .event("error")
                            .data("could not encode event")
                    });
                events.push(done);
                return Some((events, None));
            }
            if !text.is_empty() {
                return Some((
                    vec![SseEvent::default().event("log").data(text)],
                    Some((build, watch, next)),
                ));
            }
            if watch.changed().await.is_err() {
                return None;
            }
        }
    })
    .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
}
