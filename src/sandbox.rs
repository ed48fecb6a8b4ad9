//! Sandbox lifecycle: create, status, destroy, expiry and reconciliation with Docker.
//!
//! A create runs the git work and the container's creation at the same time (each
//! takes a few hundred milliseconds and neither needs the other), then streams the
//! checkout into the container. Until its record is written, a sandbox being created
//! is owned by a guard that removes its container if the create fails or its request
//! is dropped, so a failed or abandoned create leaves nothing behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Config;
use crate::docker::{
    ContainerState, LABEL_ID, LABEL_PREFIX, Network, PathKind, Runtime, SandboxSpec, WORKSPACE,
};
use crate::error::{Error, Result};
use crate::exec;
use crate::git::{Checkout, GitCache, RepoUrl, Tree};
use crate::metrics::Metrics;
use crate::reaper::Expiries;
use crate::registry::{Registry, Resources, Sandbox};

/// A sandbox's status, as the seed names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Usable.
    Running,
    /// Its container stopped on its own.
    Completed,
    /// Its container is in an unusable state.
    Failed,
    /// Expired.
    Timeout,
    /// Destroyed.
    Destroyed,
}

/// A validated create request.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    /// Repository.
    pub repo: RepoUrl,
    /// Branch to check out (`None`: the remote's default).
    pub branch: Option<String>,
    /// Commit to check out (lowercase hex).
    pub commit: Option<String>,
    /// Commit exactly as the client wrote it (echoed back, as the seed does).
    pub commit_as_requested: Option<String>,
    /// Lifetime.
    pub max_runtime: Option<Duration>,
    /// Environment for the container and every command.
    pub env: BTreeMap<String, String>,
    /// Command to run once after the checkout.
    pub initial_command: Option<String>,
    /// Image.
    pub image: String,
    /// Limits.
    pub resources: Resources,
    /// Network mode.
    pub network: Network,
}

/// Owns every sandbox.
pub struct Sandboxes {
    config: Arc<Config>,
    runtime: Runtime,
    git: GitCache,
    registry: Registry,
    expiries: Expiries,
    metrics: Arc<Metrics>,
    reconciled: AtomicBool,
}

impl Sandboxes {
    /// Opens the registry and the git cache (no Docker calls yet: see [`Self::reconcile`]).
    pub fn open(
        config: Arc<Config>,
        runtime: Runtime,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let registry = Registry::open(&config.data_dir)?;
        let git = GitCache::open(
            &config.cache_dir,
            Duration::from_secs(config.git_timeout_secs),
            config.tree_cache_mb.saturating_mul(1024 * 1024),
        )?;
        let expiries = Expiries::default();
        for sandbox in registry.all() {
            if let Some(at) = sandbox.expires_at {
                expiries.schedule(&sandbox.id, at);
            }
        }
        metrics.sandboxes_active.set(registry.len() as i64);
        Ok(Self {
            config,
            runtime,
            git,
            registry,
            expiries,
            metrics,
            reconciled: AtomicBool::new(false),
        })
    }

    /// The Docker boundary.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The expiry schedule (for the reaper).
    pub fn expiries(&self) -> &Expiries {
        &self.expiries
    }

    /// Number of live sandboxes.
    pub fn count(&self) -> usize {
        self.registry.len()
    }

    /// A sandbox by id, or 404.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        self.registry
            .get(id)
            .ok_or_else(|| Error::ContainerNotFound(id.to_owned()))
    }

    /// Creates a sandbox; returns once it is usable (or has failed, leaving nothing).
    pub async fn create(&self, request: NewSandbox) -> Result<Arc<Sandbox>> {
        let result = self.create_inner(request).await;
        Metrics::count(
            &self.metrics.creates,
            if result.is_ok() { "ok" } else { "failed" },
        );
        result
    }

    async fn create_inner(&self, request: NewSandbox) -> Result<Arc<Sandbox>> {
        let mut slot = self.registry.reserve(self.config.max_containers)?;
        let created_at = Utc::now();
        let id = slot.assign_id(created_at)?;
        let expires_at = request.max_runtime.map(|lifetime| {
            created_at + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX)
        });
        let spec = self.spec(&id, &request, created_at, expires_at);

        let clone_started = Instant::now();
        // `join!` polls in order: the container's request goes out first, before the
        // git processes are spawned (spawning holds the thread for a moment).
        let (container, checkout) = tokio::join!(
            async {
                let docker_id = self.runtime.create(&spec).await?;
                let guard = ContainerGuard::new(self.runtime.clone(), docker_id);
                let shell = self.shell(&guard.docker_id).await;
                Ok::<_, Error>((guard, shell))
            },
            async {
                let checkout = self
                    .git
                    .checkout(
                        &request.repo,
                        request.branch.as_deref(),
                        request.commit.as_deref(),
                        &id,
                    )
                    .await;
                self.metrics
                    .clone_seconds
                    .observe(clone_started.elapsed().as_secs_f64());
                checkout
            }
        );
        // The container is the guard's until the record is written: on any error the
        // container is removed (awaited), and the checkout's temporary tree goes with it.
        let (guard, shell) = container?;
        let docker_id = guard.docker_id.clone();
        let provisioned = async {
            let checkout = checkout?;
            let shell = shell?;
            Metrics::count(
                &self.metrics.cache,
                if checkout.cache_hit { "hit" } else { "miss" },
            );
            let Checkout {
                tree,
                branch,
                commit: resolved_commit,
                ..
            } = checkout;
            let reused = matches!(tree, Tree::Cached(_));
            Metrics::count(
                &self.metrics.cache,
                if reused { "tree_hit" } else { "tree_miss" },
            );
            let tar = self.git.tar(tree, WORKSPACE.trim_start_matches('/'));
            self.runtime.put_archive(&docker_id, "/", tar).await?;

            let initial_command_result = match &request.initial_command {
                Some(command) => {
                    let command = exec::Command {
                        command: command.clone(),
                        working_dir: WORKSPACE.to_owned(),
                        timeout: Duration::from_secs(self.config.max_exec_timeout_secs),
                        env: Vec::new(),
                    };
                    let cap = self.config.max_output_bytes;
                    Some(exec::run(&self.runtime, &docker_id, &shell, command, cap).await?)
                }
                None => None,
            };
            let sandbox = Sandbox {
                id: id.clone(),
                docker_id: docker_id.clone(),
                repo_url: request.repo.redacted().to_owned(),
                branch,
                commit: request.commit_as_requested.clone(),
                resolved_commit,
                created_at,
                expires_at,
                image: request.image.clone(),
                shell,
                network: request.network,
                resources: request.resources,
                initial_command_result,
            };
            self.registry.insert(sandbox, slot).await
        }
        .await;
        let sandbox = match provisioned {
            Ok(sandbox) => sandbox,
            Err(err) => {
                guard.remove().await;
                return Err(err);
            }
        };
        guard.keep();
        if let Some(at) = expires_at {
            self.expiries.schedule(&id, at);
        }
        self.metrics
            .sandboxes_active
            .set(self.registry.len() as i64);
        tracing::info!(sandbox = %id, repo = %sandbox.repo_url, commit = %sandbox.resolved_commit, "sandbox created");
        Ok(sandbox)
    }

    fn spec(
        &self,
        id: &str,
        request: &NewSandbox,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> SandboxSpec {
        let mut labels = HashMap::from([
            (
                format!("{LABEL_PREFIX}repo_url"),
                request.repo.redacted().to_owned(),
            ),
            (format!("{LABEL_PREFIX}created_at"), created_at.to_rfc3339()),
        ]);
        if let Some(at) = expires_at {
            labels.insert(format!("{LABEL_PREFIX}expires_at"), at.to_rfc3339());
        }
        SandboxSpec {
            id: id.to_owned(),
            name: format!("{id}.{}", self.registry.instance()),
            instance: self.registry.instance().to_owned(),
            image: request.image.clone(),
            env: request
                .env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
            cpus: request.resources.cpus,
            memory_mb: request.resources.memory_mb,
            pids: request.resources.pids,
            network: request.network,
            labels,
            runtime: (!self.config.docker_runtime.is_empty())
                .then(|| self.config.docker_runtime.clone()),
        }
    }

    /// `/bin/bash` when the image has it, else `/bin/sh`.
    async fn shell(&self, docker_id: &str) -> Result<String> {
        match self.runtime.stat(docker_id, "/bin/bash").await? {
            Some(stat) if stat.kind != PathKind::Directory => Ok("/bin/bash".to_owned()),
            _ => Ok("/bin/sh".to_owned()),
        }
    }

    /// A sandbox's status, read from Docker. A sandbox whose container vanished is
    /// forgotten and answers 404.
    pub async fn status(&self, sandbox: &Sandbox) -> Result<Status> {
        match self.runtime.state(&sandbox.docker_id).await? {
            Some(state) => Ok(status_of(state)),
            None => {
                self.forget(&sandbox.id, "vanished");
                Err(Error::ContainerNotFound(sandbox.id.clone()))
            }
        }
    }

    /// Every sandbox with its status, from one Docker call.
    pub async fn list(&self) -> Result<Vec<(Arc<Sandbox>, Status)>> {
        // Records first: every one of them had its container before the listing.
        let records = self.registry.all();
        let states: HashMap<String, ContainerState> = self
            .runtime
            .list_managed(self.registry.instance())
            .await?
            .into_iter()
            .map(|c| (c.docker_id, c.state))
            .collect();
        let mut listed = Vec::new();
        for sandbox in records {
            match states.get(&sandbox.docker_id) {
                Some(&state) => listed.push((sandbox, status_of(state))),
                None => self.forget(&sandbox.id, "vanished"),
            }
        }
        Ok(listed)
    }

    /// Destroys a sandbox at a client's request.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        let sandbox = self.get(id)?;
        self.runtime.remove(&sandbox.docker_id).await?;
        self.forget(id, "api");
        tracing::info!(sandbox = %id, "sandbox destroyed");
        Ok(())
    }

    /// Destroys a sandbox whose deadline has come. If Docker cannot be reached, tries
    /// again a little later rather than forgetting a container that still runs.
    pub async fn expire(&self, id: &str) {
        let Some(sandbox) = self.registry.get(id) else {
            return;
        };
        match self.runtime.remove(&sandbox.docker_id).await {
            Ok(()) => {
                self.forget(id, "expired");
                tracing::info!(sandbox = %id, "sandbox expired and destroyed");
            }
            Err(err) => {
                tracing::warn!(sandbox = %id, %err, "could not destroy an expired sandbox; retrying");
                self.expiries
                    .schedule(id, Utc::now() + chrono::Duration::seconds(5));
            }
        }
    }

    fn forget(&self, id: &str, reason: &'static str) {
        self.expiries.cancel(id);
        if self.registry.remove(id).is_some() {
            Metrics::count(&self.metrics.destroys, reason);
        }
        self.metrics
            .sandboxes_active
            .set(self.registry.len() as i64);
    }

    /// Whether [`Self::reconcile`] has succeeded since start.
    pub fn is_reconciled(&self) -> bool {
        self.reconciled.load(Ordering::SeqCst)
    }

    /// Brings the registry and Docker into agreement after a start: adopts containers
    /// with a record (expiry is already scheduled), destroys the expired ones, removes
    /// containers without a record (interrupted creates), forgets records whose
    /// container vanished.
    pub async fn reconcile(&self) -> Result<()> {
        // Records are read before containers are listed: a record written meanwhile
        // belongs to a container the listing may not show yet.
        let records = self.registry.all();
        let containers = self.runtime.list_managed(self.registry.instance()).await?;
        let now = Utc::now();
        let mut seen = std::collections::HashSet::new();
        for container in containers {
            let id = container.labels.get(LABEL_ID).cloned().unwrap_or_default();
            if self.registry.is_creating(&id) {
                // A create under way (requests are served while reconciling).
                continue;
            }
            match self.registry.get(&id) {
                Some(sandbox) if sandbox.docker_id == container.docker_id => {
                    if sandbox.expires_at.is_some_and(|at| at <= now) {
                        self.expire(&id).await;
                    } else {
                        tracing::info!(sandbox = %id, "adopted sandbox");
                    }
                    seen.insert(id);
                }
                _ => {
                    tracing::info!(sandbox = %id, docker_id = %container.docker_id, "removing leftover of an interrupted create");
                    self.runtime.remove(&container.docker_id).await?;
                }
            }
        }
        for sandbox in records {
            if !seen.contains(&sandbox.id) {
                tracing::info!(sandbox = %sandbox.id, "forgetting sandbox whose container is gone");
                self.forget(&sandbox.id, "reconcile");
            }
        }
        self.reconciled.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn status_of(state: ContainerState) -> Status {
    match state {
        ContainerState::Created => Status::Creating,
        ContainerState::Running => Status::Running,
        ContainerState::Exited => Status::Completed,
        ContainerState::Removing => Status::Destroyed,
    }
}

/// Owns a container until its create has committed. Dropped armed (the request went
/// away mid-create), it removes the container in the background.
struct ContainerGuard {
    runtime: Runtime,
    docker_id: String,
    armed: bool,
}

impl ContainerGuard {
    fn new(runtime: Runtime, docker_id: String) -> Self {
        Self {
            runtime,
            docker_id,
            armed: true,
        }
    }

    /// Removes the container now.
    async fn remove(mut self) {
        self.armed = false;
        if let Err(err) = self.runtime.remove(&self.docker_id).await {
            tracing::warn!(docker_id = %self.docker_id, %err, "could not remove the container of a failed create");
        }
    }

    /// The create committed: the container is the sandbox's now.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if self.armed {
            let runtime = self.runtime.clone();
            let docker_id = std::mem::take(&mut self.docker_id);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = runtime.remove(&docker_id).await;
                });
            }
        }
    }
}
