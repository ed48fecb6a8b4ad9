//! The Kubernetes column (`--only kube`): repobox with `BACKEND=kubernetes` against the
//! raw Kubernetes API doing the same through the same API server (the *floor*): a pod
//! of the sandbox image with the same limits, made Running and reached with
//! `pods/exec`.
//!
//! Needs a cluster: `REPOBOX_BENCH_KUBECONFIG` (default: the test cluster's,
//! `/var/lib/repobox-kube/admin.kubeconfig`, which `make bench` brings up with
//! `scripts/kubernetes.sh`), its namespace `repobox`, and the agent's and the sandbox
//! image on its nodes. Floor pods carry the label `repobox.bench.run=<run>` and are
//! removed at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, PostParams};
use serde_json::json;

/// The test cluster's kubeconfig (scripts/kubernetes.sh).
pub(crate) const TEST_KUBECONFIG: &str = "/var/lib/repobox-kube/admin.kubeconfig";
/// The namespace the test cluster makes.
pub(crate) const NAMESPACE: &str = "repobox";

/// The kubeconfig the Kubernetes column uses, when there is one.
pub(crate) fn kubeconfig() -> Option<PathBuf> {
    let path = std::env::var_os("REPOBOX_BENCH_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(TEST_KUBECONFIG));
    path.is_file().then_some(path)
}

/// The raw API: floor pods of one run.
pub(crate) struct Cluster {
    pods: Api<Pod>,
    run: String,
    image: String,
    cpus: f64,
    memory_mb: u64,
    made: usize,
}

impl Cluster {
    pub(crate) async fn connect(
        kubeconfig: &Path,
        run: &str,
        image: &str,
        cpus: f64,
        memory_mb: u64,
    ) -> Result<Self> {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig)?,
            &Default::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        client
            .apiserver_version()
            .await
            .context("the API server does not answer")?;
        Ok(Self {
            pods: Api::namespaced(client, NAMESPACE),
            run: run.to_owned(),
            image: image.to_owned(),
            cpus,
            memory_mb,
            made: 0,
        })
    }

    /// Makes a floor pod (the sandbox image, `sleep`, repobox's limits and requests)
    /// and waits until its container runs; returns its name.
    pub(crate) async fn create_running(&mut self) -> Result<String> {
        let name = self.next_name();
        self.create_running_named(&name).await?;
        Ok(name)
    }

    /// A new floor pod's name.
    pub(crate) fn next_name(&mut self) -> String {
        self.made += 1;
        format!("{}-floor-{}", self.run, self.made)
    }

    /// [`Self::create_running`] of a pod named `name`.
    pub(crate) async fn create_running_named(&self, name: &str) -> Result<()> {
        let millicpus = (self.cpus * 1000.0).round() as u64;
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"repobox.bench.run": self.run}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 0,
                "containers": [{
                    "name": "sandbox",
                    "image": self.image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                    "workingDir": "/workspace",
                    "resources": {
                        "limits": {"cpu": format!("{millicpus}m"), "memory": format!("{}Mi", self.memory_mb)},
                        "requests": {"cpu": format!("{}m", (millicpus / 10).max(1)), "memory": format!("{}Mi", (self.memory_mb / 10).max(1))},
                    },
                }],
            }
        }))?;
        self.pods.create(&PostParams::default(), &pod).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut pause = Duration::from_millis(20);
        loop {
            let pod = self.pods.get(name).await?;
            let running = pod
                .status
                .as_ref()
                .and_then(|status| status.container_statuses.as_ref())
                .is_some_and(|statuses| {
                    statuses
                        .iter()
                        .any(|status| status.state.as_ref().is_some_and(|s| s.running.is_some()))
                });
            if running {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("floor pod {name} did not run within 120 s");
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// `pods/exec` of `bash -c command` in the pod; must exit 0. Returns the round trip
    /// in ms.
    pub(crate) async fn exec(&self, name: &str, command: &str) -> Result<f64> {
        let at = Instant::now();
        let mut process = self
            .pods
            .exec(
                name,
                ["/bin/bash", "-c", command],
                &AttachParams::default()
                    .container("sandbox")
                    .stdin(false)
                    .stdout(true)
                    .stderr(false),
            )
            .await?;
        let status = process
            .take_status()
            .context("no status channel")?
            .await
            .context("no exit status")?;
        let took = at.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            status.status.as_deref() == Some("Success"),
            "{command:?} failed in {name}: {status:?}"
        );
        Ok(took)
    }

    /// Removes a floor pod.
    pub(crate) async fn remove(&self, name: &str) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::background()
        };
        let _ = self.pods.delete(name, &params).await;
    }

    /// Removes every floor pod of this run.
    pub(crate) async fn sweep(&self) -> usize {
        self.sweep_selector(&format!("repobox.bench.run={}", self.run))
            .await
    }

    /// Removes every pod `selector` selects.
    pub(crate) async fn sweep_selector(&self, selector: &str) -> usize {
        let Ok(pods) = self
            .pods
            .list(&ListParams::default().labels(selector))
            .await
        else {
            return 0;
        };
        for pod in &pods.items {
            if let Some(name) = &pod.metadata.name {
                self.remove(name).await;
            }
        }
        pods.items.len()
    }

    /// How many pods of each node a list of pod names holds (for the table's note).
    pub(crate) async fn placement(&self, selector: &str) -> BTreeMap<String, usize> {
        let mut nodes = BTreeMap::new();
        if let Ok(pods) = self
            .pods
            .list(&ListParams::default().labels(selector))
            .await
        {
            for pod in pods.items {
                let node = pod
                    .spec
                    .and_then(|spec| spec.node_name)
                    .unwrap_or_else(|| "unscheduled".to_owned());
                *nodes.entry(node).or_default() += 1;
            }
        }
        nodes
    }
}
