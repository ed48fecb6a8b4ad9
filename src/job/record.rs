//! One job in memory and on disk: its changing progress, its request file and its
//! results file (JSON Lines), written without credentials, read back at a start.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::sync::Locked as _;

use super::model::*;

/// What is kept on disk about a job besides its results.
///
/// Never a credential: the request is written with every repository URL's user name
/// and password removed, and the entries that had them are listed. The credentialed
/// URLs live in memory only, so a job that outlives its server cannot run those
/// entries again: they end `errored` at the next start ([`CREDENTIALS_NOT_KEPT`]).
/// Keeping them (even encrypted, with a key that would sit beside them) would put a
/// client's token on the server's disk for as long as the job is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct JobFile {
    pub(super) job_id: String,
    pub(super) request: JobRequest,
    /// Indices of the entries whose URL carried credentials that were not written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) credentials_dropped: Vec<usize>,
    pub(super) status: JobStatus,
    pub(super) created_at: DateTime<Utc>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
}

/// A job's changing part.
pub(super) struct Progress {
    pub(super) status: JobStatus,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) results: Vec<Arc<JobResult>>,
    /// Indices of finished entries, in the order they finished (the event feed).
    pub(super) finished: Vec<usize>,
    /// Whether the outputs live only in the results file (a finished job).
    pub(super) outputs_on_disk: bool,
}

/// One job.
pub struct Job {
    pub(super) id: String,
    pub(super) request: JobRequest,
    pub(super) created_at: DateTime<Utc>,
    pub(super) progress: Mutex<Progress>,
    /// Bumped at every change (the event feed waits on it).
    pub(super) changed: watch::Sender<u64>,
    /// Cancelled by a client's cancel.
    pub(super) cancel: CancellationToken,
    /// Cancelled when the job's task has ended (its sandboxes are gone).
    pub(super) ended: CancellationToken,
    /// The results file (JSON Lines, one per finished entry).
    pub(super) results_file: PathBuf,
    /// Held while the results file is appended to or read.
    pub(super) results_lock: Mutex<()>,
}

impl Job {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The job as the API shows it.
    pub fn view(&self) -> JobView {
        let progress = self.lock();
        let mut counts = JobCounts::default();
        for result in &progress.results {
            *match result.status {
                EntryStatus::Pending => &mut counts.pending,
                EntryStatus::Running => &mut counts.running,
                EntryStatus::Succeeded => &mut counts.succeeded,
                EntryStatus::Failed => &mut counts.failed,
                EntryStatus::Errored => &mut counts.errored,
                EntryStatus::Cancelled => &mut counts.cancelled,
            } += 1;
        }
        JobView {
            job_id: self.id.clone(),
            status: progress.status,
            command: self.request.command.clone(),
            created_at: self.created_at,
            started_at: progress.started_at,
            finished_at: progress.finished_at,
            total: progress.results.len(),
            counts,
        }
    }

    /// Every entry's result, in request order. A finished job's outputs are read
    /// from its results file (memory keeps only the rest of each result).
    pub async fn results(self: &Arc<Self>) -> Result<Vec<Arc<JobResult>>> {
        let (mut results, on_disk) = {
            let progress = self.lock();
            (progress.results.clone(), progress.outputs_on_disk)
        };
        if on_disk {
            for result in self.read_results().await? {
                let index = result.index;
                if index < results.len() {
                    results[index] = Arc::new(result);
                }
            }
        }
        Ok(results)
    }

    /// The results file's lines, in the order the entries finished.
    pub(super) async fn read_results(self: &Arc<Self>) -> Result<Vec<JobResult>> {
        let job = self.clone();
        tokio::task::spawn_blocking(move || {
            let _held = job.results_lock.locked();
            read_results(&job.results_file)
        })
        .await
        .map_err(|err| Error::internal(format!("reading a job's results: {err}")))?
        .map_err(|err| Error::internal(format!("reading a job's results: {err}")))
    }

    /// Whether the job completed or was cancelled.
    pub fn is_finished(&self) -> bool {
        self.lock().status.is_finished()
    }

    /// The results that finished, in the order they did, except those in `sent`;
    /// and the job's view when it is finished.
    pub async fn finished_except(
        self: &Arc<Self>,
        sent: &std::collections::HashSet<usize>,
    ) -> Result<(Vec<Arc<JobResult>>, Option<JobView>)> {
        let (mut results, done, on_disk) = {
            let progress = self.lock();
            let results: Vec<Arc<JobResult>> = progress
                .finished
                .iter()
                .filter(|index| !sent.contains(index))
                .map(|&index| progress.results[index].clone())
                .collect();
            (
                results,
                progress.status.is_finished(),
                progress.outputs_on_disk,
            )
        };
        if on_disk && !results.is_empty() {
            results = self
                .read_results()
                .await?
                .into_iter()
                .filter(|result| !sent.contains(&result.index))
                .map(Arc::new)
                .collect();
        }
        Ok((results, done.then(|| self.view())))
    }

    /// Keeps only the results file's copy of the outputs (a finished job's results
    /// are read rarely; memory stays small however many jobs are kept).
    pub(super) fn drop_outputs(&self) {
        let mut progress = self.lock();
        for result in &mut progress.results {
            if !result.stdout.is_empty() || !result.stderr.is_empty() {
                let mut lean = (**result).clone();
                lean.stdout = String::new();
                lean.stderr = String::new();
                *result = Arc::new(lean);
            }
        }
        progress.outputs_on_disk = true;
    }

    /// A receiver that wakes at every change of the job.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.locked()
    }

    pub(super) fn bump(&self) {
        self.changed.send_modify(|version| *version += 1);
    }

    pub(super) fn file(&self) -> JobFile {
        let mut request = self.request.clone();
        let mut credentials_dropped = Vec::new();
        for (index, repo) in request.repos.iter_mut().enumerate() {
            let bare = without_credentials(&repo.repo_url);
            if bare != repo.repo_url {
                repo.repo_url = bare;
                credentials_dropped.push(index);
            }
        }
        let progress = self.lock();
        JobFile {
            job_id: self.id.clone(),
            request,
            credentials_dropped,
            status: progress.status,
            created_at: self.created_at,
            started_at: progress.started_at,
            finished_at: progress.finished_at,
        }
    }
}

/// `raw` without the user name and password of its URL (as it is when it does not
/// parse: the policy refuses it before it could hold any).
pub(super) fn without_credentials(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn new_job(
    id: String,
    request: JobRequest,
    created_at: DateTime<Utc>,
    dir: &Path,
    status: JobStatus,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    kept: Vec<JobResult>,
) -> Job {
    let mut results: Vec<Arc<JobResult>> = request
        .repos
        .iter()
        .enumerate()
        .map(|(index, repo)| Arc::new(JobResult::pending(index, repo)))
        .collect();
    let mut finished = Vec::new();
    for result in kept {
        let index = result.index;
        if index < results.len() && result.status.is_finished() {
            if !results[index].status.is_finished() {
                finished.push(index);
            }
            results[index] = Arc::new(result);
        }
    }
    let results_file = dir.join(format!("{id}.results.jsonl"));
    Job {
        id,
        request,
        created_at,
        progress: Mutex::new(Progress {
            status,
            started_at,
            finished_at,
            results,
            finished,
            outputs_on_disk: false,
        }),
        changed: watch::channel(0).0,
        cancel: CancellationToken::new(),
        ended: CancellationToken::new(),
        results_file,
        results_lock: Mutex::new(()),
    }
}

/// Why an entry whose URL had credentials ends at a restart (see [`JobFile`]).
pub const CREDENTIALS_NOT_KEPT: &str = "the credentials in this entry's repo_url are not kept across a server restart, \
     so the entry could not run again; resubmit it";

/// Reads a job and its results. Entries not finished whose credentials were not kept
/// end `errored` (appended to the results file, so that they read so from now on).
pub(super) fn load(path: &Path) -> anyhow::Result<Job> {
    let file: JobFile = serde_json::from_slice(&std::fs::read(path)?)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let results_path = dir.join(format!("{}.results.jsonl", file.job_id));
    let mut kept = read_results(&results_path)?;
    if !file.status.is_finished() {
        let mut ended = Vec::new();
        for &index in &file.credentials_dropped {
            let Some(repo) = file.request.repos.get(index) else {
                continue;
            };
            if kept
                .iter()
                .any(|r| r.index == index && r.status.is_finished())
            {
                continue;
            }
            let mut result = JobResult::pending(index, repo);
            result.status = EntryStatus::Errored;
            result.error = Some(Error::Conflict(CREDENTIALS_NOT_KEPT.to_owned()).public_body());
            result.finished_at = Some(Utc::now());
            let mut line = serde_json::to_vec(&result)?;
            line.push(b'\n');
            ended.extend_from_slice(&line);
            kept.push(result);
        }
        if !ended.is_empty() {
            // After a line a crash cut short, not glued to it.
            ended.insert(0, b'\n');
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&results_path)?
                .write_all(&ended)?;
        }
    }
    let finished = file.status.is_finished();
    let job = new_job(
        file.job_id,
        file.request,
        file.created_at,
        dir,
        file.status,
        file.started_at,
        file.finished_at,
        kept,
    );
    if finished {
        job.drop_outputs();
    }
    Ok(job)
}

/// The lines of a results file, in the order the entries finished. A line cut by a
/// crash is skipped (its entry runs again).
pub(super) fn read_results(path: &Path) -> std::io::Result<Vec<JobResult>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str::<JobResult>(line).ok())
            .collect()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}
