//! Sandbox commands: `create`, `ls`, `status`, `rm`, `extend`, `snapshot`, `fork`.

use serde_json::{Value, json};

use super::client::Client;
use super::output::{field, out, outln, print_json, short_commit, short_time, spinner, table};
use super::{CliResult, env_object, parse_key_value};

/// Arguments of `repobox create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// URL of the git repository (`http://` or `https://`).
    #[arg(value_name = "URL")]
    pub repo_url: String,
    /// Branch to check out (default: the remote's default branch).
    #[arg(long, short)]
    pub branch: Option<String>,
    /// Commit to check out (full or at least 7 hex digits).
    #[arg(long, short)]
    pub commit: Option<String>,
    /// Lifetime in seconds; the sandbox is destroyed after it (default: no expiry).
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u64>,
    /// An environment variable for the sandbox and its commands (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Image to use instead of the server's default (pulled when missing).
    #[arg(long, conflicts_with = "image_id")]
    pub image: Option<String>,
    /// An image built by `POST /images` from this repository (`img-…`).
    #[arg(long, value_name = "ID")]
    pub image_id: Option<String>,
    /// A command run once in /workspace after the checkout.
    #[arg(long, value_name = "CMD")]
    pub initial_command: Option<String>,
    /// `none` (the default) or `bridge` (when the server allows it).
    #[arg(long, value_name = "MODE", conflicts_with = "allow")]
    pub network: Option<String>,
    /// A host the sandbox may reach through the server's egress proxy (`pypi.org`,
    /// `*.pythonhosted.org`, `host:port`; repeatable); nothing else is reachable.
    #[arg(long, value_name = "HOST")]
    pub allow: Vec<String>,
}

impl CreateArgs {
    /// The body of `POST /containers`.
    pub fn body(self) -> Value {
        let mut body = json!({ "repo_url": self.repo_url });
        let fields = [
            ("branch", self.branch.map(Value::from)),
            ("commit", self.commit.map(Value::from)),
            ("max_runtime_secs", self.ttl.map(Value::from)),
            (
                "environment_vars",
                env_object(self.env).map(|env| json!(env)),
            ),
            ("image", self.image.map(Value::from)),
            ("image_id", self.image_id.map(Value::from)),
            ("initial_command", self.initial_command.map(Value::from)),
            (
                "network",
                match (self.network, self.allow.is_empty()) {
                    (Some(mode), _) => Some(Value::from(mode)),
                    (None, false) => Some(json!({ "allow": self.allow })),
                    (None, true) => None,
                },
            ),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        body
    }
}

/// `repobox egress ID`: the allow-list, then the proxy's decisions, oldest first.
pub async fn egress(client: &Client, id: &str, json: bool) -> CliResult {
    let egress = client.get(&format!("/containers/{id}/egress")).await?;
    if json {
        print_json(&egress);
        return Ok(0);
    }
    match egress["allow"].as_array() {
        Some(allow) => outln(format!(
            "allow: {}",
            allow
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => outln("no allow-list: the sandbox has no egress proxy"),
    }
    let rows: Vec<Vec<String>> = egress["decisions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|decision| {
            vec![
                short_time(decision, "time"),
                format!("{}:{}", field(decision, "host"), field(decision, "port")),
                if decision["allowed"] == true {
                    "allowed"
                } else {
                    "refused"
                }
                .to_owned(),
                field(decision, "reason"),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out(table(&["TIME", "HOST", "DECISION", "REASON"], &rows));
    }
    Ok(0)
}

/// `repobox create`: prints the new sandbox's id (a spinner on stderr meanwhile).
pub async fn create(client: &Client, args: CreateArgs, json: bool) -> CliResult {
    let spinner = spinner(&format!("creating a sandbox of {}", args.repo_url));
    let created = client.post("/containers", &args.body()).await;
    spinner.finish_and_clear();
    let created = created?;
    if json {
        print_json(&created);
    } else {
        outln(field(&created, "container_id"));
        if let Some(result) = created
            .get("initial_command_result")
            .filter(|r| !r.is_null())
        {
            let code = result.get("exit_code").and_then(Value::as_i64);
            if code != Some(0) {
                eprintln!(
                    "repobox: the initial command exited with {}; its output: `repobox status {} --json`",
                    code.map_or_else(|| "no status".to_owned(), |code| code.to_string()),
                    field(&created, "container_id"),
                );
            }
        }
    }
    Ok(0)
}

/// `repobox ls`.
pub async fn list(client: &Client, json: bool) -> CliResult {
    let listing = client.get("/containers").await?;
    if json {
        print_json(&listing);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = listing["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            vec![
                field(c, "container_id"),
                field(c, "status"),
                field(c, "repo_url"),
                field(c, "branch"),
                short_commit(c, "resolved_commit"),
                short_time(c, "expires_at"),
            ]
        })
        .collect();
    out(format_args!(
        "{}",
        table(
            &["ID", "STATUS", "REPO", "BRANCH", "COMMIT", "EXPIRES"],
            &rows
        )
    ));
    Ok(0)
}

/// `repobox status ID`.
pub async fn status(client: &Client, id: &str, json: bool) -> CliResult {
    let container = client.get(&format!("/containers/{id}")).await?;
    if json {
        print_json(&container);
    } else {
        print_container(&container);
    }
    Ok(0)
}

fn print_container(container: &Value) {
    let mut names = vec![
        "container_id",
        "status",
        "repo_url",
        "branch",
        "resolved_commit",
        "image",
        "created_at",
        "expires_at",
        "working_directory",
    ];
    if container.get("status_reason").is_some_and(|r| !r.is_null()) {
        names.push("status_reason");
    }
    for name in names {
        outln(format_args!(
            "{:<18} {}",
            format!("{name}:"),
            field(container, name)
        ));
    }
}

/// `repobox rm ID…`: removes each; prints each id removed. Goes on past a failure and
/// exits 1 if any failed.
pub async fn remove(client: &Client, ids: &[String], json: bool) -> CliResult {
    let mut removed = Vec::new();
    let mut failed = false;
    for id in ids {
        match client.delete(&format!("/containers/{id}")).await {
            Ok(()) => {
                if !json {
                    outln(id);
                }
                removed.push(id.clone());
            }
            Err(err) => {
                eprintln!("repobox: {id}: {err}");
                failed = true;
            }
        }
    }
    if json {
        print_json(&json!({ "removed": removed }));
    }
    Ok(i32::from(failed))
}

/// `repobox extend ID SECS`.
pub async fn extend(client: &Client, id: &str, secs: u64, json: bool) -> CliResult {
    let body = json!({ "max_runtime_secs": secs });
    let container = client.patch(&format!("/containers/{id}"), &body).await?;
    if json {
        print_json(&container);
    } else {
        outln(format_args!(
            "{id} expires at {}",
            field(&container, "expires_at")
        ));
    }
    Ok(0)
}

/// `repobox snapshot ID [--name N]`: prints the snapshot's id.
pub async fn snapshot(client: &Client, id: &str, name: Option<String>, json: bool) -> CliResult {
    let body = match name {
        Some(name) => json!({ "name": name }),
        None => json!({}),
    };
    let spinner = spinner(&format!("snapshotting {id}"));
    let snapshot = client
        .post(&format!("/containers/{id}/snapshots"), &body)
        .await;
    spinner.finish_and_clear();
    let snapshot = snapshot?;
    if json {
        print_json(&snapshot);
    } else {
        outln(field(&snapshot, "snapshot_id"));
    }
    Ok(0)
}

/// `repobox fork ID -n N`: prints each copy's id; each copy that failed goes to
/// stderr with its reason, and then the exit status is 1.
pub async fn fork(client: &Client, id: &str, count: u32, json: bool) -> CliResult {
    let spinner = spinner(&format!("forking {id} {count} times"));
    let answer = client
        .post(
            &format!("/containers/{id}/fork"),
            &json!({ "count": count }),
        )
        .await;
    spinner.finish_and_clear();
    let answer = answer?;
    let forks = answer["forks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let failed = forks.iter().any(|entry| entry.get("container").is_none());
    if json {
        print_json(&answer);
        return Ok(i32::from(failed));
    }
    for (index, entry) in forks.iter().enumerate() {
        match entry.get("container") {
            Some(container) => outln(field(container, "container_id")),
            None => eprintln!(
                "repobox: copy {index} failed: {}: {}",
                field(&entry["error"], "error"),
                field(&entry["error"], "detail")
            ),
        }
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_sends_only_what_was_given() {
        let args = CreateArgs {
            repo_url: "https://h/r.git".to_owned(),
            branch: None,
            commit: Some("abc1234".to_owned()),
            ttl: Some(60),
            env: vec![("A".to_owned(), "1".to_owned())],
            image: None,
            image_id: None,
            initial_command: None,
            network: None,
            allow: Vec::new(),
        };
        assert_eq!(
            args.clone().body(),
            json!({"repo_url": "https://h/r.git", "commit": "abc1234",
                   "max_runtime_secs": 60, "environment_vars": {"A": "1"}})
        );
        let allowing = CreateArgs {
            allow: vec!["pypi.org".to_owned(), "*.pythonhosted.org".to_owned()],
            ..args
        };
        assert_eq!(
            allowing.body()["network"],
            json!({"allow": ["pypi.org", "*.pythonhosted.org"]})
        );
    }
}
