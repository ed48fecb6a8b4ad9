//! Jobs: one command across many repositories, as one call.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Json, Query};
use crate::error::{Error, ErrorBody, Result};
use crate::job::{Job, JobRequest, JobResult, JobView};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job, delete_job))
        .routes(routes!(get_job_results))
        .routes(routes!(job_events))
        .routes(routes!(cancel_job))
}

/// `GET /jobs`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Every job kept, oldest first.
    pub jobs: Vec<JobView>,
}

/// `GET /jobs/{id}/results`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobResults {
    /// One per repository, in request order.
    pub results: Vec<JobResult>,
}

/// Query of `GET /jobs/{id}/results`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ResultsQuery {
    /// `json` (default) or `jsonl` (one result per line, `application/x-ndjson`).
    #[param(inline)]
    pub format: Option<ResultsFormat>,
}

/// How results are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultsFormat {
    /// `{"results": […]}`.
    Json,
    /// JSON Lines.
    Jsonl,
}

/// Run a command in a fresh sandbox of each repository (created, run, destroyed),
/// with bounded concurrency. Every entry is validated first; the job runs after the
/// answer.
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = JobRequest, responses(
    (status = 202, body = JobView, description = "Accepted; it runs in the background"),
    (status = 400, body = ErrorBody, description = "An invalid field or entry (nothing started)"),
    (status = 403, body = ErrorBody, description = "The command refused by COMMAND_ALLOWLIST"),
    (status = 404, body = ErrorBody, description = "Unknown image_id"),
    (status = 409, body = ErrorBody, description = "image_id is still building, or failed"),
    (status = 413, body = ErrorBody),
    (status = 415, body = ErrorBody),
    (status = 429, body = ErrorBody, description = "MAX_JOBS reached"),
))]
pub async fn create_job(
    State(state): State<AppState>,
    Json(request): Json<JobRequest>,
) -> Result<(StatusCode, Json<JobView>)> {
    request.validate(&state.config, &state.sandboxes)?;
    let job = state.jobs.submit(request).await?;
    Ok((StatusCode::ACCEPTED, Json(job.view())))
}

/// Every job kept.
#[utoipa::path(get, path = "/jobs", tag = "jobs", responses((status = 200, body = JobList)))]
pub async fn list_jobs(State(state): State<AppState>) -> Json<JobList> {
    Json(JobList {
        jobs: state.jobs.all().iter().map(|job| job.view()).collect(),
    })
}

/// A job's status and counts.
#[utoipa::path(get, path = "/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>> {
    Ok(Json(state.jobs.get(&job_id)?.view()))
}

/// Forget a finished or cancelled job and its results.
#[utoipa::path(delete, path = "/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "Job id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The job is still running"),
    ))]
pub async fn delete_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<StatusCode> {
    state.jobs.delete(&job_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every entry's result in request order (pending and running ones too), as JSON or
/// JSON Lines.
#[utoipa::path(get, path = "/jobs/{job_id}/results", tag = "jobs",
    params(("job_id" = String, Path, description = "Job id"), ResultsQuery),
    responses(
        (status = 200, description = "JSON, or with format=jsonl one Result per line (application/x-ndjson)", content(
            (JobResults = "application/json"),
            (inline(super::files::RawBytes) = "application/x-ndjson"),
        )),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get_job_results(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Query(query): Query<ResultsQuery>,
) -> Result<Response> {
    let job = state.jobs.get(&job_id)?;
    let results = job.results().await?;
    if query.format == Some(ResultsFormat::Jsonl) {
        let mut body = Vec::new();
        for result in &results {
            serde_json::to_writer(&mut body, &**result)
                .map_err(|err| Error::internal(format!("encoding a result: {err}")))?;
            body.push(b'\n');
        }
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            )],
            Body::from(body),
        )
            .into_response());
    }
    Ok(Json(JobResults {
        results: results.iter().map(|result| (**result).clone()).collect(),
    })
    .into_response())
}

/// Results as they finish, as Server-Sent Events: a `result` event for each entry
/// already finished, then one as each further entry finishes, then `done` (the Job).
#[utoipa::path(get, path = "/jobs/{job_id}/events", tag = "jobs",
    params(("job_id" = String, Path, description = "Job id")),
    responses(
        (status = 200, content_type = "text/event-stream", description = "Events: result (a Result), done (the Job)"),
        (status = 404, body = ErrorBody),
    ))]
pub async fn job_events(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Response> {
    let job = state.jobs.get(&job_id)?;
    let mut response = Sse::new(events(job))
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The feed of one job: what finished since the last look, at every change.
fn events(
    job: std::sync::Arc<Job>,
) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
    let watch = job.watch();
    let sent = std::collections::HashSet::new();
    futures_util::stream::unfold(Some((job, watch, sent)), |state| async move {
        let (job, mut watch, mut sent) = state?;
        loop {
            // Marked seen before reading: a change after this read wakes us.
            watch.borrow_and_update();
            let (results, done) = match job.finished_except(&sent).await {
                Ok(found) => found,
                Err(err) => {
                    let body = err.public_body();
                    return Some((
                        vec![encode(SseEvent::default().event("error"), &body)],
                        None,
                    ));
                }
            };
            if !results.is_empty() || done.is_some() {
                let mut events: Vec<SseEvent> = results
                    .iter()
                    .map(|result| {
                        sent.insert(result.index);
                        encode(SseEvent::default().event("result"), &**result)
                    })
                    .collect();
                let next = match done {
                    Some(view) => {
                        events.push(encode(SseEvent::default().event("done"), &view));
                        None
                    }
                    None => Some((job, watch, sent)),
                };
                return Some((events, next));
            }
            if watch.changed().await.is_err() {
                return None;
            }
        }
    })
    .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
}

fn encode(event: SseEvent, data: &impl Serialize) -> SseEvent {
    event.json_data(data).unwrap_or_else(|_| {
        SseEvent::default()
            .event("error")
            .data("could not encode event")
    })
}

/// Stop a job: pending entries never start, running commands are killed and their
/// sandboxes destroyed; all of them read `cancelled`.
#[utoipa::path(post, path = "/jobs/{job_id}/cancel", tag = "jobs",
    params(("job_id" = String, Path, description = "Job id")),
    responses(
        (status = 202, body = JobView, description = "Cancelled"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The job has already completed"),
    ))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<(StatusCode, Json<JobView>)> {
    let view = state.jobs.cancel(&job_id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
