//! Jobs: one command across many repositories, run by the server with bounded
//! concurrency, persisted as they progress and finished after a restart.
//!
//! A job is its request, kept as given (`DATA_DIR/jobs/<id>.json`, rewritten at each
//! change of the job's status), and its results, appended one line per finished entry
//! (`DATA_DIR/jobs/<id>.results.jsonl`). An entry with no line is still to run: after
//! a crash, the entries that were running run again, and the sandboxes they held
//! (recorded with the job's id) are destroyed first.
//!
//! Each job is one task owned by [`Jobs`]: it waits for the server to be reconciled
//! with the engine, then runs its entries, at most `concurrency` at once, each
//! holding one of the `MAX_JOB_CONTAINERS` places that all jobs share, so that
//! interactive creates always keep the rest of `MAX_CONTAINERS`. An entry that finds
//! `MAX_CONTAINERS` reached anyway waits for room instead of failing. Cancelling a
//! job drops its entries' futures (a create in flight removes its container, a
//! command is killed) and then destroys every sandbox still recorded for it.
//!
//! Here: [`Jobs`], the service and each job's task. [`model`]: what a client sends and
//! sees (the request, validated entry by entry, statuses, results, the view).
//! `record`: a job in memory and on disk (its files, read back at a start).

pub mod model;
mod record;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::WORKSPACE;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec;
use crate::metrics::Metrics;
use crate::sandbox::Sandboxes;
use crate::sync::Locked as _;

pub use model::*;
pub use record::{CREDENTIALS_NOT_KEPT, Job};
use record::{load, new_job};

/// How often an entry that found `MAX_CONTAINERS` reached tries again.
const ROOM_POLL: Duration = Duration::from_millis(250);
/// How long a cancel waits for the job's sandboxes to be gone before answering.
const CANCEL_BOUND: Duration = Duration::from_secs(30);
/// How long the sweep of a job's sandboxes may take at shutdown.
const SHUTDOWN_SWEEP_BOUND: Duration = Duration::from_secs(10);

/// Owns every job.
pub struct Jobs {
    config: Arc<Config>,
    sandboxes: Arc<Sandboxes>,
    metrics: Arc<Metrics>,
    dir: PathBuf,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    /// `MAX_JOB_CONTAINERS` places, shared by every job.
    room: Arc<Semaphore>,
    tasks: Mutex<JoinSet<()>>,
    stop: CancellationToken,
    made: AtomicU64,
}

impl Jobs {
    /// Loads the jobs kept under `DATA_DIR/jobs` (none starts before [`Self::start`]).
    /// An unreadable job is set aside (renamed `*.corrupt`).
    pub fn open(
        config: Arc<Config>,
        sandboxes: Arc<Sandboxes>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let dir = config.data_dir.join("jobs");
        std::fs::create_dir_all(&dir)?;
        let mut jobs = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match load(&path) {
                Ok(job) => {
                    jobs.insert(job.id.clone(), Arc::new(job));
                }
                Err(err) => {
                    tracing::error!(path = %path.display(), %err, "unreadable job set aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        let room = Arc::new(Semaphore::new(config.job_containers()));
        let jobs = Self {
            dir,
            jobs: Mutex::new(jobs),
            room,
            tasks: Mutex::new(JoinSet::new()),
            stop: CancellationToken::new(),
            made: AtomicU64::new(0),
            config,
            sandboxes,
            metrics,
        };
        jobs.update_gauges();
        Ok(jobs)
    }

    /// Starts the task of every job that was not finished when the server stopped.
    pub fn start(self: &Arc<Self>) {
        for job in self.all() {
            if !job.is_finished() {
                tracing::info!(job = %job.id, "resuming a job");
                self.spawn(job);
            }
        }
    }

    /// Stops every job's task (their entries run again at the next start) and waits
    /// for them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.locked());
        while tasks.join_next().await.is_some() {}
    }

    /// Every job, oldest first.
    pub fn all(&self) -> Vec<Arc<Job>> {
        self.map().values().cloned().collect()
    }

    /// A job by id, or 404.
    pub fn get(&self, id: &str) -> Result<Arc<Job>> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::JobNotFound(format!("no job with id {id}")))
    }

    /// Accepts a validated request: the job is persisted, then started.
    pub async fn submit(self: &Arc<Self>, request: JobRequest) -> Result<Arc<Job>> {
        if self.map().len() >= self.config.max_jobs {
            return Err(Error::LimitReached(format!(
                "the limit of {} jobs is reached (MAX_JOBS); delete finished jobs first",
                self.config.max_jobs
            )));
        }
        let created_at = Utc::now();
        let id = format!(
            "job-{}-{}",
            created_at.timestamp_millis(),
            self.made.fetch_add(1, Ordering::Relaxed)
        );
        let job = Arc::new(new_job(
            id,
            request,
            created_at,
            &self.dir,
            JobStatus::Queued,
            None,
            None,
            Vec::new(),
        ));
        self.persist(&job).await?;
        self.map().insert(job.id.clone(), job.clone());
        Metrics::count(&self.metrics.jobs, "submitted");
        self.update_gauges();
        tracing::info!(job = %job.id, entries = job.request.repos.len(), "job accepted");
        self.spawn(job.clone());
        Ok(job)
    }

    /// Cancels a job: pending entries never start, running ones are stopped and their
    /// sandboxes destroyed (awaited, within a bound). 409 for a completed job.
    pub async fn cancel(&self, id: &str) -> Result<JobView> {
        let job = self.get(id)?;
        if job.lock().status == JobStatus::Completed {
            return Err(Error::Conflict(format!("job {id} has already completed")));
        }
        job.cancel.cancel();
        if tokio::time::timeout(CANCEL_BOUND, job.ended.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(job = %id, "a cancelled job's sandboxes are still being removed");
        }
        Ok(job.view())
    }

    /// Forgets a finished job and its results; 409 while it runs.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let job = self.get(id)?;
        if !job.is_finished() {
            return Err(Error::Conflict(format!(
                "job {id} is still running: cancel it first"
            )));
        }
        self.map().remove(id);
        let files = [
            self.dir.join(format!("{id}.json")),
            self.dir.join(format!("{id}.results.jsonl")),
        ];
        tokio::task::spawn_blocking(move || {
            for file in files {
                let _ = std::fs::remove_file(file);
            }
        })
        .await
        .map_err(|err| Error::internal(format!("removing a job's files: {err}")))?;
        self.update_gauges();
        tracing::info!(job = %id, "job deleted");
        Ok(())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Job>>> {
        self.jobs.locked()
    }

    fn spawn(self: &Arc<Self>, job: Arc<Job>) {
        let jobs = self.clone();
        let mut tasks = self.tasks.locked();
        // Finished jobs' tasks are collected here, so the set only holds live ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move { jobs.run(job).await });
    }

    fn update_gauges(&self) {
        let mut by_status = BTreeMap::new();
        for job in self.all() {
            *by_status.entry(job.lock().status.name()).or_insert(0_i64) += 1;
        }
        for status in ["queued", "running", "completed", "cancelled"] {
            self.metrics
                .jobs_by_status
                .get_or_create(&crate::metrics::KindLabels { kind: status })
                .set(by_status.get(status).copied().unwrap_or(0));
        }
    }

    /// The job's task: its entries, then its ending.
    async fn run(self: Arc<Self>, job: Arc<Job>) {
        let outcome = tokio::select! {
            () = self.stop.cancelled() => None,
            () = job.cancel.cancelled() => Some(JobStatus::Cancelled),
            () = self.drive(&job) => Some(JobStatus::Completed),
        };
        // The entries' futures are gone: creates in flight removed their containers,
        // commands were killed. What is still recorded for the job goes now.
        match outcome {
            None => {
                let _ = tokio::time::timeout(SHUTDOWN_SWEEP_BOUND, self.sweep(&job)).await;
            }
            Some(status) => {
                self.sweep(&job).await;
                self.finish(&job, status).await;
            }
        }
        job.ended.cancel();
    }

    /// Runs every entry not yet finished.
    async fn drive(&self, job: &Arc<Job>) {
        // Records and containers must agree first: the sweep reads the records.
        while !self.sandboxes.is_reconciled() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Sandboxes of entries that were running when a previous run stopped.
        self.sweep(job).await;
        let concurrency = job.request.concurrency(&self.config).unwrap_or(1);
        let todo: Vec<usize> = job
            .lock()
            .results
            .iter()
            .filter(|result| !result.status.is_finished())
            .map(|result| result.index)
            .collect();
        futures_util::stream::iter(todo)
            .for_each_concurrent(concurrency, |index| self.run_entry(job, index))
            .await;
    }

    /// Runs one entry: a sandbox, the command, the sandbox destroyed.
    async fn run_entry(&self, job: &Arc<Job>, index: usize) {
        let entry = match job.request.entry(index, &self.config, &self.sandboxes) {
            Ok(mut entry) => match self.sandboxes.apply_disk_limit(&mut entry.resources).await {
                Ok(()) => Ok(entry),
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                let started = Utc::now();
                self.finish_entry(job, index, started, Outcome::Errored(err), None)
                    .await;
                return;
            }
        };
        entry.job_id = Some(job.id.clone());
        let _place = self.room.acquire().await;
        let started_at = Utc::now();
        let started = Instant::now();
        self.mark_running(job, index, started_at).await;
        let created = loop {
            match self.sandboxes.create(entry.clone()).await {
                Err(Error::TooManyContainers(_)) => tokio::time::sleep(ROOM_POLL).await,
                other => break other,
            }
        };
        let (outcome, sandbox) = match created {
            Err(err) => (Outcome::Errored(err), None),
            Ok(sandbox) => {
                let ran = async {
                    let command = exec::Command {
                        command: job.request.command.clone(),
                        working_dir: WORKSPACE.to_owned(),
                        timeout: job.request.timeout(&self.config)?,
                        env: Vec::new(),
                        stdin: None,
                    };
                    self.sandboxes
                        .execute(&sandbox.id, command, self.config.job_output_bytes)
                        .await
                }
                .await;
                if let Err(err) = self.sandboxes.destroy(&sandbox.id).await {
                    tracing::warn!(job = %job.id, sandbox = %sandbox.id, %err, "could not destroy a job's sandbox; the job's sweep retries");
                }
                let outcome = match ran {
                    Ok(result) => Outcome::Ran(result),
                    Err(err) => Outcome::Errored(err),
                };
                (outcome, Some(sandbox))
            }
        };
        self.metrics
            .job_entry_seconds
            .observe(started.elapsed().as_secs_f64());
        self.finish_entry(job, index, started_at, outcome, sandbox.as_deref())
            .await;
    }

    async fn mark_running(&self, job: &Arc<Job>, index: usize, at: DateTime<Utc>) {
        let first = {
            let mut progress = job.lock();
            let mut result = (*progress.results[index]).clone();
            result.status = EntryStatus::Running;
            result.started_at = Some(at);
            progress.results[index] = Arc::new(result);
            if progress.status == JobStatus::Queued {
                progress.status = JobStatus::Running;
                progress.started_at.get_or_insert(at);
                true
            } else {
                false
            }
        };
        job.bump();
        if first {
            self.update_gauges();
            if let Err(err) = self.persist(job).await {
                tracing::warn!(job = %job.id, %err, "could not persist a job's start");
            }
        }
    }

    /// Records an entry's end: in memory, in the results file, in the metrics.
    async fn finish_entry(
        &self,
        job: &Arc<Job>,
        index: usize,
        started_at: DateTime<Utc>,
        outcome: Outcome,
        sandbox: Option<&crate::registry::Sandbox>,
    ) {
        let mut result = (*job.lock().results[index]).clone();
        result.started_at = Some(started_at);
        result.finished_at = Some(Utc::now());
        if let Some(sandbox) = sandbox {
            result.repo_url = sandbox.repo_url.clone();
            result.branch = sandbox.branch.clone();
            result.resolved_commit = Some(sandbox.resolved_commit.clone());
        }
        match outcome {
            Outcome::Ran(ran) => {
                result.status = if ran.exit_code == 0 && !ran.timed_out {
                    EntryStatus::Succeeded
                } else {
                    EntryStatus::Failed
                };
                result.exit_code = Some(ran.exit_code);
                result.stdout = ran.stdout;
                result.stderr = ran.stderr;
                result.stdout_truncated = ran.stdout_truncated;
                result.stderr_truncated = ran.stderr_truncated;
                result.timed_out = ran.timed_out;
                result.execution_time_secs = Some(ran.execution_time_secs);
            }
            Outcome::Errored(err) => {
                result.status = EntryStatus::Errored;
                result.error = Some(err.public_body());
            }
        }
        Metrics::count(&self.metrics.job_entries, result.status.name());
        self.record(job, vec![result]).await;
    }

    /// Makes `results` the entries' results, appends them to the results file and
    /// wakes the event feeds.
    async fn record(&self, job: &Arc<Job>, results: Vec<JobResult>) {
        let job_for_file = job.clone();
        // Memory and file change under the file's lock: both hold the entries in the
        // same (finishing) order.
        let appended = tokio::task::spawn_blocking(move || {
            let _held = job_for_file.results_lock.locked();
            let path = &job_for_file.results_file;
            let mut lines = Vec::new();
            {
                let mut progress = job_for_file.lock();
                for result in results {
                    if let Ok(line) = serde_json::to_vec(&result) {
                        lines.extend_from_slice(&line);
                        lines.push(b'\n');
                    }
                    let index = result.index;
                    progress.results[index] = Arc::new(result);
                    progress.finished.push(index);
                }
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| file.write_all(&lines))
        })
        .await;
        if !matches!(appended, Ok(Ok(()))) {
            tracing::warn!(job = %job.id, "could not persist a job's results; they run again after a restart");
        }
        job.bump();
    }

    /// Ends the job: entries not finished read `cancelled`; the status is persisted.
    async fn finish(&self, job: &Arc<Job>, status: JobStatus) {
        let now = Utc::now();
        let cancelled: Vec<JobResult> = job
            .lock()
            .results
            .iter()
            .filter(|result| !result.status.is_finished())
            .map(|result| {
                let mut result = (**result).clone();
                result.status = EntryStatus::Cancelled;
                result.finished_at = Some(now);
                result
            })
            .collect();
        for _ in &cancelled {
            Metrics::count(&self.metrics.job_entries, EntryStatus::Cancelled.name());
        }
        if !cancelled.is_empty() {
            self.record(job, cancelled).await;
        }
        {
            let mut progress = job.lock();
            progress.status = status;
            progress.finished_at = Some(now);
        }
        if let Err(err) = self.persist(job).await {
            tracing::warn!(job = %job.id, %err, "could not persist a job's end");
        }
        job.drop_outputs();
        Metrics::count(&self.metrics.jobs, status.name());
        self.update_gauges();
        job.bump();
        tracing::info!(job = %job.id, status = status.name(), "job finished");
    }

    /// Destroys every sandbox recorded for the job.
    async fn sweep(&self, job: &Job) {
        let leftovers = self.sandboxes.of_job(&job.id);
        let destroys = leftovers.iter().map(|sandbox| async move {
            if let Err(err) = self.sandboxes.destroy(&sandbox.id).await
                && !matches!(err, Error::ContainerNotFound(_))
            {
                tracing::warn!(job = %job.id, sandbox = %sandbox.id, %err, "could not destroy a job's sandbox");
            }
        });
        futures_util::future::join_all(destroys).await;
    }

    async fn persist(&self, job: &Arc<Job>) -> Result<()> {
        let file = job.file();
        let path = self.dir.join(format!("{}.json", job.id));
        tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
            crate::registry::write_atomically(&path, &bytes)
        })
        .await
        .map_err(|err| Error::internal(format!("persisting a job: {err}")))?
        .map_err(|err| Error::internal(format!("persisting a job: {err}")))
    }
}

/// How an entry ended.
enum Outcome {
    Ran(exec::ExecResult),
    Errored(Error),
}

#[cfg(test)]
mod tests {
    use super::record::*;
    #[test]
    fn result_urls_lose_their_credentials() {
        assert_eq!(
            super::record::without_credentials("https://u:tok@git.example/r.git"),
            "https://git.example/r.git"
        );
        assert_eq!(
            super::record::without_credentials("https://tok@git.example/r.git"),
            "https://git.example/r.git"
        );
        assert_eq!(super::record::without_credentials("not a url"), "not a url");
    }

    use super::*;

    fn request(n: usize) -> JobRequest {
        JobRequest {
            command: "true".to_owned(),
            repos: (0..n)
                .map(|i| JobRepo {
                    repo_url: format!("http://git.example/r{i}"),
                    branch: None,
                    commit: None,
                    depth: None,
                })
                .collect(),
            timeout_secs: None,
            concurrency: None,
            environment_vars: None,
            image: None,
            image_id: None,
            resources: None,
            network: None,
            initial_command: None,
        }
    }

    #[tokio::test]
    async fn a_reloaded_job_keeps_finished_results_and_reruns_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = JobFile {
            job_id: "job-1-0".to_owned(),
            request: request(3),
            credentials_dropped: Vec::new(),
            status: JobStatus::Running,
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            finished_at: None,
        };
        std::fs::write(
            dir.path().join("job-1-0.json"),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        let mut done = JobResult::pending(1, &file.request.repos[1]);
        done.status = EntryStatus::Succeeded;
        done.exit_code = Some(0);
        let mut running = JobResult::pending(2, &file.request.repos[2]);
        running.status = EntryStatus::Running;
        let text = format!(
            "{}\n{}\n{{\"index\": 0, \"repo_u",
            serde_json::to_string(&done).unwrap(),
            serde_json::to_string(&running).unwrap()
        );
        std::fs::write(dir.path().join("job-1-0.results.jsonl"), text).unwrap();

        let job = Arc::new(load(&dir.path().join("job-1-0.json")).unwrap());
        let view = job.view();
        assert_eq!(view.total, 3);
        assert_eq!(view.counts.succeeded, 1);
        assert_eq!(
            view.counts.pending, 2,
            "a torn line and a running entry run again"
        );
        let (finished, done) = job.finished_except(&Default::default()).await.unwrap();
        assert_eq!(finished.len(), 1);
        assert!(done.is_none());
        assert_eq!(view.status, JobStatus::Running);
    }

    #[tokio::test]
    async fn credentials_stay_in_memory_and_their_entries_end_at_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut with_token = request(3);
        with_token.repos[0].repo_url = "http://u:s3cr3t-T0KEN@git.example/r0".to_owned();
        with_token.repos[2].repo_url = "http://s3cr3t-T0KEN@git.example/r2".to_owned();
        let job = new_job(
            "job-3-0".to_owned(),
            with_token,
            Utc::now(),
            dir.path(),
            JobStatus::Running,
            Some(Utc::now()),
            None,
            Vec::new(),
        );
        assert!(
            job.request.repos[0].repo_url.contains("s3cr3t"),
            "in memory"
        );
        let file = job.file();
        let bytes = serde_json::to_vec(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("s3cr3t"));
        assert_eq!(file.credentials_dropped, [0, 2]);
        let path = dir.path().join("job-3-0.json");
        std::fs::write(&path, bytes).unwrap();

        let reloaded = Arc::new(load(&path).unwrap());
        let view = reloaded.view();
        assert_eq!((view.counts.errored, view.counts.pending), (2, 1));
        let results = reloaded.results().await.unwrap();
        let error = results[2].error.as_ref().unwrap();
        assert!(error.detail.contains("resubmit"), "{error:?}");
        assert_eq!(results[2].repo_url, "http://git.example/r2");
        // Written down: a second restart reads the same, and nothing holds the token.
        let again = load(&path).unwrap();
        assert_eq!(again.view().counts.errored, 2);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }

    #[tokio::test]
    async fn counts_add_up_to_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let job = new_job(
            "job-2-0".to_owned(),
            request(4),
            Utc::now(),
            dir.path(),
            JobStatus::Queued,
            None,
            None,
            Vec::new(),
        );
        let view = job.view();
        assert_eq!(view.counts.pending, 4);
        assert_eq!(view.total, 4);
        let job = Arc::new(job);
        assert!(
            job.finished_except(&Default::default())
                .await
                .unwrap()
                .1
                .is_none(),
            "not finished: no done event"
        );
    }

    #[tokio::test]
    async fn a_finished_job_reads_its_outputs_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = JobFile {
            job_id: "job-3-0".to_owned(),
            request: request(2),
            credentials_dropped: Vec::new(),
            status: JobStatus::Completed,
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            finished_at: Some(Utc::now()),
        };
        std::fs::write(
            dir.path().join("job-3-0.json"),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        let lines: Vec<String> = [1, 0]
            .into_iter()
            .map(|index| {
                let mut result = JobResult::pending(index, &file.request.repos[index]);
                result.status = EntryStatus::Succeeded;
                result.stdout = format!("out {index}\n");
                serde_json::to_string(&result).unwrap()
            })
            .collect();
        std::fs::write(
            dir.path().join("job-3-0.results.jsonl"),
            lines.join("\n") + "\n",
        )
        .unwrap();
        let job = Arc::new(load(&dir.path().join("job-3-0.json")).unwrap());
        assert!(
            job.lock().results.iter().all(|r| r.stdout.is_empty()),
            "memory keeps no outputs of a finished job"
        );
        let results = job.results().await.unwrap();
        assert_eq!(results[0].stdout, "out 0\n");
        assert_eq!(results[1].stdout, "out 1\n");
        let (finished, done) = job.finished_except(&[1].into()).await.unwrap();
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].stdout, "out 0\n");
        assert_eq!(done.unwrap().counts.succeeded, 2);
    }
}
