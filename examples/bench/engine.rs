//! The floor: the same work done straight against the Docker Engine API with bollard,
//! over the same socket and with the same image, as a client that did without
//! repobox would do it.
//!
//! Floor containers get exactly the hardened configuration of repobox's sandboxes
//! (built by `repobox::docker::container_config` itself; [`Engine::drift`] checks on
//! the engine that the limits agree too), under an instance of their own, and carry
//! [`LABEL_RUN`] and [`LABEL_PID`] so that this run, or a later one, can find and
//! remove them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;

/// Label on every floor container: the run token of the benchmark that made it.
pub(crate) const LABEL_RUN: &str = "repobox.bench.run";
/// Label on every floor container: the pid of the benchmark that made it (a later run
/// removes containers whose benchmark is gone).
pub(crate) const LABEL_PID: &str = "repobox.bench.pid";
/// repobox's own labels, used to find its sandboxes.
const LABEL_MANAGED: &str = "repobox.managed";
const LABEL_INSTANCE: &str = "repobox.instance";
const LABEL_REPO_URL: &str = "repobox.repo_url";

/// Bytes of stdout an [`Engine::exec`] keeps (the rest is only counted).
const KEPT_STDOUT: usize = 64 * 1024;

/// Sandbox resources and image, as repobox would give them.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Image.
    pub image: String,
    /// CPUs.
    pub cpus: f64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Process limit.
    pub pids: i64,
    /// OCI runtime; empty: the engine's default.
    pub runtime: String,
}

/// What a process run with [`Engine::exec`] did.
#[derive(Debug, Clone)]
pub(crate) struct Ran {
    /// Exit code.
    pub exit_code: i64,
    /// Bytes written to stdout.
    pub stdout_bytes: u64,
    /// The first [`KEPT_STDOUT`] bytes of stdout.
    pub stdout: Vec<u8>,
}

/// The engine, driven directly.
#[derive(Clone)]
pub(crate) struct Engine {
    docker: Docker,
    limits: Arc<Limits>,
    run: Arc<str>,
    seq: Arc<AtomicUsize>,
}

impl Engine {
    /// Connects to `host` (`unix://…`, a socket path, or `tcp://…`) and settles the API
    /// version with the engine.
    pub(crate) async fn connect(host: &str, limits: Limits, run: &str) -> Result<Self> {
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 600, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with('/') {
            Docker::connect_with_unix(host, 600, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(host, 600, bollard::API_DEFAULT_VERSION)
        }
        .with_context(|| format!("connecting to the Docker engine at {host}"))?;
        let docker = docker
            .negotiate_version()
            .await
            .with_context(|| format!("no Docker engine answers at {host}"))?;
        Ok(Self {
            docker,
            limits: Arc::new(limits),
            run: run.into(),
            seq: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The engine's version and API version.
    pub(crate) async fn version(&self) -> Result<String> {
        let version = self.docker.version().await?;
        Ok(format!(
            "{} (API {})",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ))
    }

    /// The configuration of a floor container: repobox's own (the one function that
    /// builds a sandbox's hardened config), with the bench's labels and instance.
    fn container_body(&self, name: &str) -> ContainerCreateBody {
        let limits = &self.limits;
        let mut body = repobox::docker::container_config(&repobox::backend::SandboxSpec {
            id: name.into(),
            name: name.to_owned(),
            hostname: "floor".to_owned(),
            instance: format!("rbbench-floor-{}", self.run),
            image: limits.image.clone(),
            cpus: limits.cpus,
            memory_mb: limits.memory_mb,
            pids: limits.pids,
            network: repobox::backend::Network::None,
            labels: HashMap::from([
                (LABEL_RUN.to_owned(), self.run.to_string()),
                (LABEL_PID.to_owned(), std::process::id().to_string()),
            ]),
            annotations: HashMap::new(),
            runtime: (!limits.runtime.is_empty()).then(|| limits.runtime.clone()),
            disk_mb: None,
        });
        // The floor has no agent: its container idles, as a plain Docker sandbox does,
        // and everything is done to it by Docker exec and the archive API.
        body.entrypoint = Some(vec!["sleep".to_owned()]);
        body.cmd = Some(vec!["infinity".to_owned()]);
        body.open_stdin = Some(false);
        body
    }

    /// Creates and starts a floor container; returns its id.
    pub(crate) async fn create_started(&self) -> Result<String> {
        let name = format!(
            "rbbench-floor-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), self.container_body(&name))
            .await
            .context("creating a floor container")?;
        self.docker
            .start_container(&created.id, None)
            .await
            .context("starting a floor container")?;
        Ok(created.id)
    }

    /// Unpacks `tar` at `/`, as repobox does with a checkout.
    pub(crate) async fn upload(&self, id: &str, tar: Bytes) -> Result<()> {
        let options = UploadToContainerOptionsBuilder::default()
            .path("/")
            .no_overwrite_dir_non_dir("true")
            .build();
        self.docker
            .upload_to_container(id, Some(options), bollard::body_full(tar))
            .await
            .context("uploading a checkout into a floor container")
    }

    /// Runs `argv` to its end: exec create, start (attached, output drained), then
    /// inspect until the engine has the exit code — what repobox does for a command.
    pub(crate) async fn exec(
        &self,
        id: &str,
        argv: &[&str],
        env: &[&str],
        working_dir: &str,
    ) -> Result<Ran> {
        let options = CreateExecOptions {
            cmd: Some(argv.iter().map(|&arg| arg.to_owned()).collect()),
            env: Some(env.iter().map(|&var| var.to_owned()).collect()),
            working_dir: Some(working_dir.to_owned()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let created = self.docker.create_exec(id, options).await?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    // The same read buffer repobox asks for.
                    output_capacity: Some(64 * 1024),
                }),
            )
            .await?;
        let StartExecResults::Attached { mut output, .. } = started else {
            anyhow::bail!("exec started detached");
        };
        let mut ran = Ran {
            exit_code: -1,
            stdout_bytes: 0,
            stdout: Vec::new(),
        };
        while let Some(item) = output.next().await {
            if let LogOutput::StdOut { message } | LogOutput::Console { message } = item? {
                ran.stdout_bytes += message.len() as u64;
                let room = KEPT_STDOUT.saturating_sub(ran.stdout.len());
                ran.stdout
                    .extend_from_slice(&message[..message.len().min(room)]);
            }
        }
        // The stream can end a moment before the engine records the exit code; poll
        // the way repobox does (1 ms, doubling, at most 50 ms).
        let mut pause = Duration::from_millis(1);
        for _ in 0..200 {
            let inspect = self.docker.inspect_exec(&created.id).await?;
            if inspect.running != Some(true)
                && let Some(code) = inspect.exit_code
            {
                ran.exit_code = code;
                return Ok(ran);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        anyhow::bail!("the engine never reported the exit code of {argv:?}")
    }

    /// Downloads `path` as a tar (the archive GET) and returns how many bytes came.
    pub(crate) async fn archive(&self, id: &str, path: &str) -> Result<u64> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(id, Some(options));
        let mut bytes = 0;
        while let Some(chunk) = stream.next().await {
            bytes += chunk?.len() as u64;
        }
        Ok(bytes)
    }

    /// Removes a container, killing it (`docker rm -f`, with its anonymous volumes).
    pub(crate) async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        self.docker
            .remove_container(id, Some(options))
            .await
            .context("removing a container")
    }

    /// Docker's id of repobox sandbox `sandbox` of instance `instance`: its container
    /// is named `<sandbox>.<instance>` (labels cannot tell: a sandbox made from a pool
    /// member carries the member's).
    async fn sandbox_container(&self, sandbox: &str, instance: &str) -> Result<String> {
        self.docker
            .inspect_container(&format!("{sandbox}.{instance}"), None)
            .await?
            .id
            .with_context(|| format!("no container named {sandbox}.{instance}"))
    }

    /// Tags `image` as `tag` too (same layers: a second name, nothing copied).
    pub(crate) async fn tag(&self, image: &str, tag: &str) -> Result<()> {
        let (repo, tag) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let options = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(image, Some(options))
            .await
            .context("tagging an image")
    }

    /// Removes the tag `tag` (the image stays under its other names).
    pub(crate) async fn untag(&self, tag: &str) -> Result<()> {
        self.docker
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .map(drop)
            .context("removing an image tag")
    }

    /// HostConfig of a container, for [`Self::drift`].
    async fn host_config(&self, id: &str) -> Result<HostConfig> {
        self.docker
            .inspect_container(id, None)
            .await?
            .host_config
            .context("no HostConfig")
    }

    /// Differences between the engine-side configuration of a repobox sandbox and a
    /// floor container, in the fields that change what a container costs.
    pub(crate) async fn drift(
        &self,
        sandbox: &str,
        instance: &str,
        floor: &str,
    ) -> Result<Vec<String>> {
        let sandbox = self.sandbox_container(sandbox, instance).await?;
        let (ours, theirs) = (
            self.host_config(floor).await?,
            self.host_config(&sandbox).await?,
        );
        let fields = |config: &HostConfig| {
            [
                ("Init", format!("{:?}", config.init)),
                ("Memory", format!("{:?}", config.memory)),
                ("NanoCpus", format!("{:?}", config.nano_cpus)),
                ("PidsLimit", format!("{:?}", config.pids_limit)),
                ("NetworkMode", format!("{:?}", config.network_mode)),
                ("CapAdd", format!("{:?}", config.cap_add)),
                ("CapDrop", format!("{:?}", config.cap_drop)),
                ("SecurityOpt", format!("{:?}", config.security_opt)),
                ("Runtime", format!("{:?}", config.runtime)),
                (
                    "LogConfig",
                    format!(
                        "{:?}",
                        config.log_config.as_ref().and_then(|log| log.typ.as_ref())
                    ),
                ),
            ]
        };
        let differences = fields(&ours)
            .into_iter()
            .zip(fields(&theirs))
            .filter(|((_, floor), (_, repobox))| floor != repobox)
            .map(|((field, floor), (_, repobox))| {
                format!("{field}: repobox {repobox}, floor {floor}")
            })
            .collect();
        Ok(differences)
    }

    /// Removes every container this run made — floor containers by their label, and
    /// repobox's sandboxes by its instance label or by a repository URL holding this
    /// run's token — and, with `stale`, those of earlier benchmark runs whose process
    /// is gone. Returns how many were removed.
    pub(crate) async fn sweep(&self, instance: &str, stale: bool) -> Result<usize> {
        let mut doomed = Vec::new();
        for label in [LABEL_RUN, LABEL_MANAGED] {
            let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            for container in self.docker.list_containers(Some(options)).await? {
                let labels = container.labels.unwrap_or_default();
                let ours = labels.get(LABEL_RUN).is_some_and(|run| **run == *self.run)
                    || labels.get(LABEL_INSTANCE).is_some_and(|i| i == instance)
                    || labels
                        .get(LABEL_REPO_URL)
                        .is_some_and(|url| url.contains(&format!("/{}", self.run)));
                let orphan = stale
                    && (labels.get(LABEL_PID).is_some_and(|pid| !process_alive(pid))
                        || labels
                            .get(LABEL_REPO_URL)
                            .and_then(|url| bench_pid_of(url))
                            .is_some_and(|pid| !process_alive(pid)));
                if (ours || orphan)
                    && let Some(id) = container.id
                {
                    doomed.push(id);
                }
            }
        }
        doomed.sort();
        doomed.dedup();
        let removed = futures_util::stream::iter(doomed)
            .map(|id| async move { self.remove(&id).await.is_ok() })
            .buffer_unordered(8)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        // And the snapshot images of this run's repobox.
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("repobox.snapshot.instance={instance}")],
        )]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        for image in self.docker.list_images(Some(options)).await? {
            let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(true)
                .build();
            let _ = self
                .docker
                .remove_image(&image.id, Some(options), None)
                .await;
        }
        Ok(removed)
    }
}

/// The benchmark pid in a repository URL of a benchmark run (`…/rbbench-<pid>-…`).
fn bench_pid_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("/rbbench-")? + "/rbbench-".len()..];
    let pid = rest.split('-').next()?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(pid)
}

fn process_alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pid_of_a_bench_url() {
        assert_eq!(
            bench_pid_of("http://127.0.0.1:4000/rbbench-1234-ab12-warm/simple.git"),
            Some("1234")
        );
        assert_eq!(
            bench_pid_of("http://127.0.0.1:4000/exec-1/simple.git"),
            None
        );
    }
}
