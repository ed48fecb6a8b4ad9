//! repobox as tools for AI agents, over the Model Context Protocol (the official SDK,
//! `rmcp`): create a sandbox of a repository, run commands in it, read, write, list
//! and search its files, destroy it.
//!
//! The tools are written once, in [`Tools`], against the HTTP API through
//! [`client::ApiClient`], and reach the user in two ways:
//! - `repobox mcp`: MCP on stdin/stdout, for an agent that starts it as a subprocess;
//!   calls go over HTTP to the server at `REPOBOX_URL` ([`serve_stdio`]).
//! - the server's own `/mcp` endpoint (streamable HTTP, [`http_service`]): calls go
//!   to the API router in-process, with the caller's `Authorization` header, so each
//!   tool meets the same validation, command policy and API keys as a REST client.
//!
//! - [`client`]: the API, over HTTP or in-process.
//! - [`text`]: how the answers read.

pub mod client;
pub mod text;

use std::sync::Arc;

use axum::http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Extensions};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt as _, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;
use client::{ApiClient, Call, Caller};
use repobox_client::Error as ApiError;
use text::{absolute, segment};

/// `list_directory` shows this many entries unless told otherwise…
const DEFAULT_MAX_ENTRIES: usize = 200;
/// …and never more than this many.
const MAX_ENTRIES: usize = 2000;
/// `read_file` shows this many lines unless told otherwise.
const DEFAULT_LIMIT_LINES: usize = 2000;
/// `search_files` shows this many matching lines.
const MAX_MATCHES: usize = 200;
/// Bound of a search (seconds): grep over a large checkout takes a while, not forever.
const SEARCH_TIMEOUT_SECS: u64 = 60;

/// Arguments of `create_sandbox`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateSandbox {
    /// URL of the git repository: http:// or https://, on a host the server allows.
    pub repo_url: String,
    /// Branch to check out. Default: the repository's default branch.
    pub branch: Option<String>,
    /// Commit to check out: a full SHA or at least 7 hex digits. With `branch`, it must be on that branch.
    pub commit: Option<String>,
    /// Lifetime in seconds: the sandbox is destroyed automatically after it. Default: no expiry.
    pub max_runtime_secs: Option<u64>,
    /// A container image with the toolchain the repository needs (e.g. `node:20-bookworm`), pulled when missing, within the server's allowed images. Default: the server's image (git and Python).
    pub image: Option<String>,
    /// An image built from this repository's Dockerfile or devcontainer (`img-…`, from `POST /images`). Not with `image`.
    pub image_id: Option<String>,
    /// Hosts the sandbox may reach over HTTP(S) through the server's egress proxy, e.g. `["pypi.org", "*.pythonhosted.org"]` to `pip install`; within what the server allows. Default: no network at all.
    pub allow_hosts: Option<Vec<String>>,
}

/// Arguments naming a sandbox.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SandboxId {
    /// The sandbox's id (`container_id` from create_sandbox or list_sandboxes).
    pub container_id: String,
}

/// Arguments of `run_command`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunCommand {
    /// The sandbox's id.
    pub container_id: String,
    /// A shell command line, run by `bash -c` (pipes, `&&`, redirections work). Standard input is empty.
    pub command: String,
    /// Directory to run it in: absolute, or relative to /workspace. Default: /workspace (the checkout).
    pub working_directory: Option<String>,
    /// Seconds before the command and everything it started are killed. Default: 30; the server sets the maximum.
    pub timeout_secs: Option<u64>,
}

/// Arguments of `read_file`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadFile {
    /// The sandbox's id.
    pub container_id: String,
    /// The file: absolute, or relative to /workspace.
    pub path: String,
    /// First line to show, counting from 1. Default: 1.
    pub offset_line: Option<usize>,
    /// How many lines to show. Default: 2000 (and at most 100000 characters in all).
    pub limit_lines: Option<usize>,
}

/// Arguments of `write_file`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteFile {
    /// The sandbox's id.
    pub container_id: String,
    /// The file: absolute, or relative to /workspace. Missing parent directories are created.
    pub path: String,
    /// The whole new content of the file (text, written as UTF-8).
    pub content: String,
}

/// Arguments of `list_directory`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListDirectory {
    /// The sandbox's id.
    pub container_id: String,
    /// The directory: absolute, or relative to /workspace ("." is /workspace).
    pub path: String,
    /// How many entries to show at most (by name). Default: 200; at most 2000.
    pub max_entries: Option<usize>,
}

/// Arguments of `search_files`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchFiles {
    /// The sandbox's id.
    pub container_id: String,
    /// What to look for: an extended regular expression (as `grep -E`), e.g. `fn main|TODO`.
    pub pattern: String,
    /// File or directory to search in: absolute, or relative to /workspace. Default: /workspace.
    pub path: Option<String>,
}

/// repobox's tools, over any [`ApiClient`].
#[derive(Clone)]
pub struct Tools {
    api: Arc<dyn ApiClient>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tools").finish_non_exhaustive()
    }
}

/// What the HTTP request of an MCP call carried (nothing over stdio).
fn caller(extensions: &Extensions) -> Caller {
    let Some(parts) = extensions.get::<Parts>() else {
        return Caller::default();
    };
    Caller {
        authorization: parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .cloned(),
        request_id: parts.headers.get("x-request-id").cloned(),
    }
}

/// A tool's answer: its text, or the failure's (`isError: true`).
fn answer(result: Result<String, ApiError>) -> CallToolResult {
    match result {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(failure) => CallToolResult::error(vec![ContentBlock::text(failure.to_string())]),
    }
}

fn container(id: &str) -> String {
    format!("/containers/{}", segment(id))
}

fn query(value: &str) -> String {
    repobox_client::encode(value)
}

#[tool_router]
impl Tools {
    /// The tools, calling the API through `api`.
    pub fn new(api: Arc<dyn ApiClient>) -> Self {
        Self {
            api,
            tool_router: Self::tool_router(),
        }
    }

    async fn call(&self, call: Call, extensions: &Extensions) -> Result<Value, ApiError> {
        self.api.call(call, &caller(extensions)).await
    }

    /// Runs `command` through the execute endpoint; the ExecResult.
    async fn execute(
        &self,
        id: &str,
        body: Value,
        extensions: &Extensions,
    ) -> Result<Value, ApiError> {
        self.call(
            Call::post(format!("{}/execute", container(id)), body),
            extensions,
        )
        .await
    }

    #[tool(
        description = "Create a sandbox: an isolated Linux container (no network, unless allow_hosts names hosts to reach through the server's proxy) holding a git checkout of the repository at /workspace. Returns its container_id, which the other tools take. Takes as long as the clone (usually seconds).",
        annotations(open_world_hint = true)
    )]
    async fn create_sandbox(
        &self,
        Parameters(args): Parameters<CreateSandbox>,
        extensions: Extensions,
    ) -> CallToolResult {
        let mut body = json!({ "repo_url": args.repo_url });
        if let Some(branch) = args.branch {
            body["branch"] = json!(branch);
        }
        if let Some(commit) = args.commit {
            body["commit"] = json!(commit);
        }
        if let Some(secs) = args.max_runtime_secs {
            body["max_runtime_secs"] = json!(secs);
        }
        if let Some(image) = args.image {
            body["image"] = json!(image);
        }
        if let Some(image_id) = args.image_id {
            body["image_id"] = json!(image_id);
        }
        if let Some(allow) = args.allow_hosts {
            body["network"] = json!({ "allow": allow });
        }
        let result = self
            .call(Call::post("/containers".to_owned(), body), &extensions)
            .await;
        answer(result.map(|sandbox| text::created(&sandbox)))
    }

    #[tool(
        description = "List the sandboxes: id, status, repository, branch, commit and expiry of each.",
        annotations(read_only_hint = true)
    )]
    async fn list_sandboxes(&self, extensions: Extensions) -> CallToolResult {
        let result = self
            .call(Call::get("/containers".to_owned()), &extensions)
            .await;
        answer(result.map(|listing| text::sandboxes(&listing)))
    }

    #[tool(
        description = "Run a shell command in a sandbox (bash -c, in /workspace unless told otherwise) and wait for it. Returns the exit code, stdout and stderr (a long stream keeps its beginning and end, and says what was cut). A non-zero exit is a normal result, not an error. At the timeout the command and all it started are killed (exit code 124)."
    )]
    async fn run_command(
        &self,
        Parameters(args): Parameters<RunCommand>,
        extensions: Extensions,
    ) -> CallToolResult {
        let mut body = json!({ "command": args.command });
        if let Some(dir) = args.working_directory {
            body["working_directory"] = json!(absolute(&dir));
        }
        if let Some(secs) = args.timeout_secs {
            body["timeout_secs"] = json!(secs);
        }
        let result = self.execute(&args.container_id, body, &extensions).await;
        answer(result.map(|result| text::exec_result(&result)))
    }

    #[tool(
        description = "Read a text file of a sandbox, its lines numbered (number, tab, line). Pages with offset_line and limit_lines; says how many lines there are and how to read on. Binary files are not shown (use run_command, e.g. `xxd FILE | head`).",
        annotations(read_only_hint = true)
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadFile>,
        extensions: Extensions,
    ) -> CallToolResult {
        answer(self.read(args, &extensions).await)
    }

    async fn read(&self, args: ReadFile, extensions: &Extensions) -> Result<String, ApiError> {
        let offset = args.offset_line.unwrap_or(1);
        let limit = args.limit_lines.unwrap_or(DEFAULT_LIMIT_LINES);
        if offset == 0 || limit == 0 {
            return Err(ApiError::Usage(
                "offset_line and limit_lines count from 1".to_owned(),
            ));
        }
        let path = absolute(&args.path);
        let file = self
            .call(
                Call::get(format!(
                    "{}/files?file_path={}",
                    container(&args.container_id),
                    query(&path)
                )),
                extensions,
            )
            .await?;
        let size = file.get("size").and_then(Value::as_u64).unwrap_or(0);
        if file.get("is_binary").and_then(Value::as_bool) == Some(true) {
            return Ok(format!(
                "{path}: a binary file of {size} bytes (not UTF-8 text), not shown. Inspect it with run_command (e.g. `file`, `xxd {path} | head`)."
            ));
        }
        let content = file.get("content").and_then(Value::as_str).unwrap_or("");
        text::numbered_lines(&path, content, offset, limit).ok_or_else(|| {
            ApiError::Usage(format!(
                "{path} has {} lines: offset_line {offset} is past its end",
                content.lines().count()
            ))
        })
    }

    #[tool(
        description = "Write a file in a sandbox: creates it (and missing parent directories) or replaces its whole content.",
        annotations(destructive_hint = true, idempotent_hint = true)
    )]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteFile>,
        extensions: Extensions,
    ) -> CallToolResult {
        let path = absolute(&args.path);
        let bytes = args.content.into_bytes();
        let size = bytes.len();
        let result = self
            .call(
                Call::put_bytes(
                    format!(
                        "{}/files/raw?file_path={}",
                        container(&args.container_id),
                        query(&path)
                    ),
                    bytes,
                ),
                &extensions,
            )
            .await;
        answer(result.map(|_| format!("Wrote {size} bytes to {path}.")))
    }

    #[tool(
        description = "List a directory of a sandbox: each entry with its kind (dir, file with its size, link with its target), sorted by name, hidden ones included. Shows at most max_entries and says when there are more.",
        annotations(read_only_hint = true)
    )]
    async fn list_directory(
        &self,
        Parameters(args): Parameters<ListDirectory>,
        extensions: Extensions,
    ) -> CallToolResult {
        let max = args
            .max_entries
            .unwrap_or(DEFAULT_MAX_ENTRIES)
            .clamp(1, MAX_ENTRIES);
        let path = absolute(&args.path);
        let result = self
            .call(
                Call::get(format!(
                    "{}/browse?path={}",
                    container(&args.container_id),
                    query(&path)
                )),
                &extensions,
            )
            .await;
        answer(result.map(|listing| text::directory(&listing, max)))
    }

    #[tool(
        description = "Search the text files of a sandbox for a regular expression (grep -rnIE; .git is skipped). Returns the matching lines as path:line:text, at most 200, and says when there are more.",
        annotations(read_only_hint = true)
    )]
    async fn search_files(
        &self,
        Parameters(args): Parameters<SearchFiles>,
        extensions: Extensions,
    ) -> CallToolResult {
        answer(self.search(args, &extensions).await)
    }

    async fn search(&self, args: SearchFiles, extensions: &Extensions) -> Result<String, ApiError> {
        if args.pattern.is_empty() {
            return Err(ApiError::Usage("the pattern is empty".to_owned()));
        }
        let under = absolute(args.path.as_deref().unwrap_or("."));
        // The pattern and path reach grep as variables, never as shell text; `-e` and
        // `--` keep them from being read as options. `head` stops grep early on a
        // large tree: its output, not grep's exit status, tells matches from none.
        let body = json!({
            "command": "grep -rnIE --exclude-dir=.git -e \"$PATTERN\" -- \"$SEARCH_PATH\" | head -n \"$LIMIT\"",
            "environment": {
                "PATTERN": args.pattern,
                "SEARCH_PATH": under,
                "LIMIT": (MAX_MATCHES + 1).to_string(),
            },
            "timeout_secs": SEARCH_TIMEOUT_SECS,
        });
        let result = self.execute(&args.container_id, body, extensions).await?;
        let stdout = result.get("stdout").and_then(Value::as_str).unwrap_or("");
        let stderr = result
            .get("stderr")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        if result.get("timed_out").and_then(Value::as_bool) == Some(true) {
            return Err(ApiError::Usage(format!(
                "the search timed out after {SEARCH_TIMEOUT_SECS} s; search a smaller path"
            )));
        }
        if stdout.is_empty() && !stderr.is_empty() {
            return Err(ApiError::Usage(format!("grep failed: {stderr}")));
        }
        let mut out = text::matches(&args.pattern, &under, stdout, MAX_MATCHES);
        if !stderr.is_empty() {
            let (stderr, _) = text::clip(stderr, 1024, 1024);
            out.push_str("\ngrep also said: ");
            out.push_str(&stderr);
        }
        Ok(out)
    }

    #[tool(
        description = "Destroy a sandbox: its container, every process in it and its files are gone for good.",
        annotations(destructive_hint = true)
    )]
    async fn destroy_sandbox(
        &self,
        Parameters(args): Parameters<SandboxId>,
        extensions: Extensions,
    ) -> CallToolResult {
        let result = self
            .call(Call::delete(container(&args.container_id)), &extensions)
            .await;
        answer(result.map(|_| format!("Destroyed sandbox {}.", args.container_id)))
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "repobox",
    instructions = "repobox runs git repositories in isolated sandboxes. create_sandbox gives a container_id with the checkout at /workspace; pass it to run_command, read_file, write_file, list_directory and search_files (relative paths are under /workspace); destroy_sandbox when done."
)]
impl ServerHandler for Tools {}

/// `repobox mcp`: serves the tools on stdin/stdout until the peer closes them; calls
/// go to the server `client` talks to. Exit status 0, or 1 when MCP itself failed.
pub async fn serve_stdio(client: repobox_client::Client) -> repobox_client::Result {
    let tools = Tools::new(Arc::new(client::OverHttp(client)));
    let running = tools
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|err| anyhow::anyhow!("starting MCP on stdio: {err}"))?;
    running
        .waiting()
        .await
        .map_err(|err| anyhow::anyhow!("MCP on stdio: {err}"))?;
    Ok(0)
}

/// The `/mcp` endpoint: MCP over streamable HTTP, each tool calling `api` (the API
/// router, with its middleware) in-process.
///
/// Stateless, with plain JSON answers: every MCP request is one HTTP request, with no
/// session kept in memory between them (nothing to expire, nothing lost at a
/// restart). `Host` is checked against loopback names (against DNS rebinding) only
/// where that protects something: a server on loopback without API keys. With keys,
/// a rebinding page cannot present one; a server on another address without keys is
/// open to whoever reaches it anyway (and warns so at start).
pub fn http_service(
    api: axum::Router,
    config: &Config,
) -> StreamableHttpService<Tools, NeverSessionManager> {
    let mut settings = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(config.max_request_bytes);
    if !config.api_keys.is_empty() || !config.host.is_loopback() {
        settings = settings.disable_allowed_hosts();
    }
    let tools = Tools::new(Arc::new(client::InProcess::new(api)));
    StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(NeverSessionManager::default()),
        settings,
    )
}
