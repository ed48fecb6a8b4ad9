//! `repobox job`: one command across many repositories (`POST /jobs`), followed
//! through the job's events, then its results as a table or JSON lines.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::Client;
use super::output::{field, out, outln, print_json, progress, short_commit, table};
use super::{CliError, CliResult, env_object, parse_key_value, shell_command};

/// `repobox job …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum JobCommand {
    /// Run a command in a fresh sandbox of each repository; exits 0 when every one
    /// succeeded, 1 otherwise. Ctrl-C cancels the job.
    Run(RunArgs),
    /// Show a job and its counts.
    Status {
        /// Job id.
        job: String,
    },
    /// A job's results, in the order of its repositories.
    Results {
        /// Job id.
        job: String,
        /// One JSON object per line (the server's `?format=jsonl`).
        #[arg(long)]
        jsonl: bool,
    },
    /// Stop a job: pending entries never start, running ones are killed.
    Cancel {
        /// Job id.
        job: String,
    },
}

/// Arguments of `repobox job run`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "The repositories file has one repository a line, `URL [BRANCH] [COMMIT]` \
    (`-` for a branch left out; blank lines and lines starting with # are skipped), or is a \
    JSON array of {\"repo_url\", \"branch\"?, \"commit\"?}. `-` reads it from stdin."
)]
pub struct RunArgs {
    /// The repositories (see below).
    #[arg(long, value_name = "FILE")]
    pub repos: PathBuf,
    /// Sandboxes at once (server default: 4).
    #[arg(long, short = 'j')]
    pub concurrency: Option<u32>,
    /// Seconds each command may run.
    #[arg(long, short = 't', value_name = "SECS")]
    pub timeout: Option<u64>,
    /// An environment variable for every sandbox (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Image to use instead of the server's default (pulled when missing).
    #[arg(long, conflicts_with = "image_id")]
    pub image: Option<String>,
    /// An image built by `POST /images` that every entry runs on (`img-…`).
    #[arg(long, value_name = "ID")]
    pub image_id: Option<String>,
    /// Print the results as JSON lines instead of a table.
    #[arg(long)]
    pub jsonl: bool,
    /// The command, run in /workspace: one argument is a shell line (`bash -c`);
    /// several are a program and its arguments, run exactly as given.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// One repository of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoEntry {
    /// URL of the repository.
    pub repo_url: String,
    /// Branch, if not the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit, if not the branch's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Reads a repositories file: a JSON array (when it starts with `[`) or lines of
/// `URL [BRANCH] [COMMIT]`, where `-` leaves a field out.
pub fn parse_repos(text: &str) -> Result<Vec<RepoEntry>, String> {
    let repos: Vec<RepoEntry> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text)
            .map_err(|err| format!("not a JSON array of repositories: {err}"))?
    } else {
        let mut repos = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let given = |i: usize| {
                fields
                    .get(i)
                    .filter(|field| **field != "-")
                    .map(|field| (*field).to_owned())
            };
            if fields.len() > 3 || fields[0] == "-" {
                return Err(format!(
                    "line {}: expected `URL [BRANCH] [COMMIT]`, got {line:?}",
                    number + 1
                ));
            }
            repos.push(RepoEntry {
                repo_url: fields[0].to_owned(),
                branch: given(1),
                commit: given(2),
            });
        }
        repos
    };
    if repos.is_empty() {
        return Err("no repositories in it".to_owned());
    }
    Ok(repos)
}

/// Runs a `repobox job` command.
pub async fn run(client: &Client, command: JobCommand, json: bool) -> CliResult {
    match command {
        JobCommand::Run(args) => run_job(client, args, json).await,
        JobCommand::Status { job } => {
            let job = client.get(&format!("/jobs/{job}")).await?;
            if json {
                print_json(&job);
            } else {
                print_job(&job);
            }
            Ok(0)
        }
        JobCommand::Results { job, jsonl } => {
            print_results(client, &job, json, jsonl).await?;
            Ok(0)
        }
        JobCommand::Cancel { job } => {
            let answer = client
                .post(&format!("/jobs/{job}/cancel"), &json!({}))
                .await?;
            if json {
                print_json(&answer);
            } else {
                outln(format_args!("{job} {}", field(&answer, "status")));
            }
            Ok(0)
        }
    }
}

fn read_repos(path: &PathBuf) -> CliResult<Vec<RepoEntry>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the repositories from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the repositories file {}", path.display()))?
    };
    parse_repos(&text).map_err(|err| CliError::Usage(format!("{}: {err}", path.display())))
}

async fn run_job(client: &Client, args: RunArgs, json: bool) -> CliResult {
    let repos = read_repos(&args.repos)?;
    let mut body = json!({ "command": shell_command(&args.command), "repos": repos });
    if let Some(concurrency) = args.concurrency {
        body["concurrency"] = json!(concurrency);
    }
    if let Some(timeout) = args.timeout {
        body["timeout_secs"] = json!(timeout);
    }
    if let Some(env) = env_object(args.env) {
        body["environment_vars"] = json!(env);
    }
    if let Some(image_id) = args.image_id {
        body["image_id"] = json!(image_id);
    }
    if let Some(image) = args.image {
        body["image"] = json!(image);
    }
    let job = client.post("/jobs", &body).await?;
    let id = field(&job, "job_id");
    let total = job["total"].as_u64().unwrap_or(repos.len() as u64);
    eprintln!("repobox: job {id}: {total} repositories (Ctrl-C cancels it)");

    tokio::select! {
        followed = follow(client, &id, total) => followed?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("repobox: cancelling job {id}");
            client.post(&format!("/jobs/{id}/cancel"), &json!({})).await?;
            return Ok(130);
        }
    }
    let results = print_results(client, &id, json, args.jsonl).await?;
    let all_succeeded = results.iter().all(|result| result["status"] == "succeeded");
    Ok(i32::from(!all_succeeded))
}

/// Follows the job's events with a progress bar until `done`; a stream that breaks
/// (a server restart) is opened again: it replays what finished meanwhile.
async fn follow(client: &Client, id: &str, total: u64) -> CliResult<()> {
    let bar = progress(total, id);
    let mut finished: HashSet<u64> = HashSet::new();
    let mut attempts = 0;
    loop {
        let request = client.request(Method::GET, &format!("/jobs/{id}/events"));
        let opened = client.events(request).await;
        let mut events = match opened {
            Ok(events) => events,
            Err(err) if attempts < 5 && !matches!(err, CliError::Api { .. }) => {
                attempts += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(err) => {
                bar.abandon();
                return Err(err);
            }
        };
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            match event.event.as_str() {
                "result" => {
                    let result: Value =
                        serde_json::from_str(&event.data).context("a malformed result event")?;
                    if let Some(index) = result["index"].as_u64() {
                        finished.insert(index);
                    }
                    bar.set_position(finished.len() as u64);
                    bar.set_message(format!("{id} ({})", field(&result, "repo_url")));
                }
                "done" => {
                    bar.finish_and_clear();
                    return Ok(());
                }
                _ => {}
            }
        }
        attempts += 1;
        if attempts > 5 {
            bar.abandon();
            return Err(anyhow::anyhow!("the events of job {id} keep breaking off").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints a job's results (a table, the server's JSON, or JSON lines); returns them.
async fn print_results(
    client: &Client,
    id: &str,
    json: bool,
    jsonl: bool,
) -> CliResult<Vec<Value>> {
    if jsonl {
        let response = client
            .send(client.request(Method::GET, &format!("/jobs/{id}/results?format=jsonl")))
            .await?;
        let text = response.text().await.context("reading the results")?;
        out(&text);
        if !text.is_empty() && !text.ends_with('\n') {
            outln("");
        }
        return Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect());
    }
    let answer = client.get(&format!("/jobs/{id}/results")).await?;
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    if json {
        print_json(&answer);
        return Ok(results);
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|result| {
            let note = match result.get("error") {
                Some(error) if !error.is_null() => field(error, "detail"),
                _ if result["timed_out"] == true => "timed out".to_owned(),
                _ => String::new(),
            };
            vec![
                field(result, "index"),
                field(result, "status"),
                field(result, "exit_code"),
                field(result, "repo_url"),
                field(result, "branch"),
                short_commit(result, "resolved_commit"),
                result["execution_time_secs"]
                    .as_f64()
                    .map_or_else(|| "-".to_owned(), |secs| format!("{secs:.1}s")),
                note,
            ]
        })
        .collect();
    out(format_args!(
        "{}",
        table(
            &[
                "#", "STATUS", "EXIT", "REPO", "BRANCH", "COMMIT", "TIME", "NOTE"
            ],
            &rows
        )
    ));
    let count = |status: &str| results.iter().filter(|r| r["status"] == status).count();
    outln(format_args!(
        "{} succeeded, {} failed, {} errored, {} cancelled of {} (job {id})",
        count("succeeded"),
        count("failed"),
        count("errored"),
        count("cancelled"),
        results.len()
    ));
    Ok(results)
}

fn print_job(job: &Value) {
    for name in [
        "job_id",
        "status",
        "command",
        "total",
        "created_at",
        "started_at",
        "finished_at",
    ] {
        outln(format_args!(
            "{:<12} {}",
            format!("{name}:"),
            field(job, name)
        ));
    }
    let counts = &job["counts"];
    outln(format_args!(
        "{:<12} {} pending, {} running, {} succeeded, {} failed, {} errored, {} cancelled",
        "counts:",
        field(counts, "pending"),
        field(counts, "running"),
        field(counts, "succeeded"),
        field(counts, "failed"),
        field(counts, "errored"),
        field(counts, "cancelled"),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, branch: Option<&str>, commit: Option<&str>) -> RepoEntry {
        RepoEntry {
            repo_url: url.to_owned(),
            branch: branch.map(str::to_owned),
            commit: commit.map(str::to_owned),
        }
    }

    #[test]
    fn repos_files_have_a_repository_a_line() {
        let text = "# comment\nhttps://h/a.git\n\n  https://h/b.git  dev \n\
                    https://h/c.git - abc1234\nhttps://h/d.git main 0123456789abcdef\n";
        assert_eq!(
            parse_repos(text).unwrap(),
            vec![
                entry("https://h/a.git", None, None),
                entry("https://h/b.git", Some("dev"), None),
                entry("https://h/c.git", None, Some("abc1234")),
                entry("https://h/d.git", Some("main"), Some("0123456789abcdef")),
            ]
        );
        let err = parse_repos("https://h/a.git\nhttps://h/b.git x y z\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_repos("- main\n").is_err());
        assert!(parse_repos("# nothing\n\n").is_err());
    }

    #[test]
    fn repos_files_may_be_json() {
        let text = r#" [{"repo_url": "https://h/a.git"}, {"repo_url": "https://h/b.git", "branch": "dev", "commit": "abc1234"}]"#;
        assert_eq!(
            parse_repos(text).unwrap(),
            vec![
                entry("https://h/a.git", None, None),
                entry("https://h/b.git", Some("dev"), Some("abc1234")),
            ]
        );
        assert!(parse_repos("[]").is_err());
        assert!(parse_repos(r#"[{"branch": "x"}]"#).is_err());
        // What is sent leaves out what was not given.
        assert_eq!(
            serde_json::to_value(entry("u", None, Some("c"))).unwrap(),
            json!({"repo_url": "u", "commit": "c"})
        );
    }
}
