//! What a client sends and sees of a job: its request (validated entry by entry), its
//! statuses, its results and its view.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::record::without_credentials;
use crate::config::Config;
use crate::error::{Error, ErrorBody, Result};
use crate::request::{CreateContainerRequest, ResourcesRequest};
use crate::sandbox::{NewSandbox, Sandboxes};

/// Default `concurrency` of a job.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// One repository of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRepo {
    /// `http`/`https` URL of a git repository on an allowed host.
    pub repo_url: String,
    /// Branch; the remote's default branch when omitted.
    pub branch: Option<String>,
    /// Commit (full or at least 7 hex digits).
    pub commit: Option<String>,
    /// Commits of history the sandbox's `.git` holds (a shallow clone); the whole
    /// history when omitted.
    #[schema(minimum = 1, maximum = 1000000)]
    pub depth: Option<u32>,
}

/// Body of `POST /jobs`, kept as given. Unknown fields are refused (400): a misspelt
/// `image_id` must not run a whole job on the default image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Run in `/workspace` of each repository's sandbox (by `bash -c`).
    #[schema(example = "git log --oneline | wc -l")]
    pub command: String,
    /// The repositories (1 … `MAX_JOB_REPOS`); results come in this order.
    pub repos: Vec<JobRepo>,
    /// Deadline of each entry's command in seconds (1 … `MAX_EXEC_TIMEOUT_SECS`,
    /// default `DEFAULT_EXEC_TIMEOUT_SECS`).
    pub timeout_secs: Option<i64>,
    /// Entries run at once (1 … `MAX_JOB_CONCURRENCY`, default 4).
    pub concurrency: Option<i64>,
    /// Environment of every sandbox of the job.
    pub environment_vars: Option<BTreeMap<String, String>>,
    /// Image instead of `DOCKER_BASE_IMAGE` (pulled when missing, as on create).
    pub image: Option<String>,
    /// An image built by `POST /images` that every entry runs on (entries keep their
    /// own repositories; for the image's own repository, its commit is the default).
    #[serde(default)]
    pub image_id: Option<String>,
    /// Resource limits of each sandbox.
    pub resources: Option<ResourcesRequest>,
    /// `none` (default), `bridge`, or `{"allow": [...]}` (as on create).
    pub network: Option<crate::request::NetworkSetting>,
    /// Run once in each sandbox before the command.
    pub initial_command: Option<String>,
}

impl JobRequest {
    /// Checks the whole request, every entry included: the first invalid field is
    /// a 400 naming its entry.
    pub fn validate(&self, config: &Config, sandboxes: &Sandboxes) -> Result<()> {
        if self.command.trim().is_empty() || self.command.contains('\0') {
            return Err(Error::invalid(
                "command must be a non-empty command without NUL bytes",
            ));
        }
        if self.repos.is_empty() || self.repos.len() > config.max_job_repos {
            return Err(Error::invalid(format!(
                "repos must hold 1 to {} repositories (MAX_JOB_REPOS), got {}",
                config.max_job_repos,
                self.repos.len()
            )));
        }
        self.timeout(config)?;
        self.concurrency(config)?;
        for index in 0..self.repos.len() {
            self.entry(index, config, sandboxes)?;
        }
        sandboxes.allow(
            &self.command,
            self.environment_vars
                .iter()
                .flat_map(|env| env.keys().map(String::as_str)),
        )?;
        if let Some(initial) = &self.initial_command {
            sandboxes.allow(initial, std::iter::empty())?;
        }
        Ok(())
    }

    /// Each entry's command deadline.
    pub fn timeout(&self, config: &Config) -> Result<Duration> {
        crate::request::validate_timeout(
            config,
            self.timeout_secs
                .unwrap_or_else(|| crate::request::default_timeout_secs(config)),
        )
    }

    /// Entries run at once.
    pub fn concurrency(&self, config: &Config) -> Result<usize> {
        let max = config.max_job_concurrency;
        match self.concurrency {
            None => Ok(DEFAULT_CONCURRENCY.min(max).max(1)),
            Some(n) if n >= 1 && n.unsigned_abs() <= max as u64 => Ok(n.unsigned_abs() as usize),
            Some(_) => Err(Error::invalid(format!(
                "concurrency must be between 1 and {max} (MAX_JOB_CONCURRENCY)"
            ))),
        }
    }

    /// The create request of entry `index`, validated like `POST /containers`.
    pub(super) fn entry(
        &self,
        index: usize,
        config: &Config,
        sandboxes: &Sandboxes,
    ) -> Result<NewSandbox> {
        let repo = &self.repos[index];
        // A backstop only: the job destroys its sandboxes itself. Long enough for the
        // checkout, the initial command and the command.
        let lifetime = self.timeout(config)?.as_secs()
            + config.max_exec_timeout_secs
            + config.git_timeout_secs
            + 300;
        let request = CreateContainerRequest {
            repo_url: Some(repo.repo_url.clone()),
            snapshot_id: None,
            branch: repo.branch.clone(),
            commit: repo.commit.clone(),
            depth: repo.depth,
            max_runtime_secs: Some(lifetime.min(config.max_runtime_secs) as i64),
            environment_vars: self.environment_vars.clone(),
            initial_command: self.initial_command.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            any_repo: true,
            resources: self.resources.clone(),
            network: self.network.clone(),
        };
        request
            .validate(config, sandboxes)
            .map_err(|err| match err {
                Error::Invalid(detail) => Error::Invalid(format!("repos[{index}]: {detail}")),
                other => other,
            })
    }
}

/// A job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted; no entry started yet.
    Queued,
    /// Entries are running.
    Running,
    /// Every entry finished.
    Completed,
    /// Stopped by a client.
    Cancelled,
}

impl JobStatus {
    pub(super) fn is_finished(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Cancelled)
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// The status of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    /// Not started.
    Pending,
    /// Its sandbox is being made or its command runs.
    Running,
    /// The command exited 0.
    Succeeded,
    /// The command exited non-zero or timed out.
    Failed,
    /// The sandbox could not be made or the command could not be run.
    Errored,
    /// The job was cancelled before the entry finished.
    Cancelled,
}

impl EntryStatus {
    pub(super) fn name(self) -> &'static str {
        match self {
            EntryStatus::Pending => "pending",
            EntryStatus::Running => "running",
            EntryStatus::Succeeded => "succeeded",
            EntryStatus::Failed => "failed",
            EntryStatus::Errored => "errored",
            EntryStatus::Cancelled => "cancelled",
        }
    }

    pub(super) fn is_finished(self) -> bool {
        !matches!(self, EntryStatus::Pending | EntryStatus::Running)
    }
}

/// The result of one entry (the spec's *Result*).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// Position in the request's `repos`.
    pub index: usize,
    /// Repository URL, without credentials.
    pub repo_url: String,
    /// Branch checked out (as requested until the sandbox is made).
    pub branch: Option<String>,
    /// Commit as requested.
    pub commit: Option<String>,
    /// Full SHA of the checkout.
    pub resolved_commit: Option<String>,
    /// `pending`, `running`, `succeeded`, `failed`, `errored` or `cancelled`.
    pub status: EntryStatus,
    /// The command's exit code (124 for a timeout).
    pub exit_code: Option<i64>,
    /// Standard output, at most `JOB_OUTPUT_BYTES`.
    pub stdout: String,
    /// Standard error, at most `JOB_OUTPUT_BYTES`.
    pub stderr: String,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    pub stderr_truncated: bool,
    /// Whether the command was killed at its deadline.
    pub timed_out: bool,
    /// The command's wall time.
    pub execution_time_secs: Option<f64>,
    /// Why the entry could not run (`errored`), as an API error body.
    pub error: Option<ErrorBody>,
    /// When the entry started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobResult {
    pub(super) fn pending(index: usize, repo: &JobRepo) -> Self {
        Self {
            index,
            // Never the credentials: results are answered and written to disk, and
            // an entry that fails before its sandbox exists keeps this URL.
            repo_url: without_credentials(&repo.repo_url),
            branch: repo.branch.clone(),
            commit: repo.commit.clone(),
            resolved_commit: None,
            status: EntryStatus::Pending,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            execution_time_secs: None,
            error: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Entries by status; they add up to the job's `total`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct JobCounts {
    /// Not started.
    pub pending: usize,
    /// Running.
    pub running: usize,
    /// Exited 0.
    pub succeeded: usize,
    /// Exited non-zero or timed out.
    pub failed: usize,
    /// Could not run.
    pub errored: usize,
    /// Cancelled.
    pub cancelled: usize,
}

/// A job as the API shows it (the spec's *Job*).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Its id.
    pub job_id: String,
    /// `queued`, `running`, `completed` or `cancelled`.
    pub status: JobStatus,
    /// The command.
    pub command: String,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its first entry started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed or was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    /// Number of entries.
    pub total: usize,
    /// Entries by status.
    pub counts: JobCounts,
}
