//! `repobox exec`: a command's output live, through `POST /execute/stream`, and its
//! exit status as ours. With `--json` the command runs through `POST /execute`
//! instead and the ExecResult is printed (output capped by the server).

use anyhow::Context as _;
use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::output::{print_json, write_now};
use super::{CliError, CliResult, env_object, parse_key_value, shell_command};

/// Arguments of `repobox exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Sandbox id.
    pub id: String,
    /// Working directory (absolute; default /workspace).
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Seconds before the command is killed (server default: 30).
    #[arg(long, short = 't', value_name = "SECS")]
    pub timeout: Option<u64>,
    /// An environment variable for this command only (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// The command: one argument is a shell line (`bash -c`); several are a program
    /// and its arguments, run exactly as given (each quoted for the shell).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl ExecArgs {
    /// The body of an execute request.
    pub fn body(&self) -> Value {
        let mut body = json!({ "command": shell_command(&self.command) });
        if let Some(dir) = &self.workdir {
            body["working_directory"] = json!(dir);
        }
        if let Some(timeout) = self.timeout {
            body["timeout_secs"] = json!(timeout);
        }
        if let Some(env) = env_object(self.env.clone()) {
            body["environment"] = json!(env);
        }
        body
    }
}

/// Runs `args`, streaming; returns the command's exit status.
pub async fn run(client: &Client, args: ExecArgs, json: bool) -> CliResult {
    let path = format!("/containers/{}/execute", args.id);
    if json {
        let result = client.post(&path, &args.body()).await?;
        print_json(&result);
        return Ok(exit_status(result.get("exit_code").and_then(Value::as_i64)));
    }
    let request = client
        .request(Method::POST, &format!("{path}/stream"))
        .json(&args.body());
    let mut events = client.events(request).await?;
    while let Some(event) = events.next().await {
        let event = event?;
        match event.event.as_str() {
            "stdout" | "stderr" => {
                let chunk: Chunk = serde_json::from_str(&event.data)
                    .with_context(|| format!("a malformed {} event", event.event))?;
                write_now(event.event == "stderr", chunk.data.as_bytes())
                    .context("writing the command's output")?;
            }
            "exit" => {
                let exit: Value =
                    serde_json::from_str(&event.data).context("a malformed exit event")?;
                if exit.get("timed_out").and_then(Value::as_bool) == Some(true) {
                    eprintln!("repobox: the command timed out");
                }
                return Ok(exit_status(exit.get("exit_code").and_then(Value::as_i64)));
            }
            "error" => {
                return Err(super::client::error_from_body(
                    reqwest::StatusCode::INTERNAL_SERVER_ERROR,
                    event.data.as_bytes(),
                ));
            }
            _ => {}
        }
    }
    Err(CliError::Other(anyhow::anyhow!(
        "the server ended the stream before the command's exit"
    )))
}

#[derive(serde::Deserialize)]
struct Chunk {
    data: String,
}

/// A remote exit code as a local exit status (which holds 0 … 255).
pub fn exit_status(code: Option<i64>) -> i32 {
    match code {
        Some(code @ 0..=255) => i32::try_from(code).unwrap_or(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_only_what_was_given() {
        let args = ExecArgs {
            id: "x".to_owned(),
            workdir: Some("/tmp".to_owned()),
            timeout: None,
            env: vec![("K".to_owned(), "V".to_owned())],
            command: vec!["echo".to_owned(), "$HOME".to_owned()],
        };
        assert_eq!(
            args.body(),
            json!({"command": "echo '$HOME'", "working_directory": "/tmp", "environment": {"K": "V"}})
        );
    }

    #[test]
    fn exit_codes_fit_an_exit_status() {
        assert_eq!(exit_status(Some(0)), 0);
        assert_eq!(exit_status(Some(3)), 3);
        assert_eq!(exit_status(Some(255)), 255);
        assert_eq!(exit_status(Some(-1)), 1);
        assert_eq!(exit_status(Some(300)), 1);
        assert_eq!(exit_status(None), 1);
    }
}
