//! The `repobox` command line: `serve` (the server; also what a bare `repobox` runs)
//! and the client commands, which talk to a running server over its HTTP API.
//!
//! - [`client`]: the `repobox-client` crate: a small typed HTTP client (errors carry
//!   the server's `detail`), with
//!   [`client::sse`]: Server-Sent Events framing, for `exec` and `job run`.
//! - [`containers`]: `create`, `ls`, `status`, `rm`, `extend`, `snapshot`, `fork`.
//! - [`exec`]: `exec`, output streamed live, the command's exit code as ours.
//! - [`shell`]: `shell`, an interactive terminal over the WebSocket.
//! - [`cp`]: `cp` both ways through the archive endpoints.
//! - [`ports`]: `ports` and `port-forward` (a local port to one in a sandbox).
//! - [`jobs`]: `job run|status|results|cancel`.
//!
//! Every client command takes `--json` (print the server's JSON instead of text).
//! Exit status: 0 on success, 1 when the server refused a request or could not be
//! reached (its `error` and `detail` on stderr), 2 for a usage error (as clap does);
//! `exec` and `shell` exit with the remote command's status.

pub use repobox_client as client;
pub mod containers;
pub mod cp;
pub mod exec;
pub mod jobs;
pub mod output;
pub mod ports;
pub mod shell;

use std::collections::BTreeMap;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::Config;
use client::Client;

/// Where a client finds the server when neither `--url` nor `REPOBOX_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// Command line of the `repobox` binary.
#[derive(Debug, Parser)]
#[command(
    name = "repobox",
    version,
    about = "Git repositories as locked-down Docker sandboxes, over HTTP",
    long_about = "Git repositories as locked-down Docker sandboxes, over HTTP.\n\n\
        `repobox serve` (or a bare `repobox`) runs the server; `repobox serve --help` lists \
        its settings. The other commands are clients of a running server."
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How client commands reach the server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Settings of the client commands (accepted before or after the subcommand).
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server (client commands).
    #[arg(long, global = true, env = "REPOBOX_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// API key sent as `Authorization: Bearer …` (client commands).
    #[arg(long, global = true, env = "REPOBOX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the server's JSON instead of text (client commands).
    #[arg(long, global = true)]
    pub json: bool,
}

/// Subcommands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP server (the default).
    Serve(Box<Config>),
    /// Create a sandbox from a git repository; prints its id.
    Create(containers::CreateArgs),
    /// List sandboxes.
    Ls,
    /// Show a sandbox.
    Status {
        /// Sandbox id.
        id: String,
    },
    /// Run a command in a sandbox, its output live; exits with the command's status.
    Exec(exec::ExecArgs),
    /// An interactive login shell in a sandbox; exits with the shell's status.
    Shell(shell::ShellArgs),
    /// Copy files or directories between here and a sandbox (`ID:/path` names a
    /// path in a sandbox).
    Cp(cp::CpArgs),
    /// The TCP ports listening in a sandbox, with their processes.
    Ports {
        /// Sandbox id.
        id: String,
    },
    /// Forward 127.0.0.1:LOCAL here to port REMOTE inside a sandbox (until Ctrl-C).
    PortForward(ports::PortForwardArgs),
    /// A sandbox's egress allow-list and what its proxy allowed and refused.
    Egress {
        /// Sandbox id.
        id: String,
    },
    /// Destroy sandboxes.
    Rm {
        /// Sandbox ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Set a sandbox to expire SECS seconds from now.
    Extend {
        /// Sandbox id.
        id: String,
        /// Seconds from now.
        secs: u64,
    },
    /// Snapshot a sandbox's filesystem; prints the snapshot id.
    Snapshot {
        /// Sandbox id.
        id: String,
        /// A name for the snapshot.
        #[arg(long)]
        name: Option<String>,
    },
    /// Start copies of a sandbox (from one snapshot of it); prints their ids.
    Fork {
        /// Sandbox id.
        id: String,
        /// How many copies.
        #[arg(short = 'n', long = "count")]
        count: u32,
    },
    /// One command across many repositories.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Serve repobox's tools to an AI agent over MCP on stdin/stdout (the agent starts
    /// this; each tool calls the server at --url / REPOBOX_URL).
    Mcp,
    /// Print a shell completion script (`repobox completions bash > …`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the build context (a tar) of the agent's image, which the Kubernetes
    /// backend's pods copy the agent from:
    /// `repobox agent-image | docker build -t "$(repobox agent-image --tag)" -`.
    AgentImage {
        /// Print the image's default tag instead.
        #[arg(long)]
        tag: bool,
    },
}

impl Cli {
    /// Parses flags and environment, after loading `.env` from the working directory
    /// (variables already set in the environment win over `.env`).
    pub fn load() -> Self {
        // A missing .env is normal; a malformed one is worth a word but not a refusal.
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            eprintln!("repobox: ignoring .env: {err}");
        }
        Cli::parse()
    }
}

pub use repobox_client::{Error as CliError, Result as CliResult};

/// Runs a client command (anything but `serve`) to its end; returns the exit status.
pub async fn run(args: ClientArgs, command: Command) -> i32 {
    match dispatch(&args, command).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("repobox: {err}");
            err.exit_code()
        }
    }
}

async fn dispatch(args: &ClientArgs, command: Command) -> CliResult {
    if let Command::Completions { shell } = command {
        let mut cli = Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cli, "repobox", &mut script);
        output::out(String::from_utf8_lossy(&script));
        return Ok(0);
    }
    let client = Client::new(&args.url, args.api_key.clone())?;
    let json = args.json;
    match command {
        Command::Serve(_) | Command::Completions { .. } | Command::AgentImage { .. } => {
            unreachable!("handled by the caller and above")
        }
        Command::Create(create) => containers::create(&client, create, json).await,
        Command::Ls => containers::list(&client, json).await,
        Command::Status { id } => containers::status(&client, &id, json).await,
        Command::Rm { ids } => containers::remove(&client, &ids, json).await,
        Command::Extend { id, secs } => containers::extend(&client, &id, secs, json).await,
        Command::Snapshot { id, name } => containers::snapshot(&client, &id, name, json).await,
        Command::Fork { id, count } => containers::fork(&client, &id, count, json).await,
        Command::Exec(exec) => exec::run(&client, exec, json).await,
        Command::Shell(shell) => shell::run(&client, shell).await,
        Command::Cp(cp) => cp::run(&client, cp, json).await,
        Command::Ports { id } => ports::list(&client, &id, json).await,
        Command::PortForward(args) => ports::forward(&client, args).await,
        Command::Egress { id } => containers::egress(&client, &id, json).await,
        Command::Job(job) => jobs::run(&client, job, json).await,
        Command::Mcp => crate::mcp::serve_stdio(client).await,
    }
}

/// Parses `NAME=VALUE` (for `--env`): the name must be a valid environment name.
pub fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not NAME=VALUE"))?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{name:?} is not a valid environment variable name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `--env` pairs as the JSON object the API takes (the last of a repeated name wins).
pub(crate) fn env_object(pairs: Vec<(String, String)>) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| pairs.into_iter().collect())
}

/// The command line after `--` as one shell command, as ssh does: one argument is
/// taken as is (`-- 'make test && echo ok'`), several are joined with spaces.
pub(crate) fn shell_command(argv: &[String]) -> String {
    match argv {
        // One argument is a shell line, as typed: `repobox exec ID -- 'a | b'`.
        [line] => line.clone(),
        // Several are a program and its arguments, run exactly as given (as
        // `docker exec` and `kubectl exec` do): each is quoted for the shell.
        argv => argv
            .iter()
            .map(|arg| shell_quote(arg))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// `arg` as one word for a POSIX shell: as is when it holds nothing the shell would
/// read, else single-quoted (a `'` inside becomes `'\''`).
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_arguments_run_as_given_and_one_is_a_shell_line() {
        let argv = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(shell_command(&argv(&["echo a; exit 7"])), "echo a; exit 7");
        assert_eq!(
            shell_command(&argv(&["sh", "-c", "echo a; exit 7"])),
            "sh -c 'echo a; exit 7'"
        );
        assert_eq!(
            shell_command(&argv(&["printf", "%s\\n", "it's", "", "$HOME"])),
            "printf '%s\\n' 'it'\\''s' '' '$HOME'"
        );
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("A_1=x=y").unwrap(),
            ("A_1".to_owned(), "x=y".to_owned())
        );
        assert_eq!(
            parse_key_value("EMPTY=").unwrap(),
            ("EMPTY".to_owned(), String::new())
        );
        for bad in ["novalue", "=x", "1A=x", "A-B=x", "A B=x"] {
            assert!(parse_key_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bare_repobox_serves_and_client_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["repobox"]).unwrap();
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["repobox", "serve", "--port", "9000"]).unwrap();
        match cli.command {
            Some(Command::Serve(config)) => assert_eq!(config.port, 9000),
            other => panic!("{other:?}"),
        }
        // Server settings belong to `serve`.
        assert!(Cli::try_parse_from(["repobox", "--port", "9000"]).is_err());
        let cli = Cli::try_parse_from(["repobox", "--url", "http://h:1", "ls", "--json"]).unwrap();
        assert_eq!(cli.client.url, "http://h:1");
        assert!(cli.client.json);
        // A repository URL is not the server's.
        let cli = Cli::try_parse_from(["repobox", "--url", "http://h:1", "create", "http://git/r"])
            .unwrap();
        assert_eq!(cli.client.url, "http://h:1");
        let Some(Command::Create(create)) = cli.command else {
            panic!("not create")
        };
        assert_eq!(create.repo_url, "http://git/r");
    }

    #[test]
    fn exec_takes_the_command_after_the_double_dash() {
        let cli = Cli::try_parse_from([
            "repobox",
            "exec",
            "box-1",
            "--timeout",
            "5",
            "--",
            "ls",
            "-la",
            "--json",
        ])
        .unwrap();
        let Some(Command::Exec(exec)) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(exec.id, "box-1");
        assert_eq!(exec.timeout, Some(5));
        assert_eq!(shell_command(&exec.command), "ls -la --json");
        assert!(!cli.client.json, "--json after -- belongs to the command");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
