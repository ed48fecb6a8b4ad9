//! What a client asks of a sandbox, checked in one place: a create (`POST /containers`,
//! a job's entries, the CLI's flags), a command's working directory, deadline and
//! environment. Shared by the API, jobs and the CLI; no HTTP here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::backend::Network;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::git::{RepoUrl, validate_branch, validate_commit};
use crate::registry::Resources;
use crate::sandbox::{NewSandbox, Sandboxes};

/// The deepest shallow history a create may ask for (`depth`).
pub const MAX_DEPTH: u32 = 1_000_000;

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
    /// (ext) Commits of history the sandbox's `.git` holds, counted from the checked-out
    /// commit (a shallow clone, 1 … 1,000,000); the whole history when omitted.
    #[schema(minimum = 1, maximum = 1000000)]
    pub depth: Option<u32>,
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
    /// (ext) `none` (default), `bridge` (only when `ALLOW_NETWORK=true`), or
    /// `{"allow": [...]}`: HTTP and HTTPS to those hosts only, through the server's
    /// egress proxy (within `EGRESS_ALLOW`).
    pub network: Option<NetworkSetting>,
}

/// A sandbox's `network`: a mode, or an allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum NetworkSetting {
    /// `none`: loopback alone; `bridge`: the engine's network.
    Mode(Network),
    /// No network but the egress proxy, to these hosts only.
    Allow(AllowList),
}

/// `{"allow": [...]}`: the hosts a sandbox reaches through the egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    /// `host`, `*.domain`, `*` (any name), or an IP address, each with an optional
    /// `:port` (default: 80 and 443); each within the server's `EGRESS_ALLOW`.
    #[schema(example = json!(["pypi.org", "*.pythonhosted.org"]))]
    pub allow: Vec<String>,
}

impl NetworkSetting {
    /// The engine's mode and the allow-list (normalised), checked against the
    /// server's policy: `bridge` needs `ALLOW_NETWORK`; an allow-list needs
    /// `EGRESS_ALLOW` to cover each entry (403 otherwise).
    pub fn validate(
        setting: Option<Self>,
        config: &Config,
    ) -> Result<(Network, Option<Vec<String>>)> {
        match setting.unwrap_or(NetworkSetting::Mode(Network::None)) {
            NetworkSetting::Mode(Network::Bridge) if !config.allow_network => Err(Error::invalid(
                "network \"bridge\" is disabled on this server (ALLOW_NETWORK=false)",
            )),
            NetworkSetting::Mode(mode) => Ok((mode, None)),
            NetworkSetting::Allow(AllowList { allow }) => {
                let operator = config.egress_allow.entries();
                if operator.is_empty() {
                    return Err(Error::Forbidden(
                        "network allow-lists are disabled on this server (EGRESS_ALLOW is empty)"
                            .to_owned(),
                    ));
                }
                let entries = crate::egress::allow::parse_list(&allow, crate::egress::MAX_ENTRIES)?;
                let mut shown = Vec::with_capacity(entries.len());
                for entry in entries {
                    if !operator.iter().any(|own| own.covers(&entry)) {
                        return Err(Error::Forbidden(format!(
                            "network.allow: {} is not within this server's EGRESS_ALLOW",
                            entry.as_str()
                        )));
                    }
                    if !shown.iter().any(|seen: &String| seen == entry.as_str()) {
                        shown.push(entry.as_str().to_owned());
                    }
                }
                Ok((Network::None, Some(shown)))
            }
        }
    }

    /// The setting a sandbox reports.
    pub fn of(network: Network, egress: Option<&[String]>) -> Self {
        match egress {
            Some(allow) => NetworkSetting::Allow(AllowList {
                allow: allow.to_vec(),
            }),
            None => NetworkSetting::Mode(network),
        }
    }
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

impl CreateContainerRequest {
    /// The request checked against the server's policy and limits.
    pub fn validate(mut self, config: &Config, sandboxes: &Sandboxes) -> Result<NewSandbox> {
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
        let depth = match self.depth {
            None => None,
            Some(_) if snapshot.is_some() => {
                return Err(Error::invalid(
                    "a sandbox from a snapshot has the snapshot's history: leave out depth",
                ));
            }
            Some(depth) if (1..=MAX_DEPTH).contains(&depth) => Some(depth),
            Some(_) => {
                return Err(Error::invalid(format!("depth must be in [1, {MAX_DEPTH}]")));
            }
        };
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
        let (network, egress) = NetworkSetting::validate(self.network, config)?;
        let mut env = env;
        if egress.is_some() {
            // The proxy's variables, unless the sandbox's own say otherwise.
            for (name, value) in crate::egress::proxy_env() {
                env.entry(name).or_insert(value);
            }
        }
        Ok(NewSandbox {
            repo,
            snapshot,
            branch,
            commit,
            commit_as_requested,
            depth,
            max_runtime,
            env,
            initial_command: self.initial_command,
            image,
            resources,
            network,
            egress,
            job_id: None,
            image_id: built.map(|image| image.image_id),
        })
    }
}

/// A command's `working_directory` (default `/workspace`): absolute, bounded, no NUL.
pub fn validate_working_dir(given: Option<String>) -> Result<String> {
    let dir = given.unwrap_or_else(|| crate::backend::WORKSPACE.to_owned());
    if !dir.starts_with('/') || dir.contains('\0') || dir.len() > 4096 {
        return Err(Error::invalid(format!(
            "working_directory must be an absolute path, got {dir:?}"
        )));
    }
    Ok(dir)
}

/// A command's `timeout_secs`: 1 … `MAX_EXEC_TIMEOUT_SECS`.
pub fn validate_timeout(config: &Config, secs: i64) -> Result<Duration> {
    if secs < 1 || secs.unsigned_abs() > config.max_exec_timeout_secs {
        return Err(Error::invalid(format!(
            "timeout_secs must be between 1 and {} (MAX_EXEC_TIMEOUT_SECS)",
            config.max_exec_timeout_secs
        )));
    }
    Ok(Duration::from_secs(secs.unsigned_abs()))
}

/// The default `timeout_secs` (`DEFAULT_EXEC_TIMEOUT_SECS`).
pub fn default_timeout_secs(config: &Config) -> i64 {
    i64::try_from(config.default_exec_timeout_secs).unwrap_or(30)
}

/// Checks environment variable names and values a client sends.
pub fn validate_env(field: &str, env: &std::collections::BTreeMap<String, String>) -> Result<()> {
    const MAX_VARS: usize = 256;
    if env.len() > MAX_VARS {
        return Err(Error::invalid(format!(
            "{field}: at most {MAX_VARS} variables"
        )));
    }
    for (name, value) in env {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::invalid(format!(
                "{field}: {name:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"
            )));
        }
        if value.contains('\0') {
            return Err(Error::invalid(format!(
                "{field}: the value of {name} contains a NUL byte"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_must_be_shell_names() {
        let ok = BTreeMap::from([
            ("A_1".to_owned(), "x y".to_owned()),
            ("_b".to_owned(), String::new()),
        ]);
        assert!(validate_env("environment", &ok).is_ok());
        for bad in ["1A", "A-B", "", "A=B", "A B"] {
            let env = BTreeMap::from([(bad.to_owned(), "v".to_owned())]);
            assert!(validate_env("environment", &env).is_err(), "{bad:?}");
        }
    }
}
