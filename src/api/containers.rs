//! Sandboxes: create, list, status, destroy.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Json, validate_env};
use crate::backend::{Network, WORKSPACE};
use crate::config::Config;
use crate::error::{Error, ErrorBody, Result};
use crate::exec::ExecResult;
use crate::git::{RepoUrl, validate_branch, validate_commit};
use crate::registry::{Resources, Sandbox};
use crate::sandbox::{Condition, NewSandbox, Status};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_container, list_containers))
        .routes(routes!(get_container, destroy_container, update_container))
}

/// Body of `POST /containers`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateContainerRequest {
    /// `http`/`https` URL of a git repository on an allowed host (required unless
    /// `snapshot_id` is given).
    #[schema(example = "https://github.com/fastapi/fastapi")]
    pub repo_url: Option<String>,
    /// (ext) Start from this snapshot's filesystem instead of a checkout (then no
    /// `repo_url`, `branch`, `commit` or `image`).
    pub snapshot_id: Option<String>,
    /// Branch to check out; the remote's default branch when omitted.
    pub branch: Option<String>,
    /// Commit to check out (full or at least 7 hex digits).
    pub commit: Option<String>,
    /// Lifetime in seconds; no expiry when omitted.
    pub max_runtime_secs: Option<i64>,
    /// Environment for the container and every command in it.
    pub environment_vars: Option<BTreeMap<String, String>>,
    /// Command run once in `/workspace` after the checkout.
    pub initial_command: Option<String>,
    /// (ext) Image to use instead of `DOCKER_BASE_IMAGE`: any reference within
    /// `ALLOWED_IMAGES`, pulled when missing (`IMAGE_PULL_POLICY`).
    pub image: Option<String>,
    /// (ext) An image built by `POST /images`: the sandbox runs on it, with the
    /// checkout of its repository (at its commit unless `branch`/`commit` say
    /// otherwise), its devcontainer's `containerEnv` under `environment_vars`, and its
    /// `postCreateCommand` as `initial_command` when none is given. `repo_url` may be
    /// omitted; given, it must be the image's.
    pub image_id: Option<String>,
    /// Set for a job's entries: the image of `image_id` runs any repository.
    #[serde(skip)]
    #[schema(ignore)]
    pub any_repo: bool,
    /// (ext) Resource limits, bounded by the server's maxima.
    pub resources: Option<ResourcesRequest>,
    /// (ext) `none` (default) or `bridge` (only when `ALLOW_NETWORK=true`).
    pub network: Option<Network>,
}

/// Requested resources; omitted fields take the server's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ResourcesRequest {
    /// CPUs (fractions allowed).
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    pub memory_mb: Option<u64>,
    /// Process limit.
    pub pids: Option<i64>,
    /// What the sandbox may write, in MiB (its writable layer, `/workspace` included);
    /// only where the engine can enforce it (see `/info`'s `disk_limits`), 400 otherwise.
    pub disk_mb: Option<u64>,
}

/// A sandbox, as every container endpoint returns it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerResponse {
    /// Our id.
    pub container_id: String,
    /// `creating`, `running`, `completed`, `failed`, `timeout` or `destroyed`.
    pub status: Status,
    /// Repository URL (credentials removed).
    pub repo_url: String,
    /// Branch checked out (null for a detached HEAD).
    pub branch: Option<String>,
    /// Commit as requested.
    pub commit: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it will be destroyed automatically.
    pub expires_at: Option<DateTime<Utc>>,
    /// Where the checkout is.
    pub working_directory: String,
    /// (ext) Full SHA of HEAD.
    pub resolved_commit: String,
    /// (ext) Image it runs.
    pub image: String,
    /// (ext) Result of `initial_command` (at most 64 KiB of each stream kept).
    pub initial_command_result: Option<ExecResult>,
    /// (ext) Why the sandbox `failed` (e.g. "out of memory"); null otherwise.
    pub status_reason: Option<String>,
    /// (ext) The job whose entry this sandbox runs (it is destroyed when the entry
    /// ends); null for a sandbox made by a client.
    pub job_id: Option<String>,
    /// (ext) The built image (`POST /images`) it runs on; null otherwise.
    pub image_id: Option<String>,
}

impl ContainerResponse {
    pub(super) fn new(sandbox: &Sandbox, condition: &Condition) -> Self {
        Self {
            container_id: sandbox.id.clone(),
            status: condition.status,
            status_reason: condition.reason.clone(),
            repo_url: sandbox.repo_url.clone(),
            branch: sandbox.branch.clone(),
            commit: sandbox.commit.clone(),
            created_at: sandbox.created_at,
            expires_at: sandbox.expires_at,
            working_directory: WORKSPACE.to_owned(),
            resolved_commit: sandbox.resolved_commit.clone(),
            image: sandbox.image.clone(),
            initial_command_result: sandbox.initial_command_result.clone(),
            job_id: sandbox.job_id.clone(),
            image_id: sandbox.image_id.clone(),
        }
    }
}

/// Body of `GET /containers`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerListResponse {
    /// Every sandbox, oldest first.
    pub containers: Vec<ContainerResponse>,
    /// How many there are.
    pub total_count: usize,
    /// How many are `running`.
    pub active_count: usize,
}

impl CreateContainerRequest {
    pub(crate) fn validate(
        mut self,
        config: &Config,
        sandboxes: &crate::sandbox::Sandboxes,
    ) -> Result<NewSandbox> {
        let snapshots = sandboxes.snapshots();
        let built = match &self.image_id {
            None => None,
            Some(_) if self.image.is_some() || self.snapshot_id.is_some() => {
                return Err(Error::invalid(
                    "image_id names the image: leave out image and snapshot_id",
                ));
            }
            Some(id) => {
                let image = sandboxes.images().get(id)?.record();
                match image.status {
                    crate::image::ImageStatus::Ready => {}
                    crate::image::ImageStatus::Building => {
                        return Err(Error::Conflict(format!(
                            "image {id} is still building; wait for it (GET /images/{id}/logs)"
                        )));
                    }
                    crate::image::ImageStatus::Failed => {
                        return Err(Error::Conflict(format!(
                            "image {id} failed to build: {}",
                            image.error.as_deref().unwrap_or("no reason recorded")
                        )));
                    }
                }
                let given =
                    |field: &Option<String>| field.as_deref().is_some_and(|v| !v.is_empty());
                let own_repo = match &self.repo_url {
                    None => true,
                    Some(url) => {
                        let parsed = RepoUrl::parse(url, config.allowed_git_hosts.items())?;
                        parsed.redacted() == image.repo_url
                    }
                };
                if !own_repo && !self.any_repo {
                    return Err(Error::invalid(format!(
                        "image {id} was built from {}: repo_url must be that repository (or left out)",
                        image.repo_url
                    )));
                }
                if self.repo_url.is_none() {
                    self.repo_url = Some(image.repo_url.clone());
                }
                if own_repo && !given(&self.branch) && !given(&self.commit) {
                    self.commit = Some(image.resolved_commit.clone());
                }
                let mut env = image.container_env.clone();
                env.extend(self.environment_vars.take().unwrap_or_default());
                self.environment_vars = Some(env);
                if self.initial_command.is_none() {
                    self.initial_command = image.post_create_command.clone();
                }
                self.image = Some(image.image.clone());
                Some(image)
            }
        };
        let (repo, snapshot) = match (&self.repo_url, &self.snapshot_id) {
            (Some(url), None) => (
                Some(RepoUrl::parse(url, config.allowed_git_hosts.items())?),
                None,
            ),
            (None, Some(id)) => {
                let given =
                    |field: &Option<String>| field.as_deref().is_some_and(|v| !v.is_empty());
                if given(&self.branch) || given(&self.commit) || self.image.is_some() {
                    return Err(Error::invalid(
                        "a sandbox from a snapshot takes the snapshot's repository, commit and image: leave out branch, commit and image",
                    ));
                }
                (None, Some(snapshots.get(id)?))
            }
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "give either repo_url or snapshot_id, not both",
                ));
            }
            (None, None) => return Err(Error::invalid("repo_url is required")),
        };
        // An empty string is what some clients send for "not given".
        let branch = self.branch.filter(|branch| !branch.is_empty());
        if let Some(branch) = &branch {
            validate_branch(branch)?;
        }
        let commit_as_requested = self.commit.filter(|commit| !commit.is_empty());
        let commit = commit_as_requested
            .as_deref()
            .map(validate_commit)
            .transpose()?;
        let max_runtime = match self.max_runtime_secs {
            None => None,
            Some(secs) if secs <= 0 => {
                return Err(Error::invalid("max_runtime_secs must be positive"));
            }
            Some(secs) if secs.unsigned_abs() > config.max_runtime_secs => {
                return Err(Error::invalid(format!(
                    "max_runtime_secs must be at most {}",
                    config.max_runtime_secs
                )));
            }
            Some(secs) => Some(Duration::from_secs(secs.unsigned_abs())),
        };
        let env = self.environment_vars.unwrap_or_default();
        validate_env("environment_vars", &env)?;
        if let Some(command) = &self.initial_command
            && (command.trim().is_empty() || command.contains('\0'))
        {
            return Err(Error::invalid(
                "initial_command must be a non-empty command without NUL bytes",
            ));
        }
        let image = match self.image {
            None if snapshot.is_some() => snapshot
                .as_ref()
                .map(|snapshot| snapshot.image.clone())
                .unwrap_or_default(),
            None => config.docker_base_image.clone(),
            // Built here: no allowlist (it was checked at the build, where it applies).
            Some(image) if built.is_some() => image,
            Some(image) => {
                crate::image::validate_reference(config, &image)?;
                image
            }
        };
        let requested = self.resources.unwrap_or_default();
        let resources = Resources {
            cpus: requested.cpus.unwrap_or(config.default_cpus),
            memory_mb: requested.memory_mb.unwrap_or(config.default_memory_mb),
            pids: requested.pids.unwrap_or(config.default_pids),
            // Decided with the engine's abilities (`Sandboxes::apply_disk_limit`).
            disk_mb: requested.disk_mb,
        };
        if let Some(disk_mb) = resources.disk_mb
            && !(1..=config.max_disk_mb).contains(&disk_mb)
        {
            return Err(Error::invalid(format!(
                "resources.disk_mb must be in [1, {}]",
                config.max_disk_mb
            )));
        }
        if !(resources.cpus > 0.0 && resources.cpus <= config.max_cpus) {
            return Err(Error::invalid(format!(
                "resources.cpus must be in (0, {}]",
                config.max_cpus
            )));
        }
        if !(6..=config.max_memory_mb).contains(&resources.memory_mb) {
            return Err(Error::invalid(format!(
                "resources.memory_mb must be in [6, {}]",
                config.max_memory_mb
            )));
        }
        if !(16..=config.max_pids).contains(&resources.pids) {
            return Err(Error::invalid(format!(
                "resources.pids must be in [16, {}]",
                config.max_pids
            )));
        }
        let network = self.network.unwrap_or(Network::None);
        if network == Network::Bridge && !config.allow_network {
            return Err(Error::invalid(
                "network \"bridge\" is disabled on this server (ALLOW_NETWORK=false)",
            ));
        }
        Ok(NewSandbox {
            repo,
            snapshot,
            branch,
            commit,
            commit_as_requested,
            max_runtime,
            env,
            initial_command: self.initial_command,
            image,
            resources,
            network,
            job_id: None,
            image_id: built.map(|image| image.image_id),
        })
    }
}

/// Create a sandbox from a git repository; returns once it is usable.
#[utoipa::path(post, path = "/containers", tag = "containers", request_body = CreateContainerRequest, responses(
    (status = 201, body = ContainerResponse),
    (status = 400, body = ErrorBody, description = "Invalid request (URL policy, ref names, limits)"),
    (status = 403, body = ErrorBody, description = "initial_command refused by COMMAND_ALLOWLIST"),
    (status = 404, body = ErrorBody, description = "Unknown snapshot_id or image_id"),
    (status = 409, body = ErrorBody, description = "image_id is still building, or failed; `no_capacity`: resources beyond what the host can give (memory, the engine's store, memory limits together past MEMORY_OVERCOMMIT)"),
    (status = 413, body = ErrorBody, description = "`too_large`: the checkout would take more than the sandbox's disk_mb"),
    (status = 422, body = ErrorBody, description = "Repository, branch or commit cannot be checked out; the image cannot be pulled (the registry's reason), or declares VOLUMEs"),
    (status = 429, body = ErrorBody, description = "MAX_CONTAINERS reached"),
    (status = 503, body = ErrorBody, description = "Docker unreachable"),
))]
pub async fn create_container(
    State(state): State<AppState>,
    Json(request): Json<CreateContainerRequest>,
) -> Result<(StatusCode, Json<ContainerResponse>)> {
    let mut request = request.validate(&state.config, &state.sandboxes)?;
    state
        .sandboxes
        .apply_disk_limit(&mut request.resources)
        .await?;
    // The sandbox's variables reach every command, the initial one included.
    state.sandboxes.allow(
        request.initial_command.as_deref().unwrap_or("true"),
        request.env.keys().map(String::as_str),
    )?;
    let sandbox = state.sandboxes.create(request).await?;
    Ok((
        StatusCode::CREATED,
        Json(ContainerResponse::new(
            &sandbox,
            &Condition::plain(Status::Running),
        )),
    ))
}

/// List sandboxes (destroyed and expired ones are not listed).
#[utoipa::path(get, path = "/containers", tag = "containers", responses(
    (status = 200, body = ContainerListResponse),
    (status = 503, body = ErrorBody),
))]
pub async fn list_containers(State(state): State<AppState>) -> Result<Json<ContainerListResponse>> {
    let listed = state.sandboxes.list().await?;
    let containers: Vec<_> = listed
        .iter()
        .map(|(sandbox, condition)| ContainerResponse::new(sandbox, condition))
        .collect();
    let active_count = containers
        .iter()
        .filter(|c| c.status == Status::Running)
        .count();
    Ok(Json(ContainerListResponse {
        total_count: containers.len(),
        active_count,
        containers,
    }))
}

/// A sandbox's status, read from Docker.
#[utoipa::path(get, path = "/containers/{container_id}", tag = "containers",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses((status = 200, body = ContainerResponse), (status = 404, body = ErrorBody)))]
pub async fn get_container(
    State(state): State<AppState>,
    Path(container_id): Path<String>,
) -> Result<Json<ContainerResponse>> {
    let sandbox = state.sandboxes.get(&container_id)?;
    let condition = state.sandboxes.status(&sandbox).await?;
    Ok(Json(ContainerResponse::new(&sandbox, &condition)))
}

/// Body of `PATCH /containers/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContainerRequest {
    /// The sandbox now expires this many seconds from now (1 … `MAX_RUNTIME_SECS`);
    /// `null`: it no longer expires. Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, required = true)]
    pub max_runtime_secs: Option<Option<i64>>,
}

/// Tells `"field": null` (`Some(None)`) from an absent field (`None`).
#[expect(
    clippy::option_option,
    reason = "absent, null and a value mean three things here"
)]
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// (ext) Extend, shorten or remove a sandbox's lifetime. The new `expires_at` is
/// persisted before the answer and holds across restarts; a sandbox extended a moment
/// before its old deadline is never reaped at the old one.
#[utoipa::path(patch, path = "/containers/{container_id}", tag = "containers",
    params(("container_id" = String, Path, description = "Sandbox id")),
    request_body = UpdateContainerRequest,
    responses(
        (status = 200, body = ContainerResponse),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The sandbox is not running"),
    ))]
pub async fn update_container(
    State(state): State<AppState>,
    Path(container_id): Path<String>,
    Json(request): Json<UpdateContainerRequest>,
) -> Result<Json<ContainerResponse>> {
    let lifetime = match request.max_runtime_secs {
        None => {
            return Err(Error::invalid(
                "max_runtime_secs is required: seconds from now, or null for no expiry",
            ));
        }
        Some(None) => None,
        Some(Some(secs)) => {
            if secs < 1 || secs.unsigned_abs() > state.config.max_runtime_secs {
                return Err(Error::invalid(format!(
                    "max_runtime_secs must be between 1 and {} (MAX_RUNTIME_SECS), or null",
                    state.config.max_runtime_secs
                )));
            }
            Some(Duration::from_secs(secs.unsigned_abs()))
        }
    };
    let sandbox = state
        .sandboxes
        .set_lifetime(&container_id, lifetime)
        .await?;
    Ok(Json(ContainerResponse::new(
        &sandbox,
        &Condition::plain(Status::Running),
    )))
}

/// Destroy a sandbox: its container and everything kept for it.
#[utoipa::path(delete, path = "/containers/{container_id}", tag = "containers",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses((status = 204, description = "Destroyed"), (status = 404, body = ErrorBody)))]
pub async fn destroy_container(
    State(state): State<AppState>,
    Path(container_id): Path<String>,
) -> Result<StatusCode> {
    state.sandboxes.destroy(&container_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
