//! Repository operations: status, a binary-safe diff, apply, and an exact reset.
//!
//! Git runs inside the sandbox, through the agent, as fixed scripts: refs, paths and
//! the patch's location reach them in their environment, never in their text, and
//! every ref is checked by `git rev-parse --verify --end-of-options`. A patch moves as
//! a file in the sandbox (written and read through the agent), so its bytes are exact.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agent::AgentClient;
use crate::backend::ByteStream;
use crate::error::{Error, Result};
use crate::exec::{self, ExecResult};

/// Bound on one repository operation.
pub const GIT_STEP_BOUND: Duration = Duration::from_secs(600);
/// Where patches go on their way in and out of a sandbox.
pub const TMP_DIR: &str = "/.repobox/tmp";

/// Exit code of the scripts when the image has no git.
const NO_GIT: i64 = 127;

/// Common start of every script: git present, `/workspace` a repository, and `g`: git
/// that reads no configuration of the repository's.
///
/// The repository's `.git/config` (and whatever it includes) is the sandbox's, so an
/// attacker's: `core.fsmonitor`, filter drivers, `diff.external`, textconv, hooks and
/// many more keys name programs git would run for us. Neutralising keys one by one
/// means reading the file and then letting git read it again, and anything that can
/// write it in between (a process, the files API) wins the race; so git is given a
/// private common directory instead (`GIT_COMMON_DIR`): its `config` holds only the
/// few keys below, copied as data and checked against that list (the repository's
/// format, and how its working tree is stored), and `refs`, `logs`, `info`,
/// `packed-refs` and `shallow` are links to the real ones. No system or global config
/// is read, variables of the sandbox's environment that steer git are cleared, hooks
/// and the rest are pinned off on the command line as well, and submodules are not
/// entered (a submodule's git would read its own config). Left: the private directory
/// is under `/.repobox/tmp` in the sandbox, where a process that finds its random name
/// while a script runs could rewrite it; such a process already runs code of its own.
const PRELUDE: &str = r#"command -v git >/dev/null 2>&1 || { echo "the image has no git" >&2; exit 127; }
cd /workspace 2>/dev/null || { echo "/workspace is missing" >&2; exit 126; }
unset GIT_DIR GIT_WORK_TREE GIT_COMMON_DIR GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES \
  GIT_CONFIG GIT_CONFIG_PARAMETERS GIT_CONFIG_COUNT GIT_CONFIG_SYSTEM GIT_EXTERNAL_DIFF GIT_DIFF_OPTS GIT_PAGER \
  PAGER GIT_EDITOR EDITOR VISUAL GIT_SEQUENCE_EDITOR GIT_SSH GIT_SSH_COMMAND GIT_ASKPASS SSH_ASKPASS \
  GIT_PROXY_COMMAND GIT_EXEC_PATH GIT_TEMPLATE_DIR GIT_NAMESPACE GIT_CEILING_DIRECTORIES GIT_ATTR_SOURCE \
  GIT_REPLACE_REF_BASE GIT_GRAFT_FILE GIT_SHALLOW_FILE GIT_QUARANTINE_PATH GIT_TRACE GIT_TRACE2 \
  GIT_TRACE2_EVENT GIT_TRACE2_PERF LD_PRELOAD LD_LIBRARY_PATH LD_AUDIT CDPATH 2>/dev/null
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0 GIT_WORK_TREE=/workspace
__rb_git() { git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.sshCommand=false -c diff.external= \
  -c core.pager=cat -c core.editor=false -c sequence.editor=false -c credential.helper= -c protocol.allow=never \
  -c submodule.recurse=false -c gc.auto=0 -c maintenance.auto=false -c core.untrackedCache=false \
  -c safe.directory='*' -c core.quotepath=false -c color.ui=false "$@"; }
__rb_gd=$(__rb_git rev-parse --absolute-git-dir 2>/dev/null) || { echo "/workspace is not a git repository" >&2; exit 125; }
__rb_common=$(__rb_c=$(__rb_git rev-parse --git-common-dir) && cd -P -- "$__rb_c" && pwd -P) || { echo "the repository's common directory is missing" >&2; exit 125; }
mkdir -p /.repobox/tmp && __rb_priv=$(mktemp -d /.repobox/tmp/gitdir-XXXXXXXXXX) || { echo "cannot make a private git directory" >&2; exit 124; }
__rb_rm=
trap 'rm -rf -- "$__rb_priv" ${__rb_rm:+"$__rb_rm"}' EXIT
for __rb_f in refs logs info packed-refs shallow reftable objects; do ln -s "$__rb_common/$__rb_f" "$__rb_priv/$__rb_f" || exit 124; done
: > "$__rb_priv/config" || exit 124
git config --file "$__rb_common/config" --no-includes --get-regexp '^(core\.(repositoryformatversion|filemode|symlinks|ignorecase|precomposeunicode|autocrlf|eol|safecrlf|sparsecheckout|sparsecheckoutcone|checkstat|trustctime)|extensions\.(objectformat|refstorage)|index\.sparse)$' 2>/dev/null |
while read -r __rb_k __rb_v; do
  case $__rb_k in
    core.repositoryformatversion|core.filemode|core.symlinks|core.ignorecase|core.precomposeunicode|core.autocrlf|core.eol|core.safecrlf|core.sparsecheckout|core.sparsecheckoutcone|core.checkstat|core.trustctime|extensions.objectformat|extensions.refstorage|index.sparse)
      git config --file "$__rb_priv/config" "$__rb_k" "$__rb_v" ;;
  esac
done
git config --file "$__rb_priv/config" core.bare false || exit 124
export GIT_DIR="$__rb_gd" GIT_COMMON_DIR="$__rb_priv" GIT_OBJECT_DIRECTORY="$__rb_common/objects"
g() { __rb_git "$@"; }
"#;

const STATUS: &str =
    r#"g status --porcelain=v2 -z --branch --untracked-files=all --ignore-submodules=dirty"#;

const DIFF: &str = r#"base=$(g rev-parse --verify --quiet --end-of-options "$__RB_BASE^{commit}") || { echo "unknown base: $__RB_BASE" >&2; exit 3; }
mkdir -p "${__RB_OUT%/*}" || exit 4
idx=${__RB_OUT}.index
__rb_rm=$idx
real=$(g rev-parse --git-path index) || exit 5
if [ -f "$real" ]; then cp -- "$real" "$idx" || exit 5; fi
export GIT_INDEX_FILE=$idx
[ -f "$idx" ] || g read-tree HEAD || exit 5
if [ "$__RB_UNTRACKED" = 1 ]; then g add -A -- . ; else g add -u -- . ; fi || exit 6
g diff --cached --binary --full-index -M --no-ext-diff --no-textconv "$base" -- > "$__RB_OUT" || exit 7
"#;

const APPLY: &str = r#"__rb_rm=$__RB_PATCH
g apply --binary --whitespace=nowarn -- "$__RB_PATCH"
"#;

const RESET: &str = r#"if [ "$__RB_KILL" = 1 ]; then
  # Everything but the init, the agent and this command's own chain.
  read -r -a sup < "/proc/$PPID/stat"
  keep=" 1 $$ $PPID ${sup[3]} "
  for round in 1 2 3; do
    for d in /proc/[0-9]*; do
      pid=${d#/proc/}
      case "$keep" in *" $pid "*) continue ;; esac
      kill -9 "$pid" 2>/dev/null
    done
  done
  rm -rf /.repobox/sessions/sess-* 2>/dev/null
fi
if [ -n "$__RB_BRANCH" ]; then
  g checkout -q -f -B "$__RB_BRANCH" "$__RB_BASE" -- || exit 10
else
  g checkout -q -f --detach "$__RB_BASE" -- || exit 10
fi
g reset -q --hard "$__RB_BASE" -- || exit 11
g clean -q -ffdx || exit 12
left=$(g status --porcelain --ignored --untracked-files=all) || exit 13
if [ -n "$left" ]; then printf 'not clean after the reset:\n%s\n' "$left" | head -20 >&2; exit 20; fi
[ "$(g rev-parse HEAD)" = "$__RB_BASE" ] || { echo "HEAD is not the base commit" >&2; exit 21; }
if [ -n "$__RB_BRANCH" ]; then
  [ "$(g symbolic-ref -q --short HEAD)" = "$__RB_BRANCH" ] || { echo "HEAD is not on $__RB_BRANCH" >&2; exit 22; }
fi
"#;

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// Path from the repository's root (plain, not quoted).
    pub path: String,
    /// `modified`, `added`, `deleted`, `renamed` or `untracked`.
    pub status: ChangeKind,
    /// For `renamed`: where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Its content or mode changed.
    Modified,
    /// New, and staged.
    Added,
    /// Gone.
    Deleted,
    /// Moved (staged).
    Renamed,
    /// New, not staged.
    Untracked,
}

/// `GET /containers/{id}/git/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GitStatus {
    /// The branch checked out; null on a detached `HEAD`.
    pub branch: Option<String>,
    /// The commit `HEAD` names (null in a repository without commits).
    pub head: Option<String>,
    /// The commit the sandbox was created at.
    pub base_commit: String,
    /// One entry per changed file (ignored files are not listed).
    pub changes: Vec<Change>,
    /// Whether nothing changed.
    pub clean: bool,
}

/// Parses `git status --porcelain=v2 -z --branch --untracked-files=all`.
pub fn parse_status(out: &str, base_commit: &str) -> GitStatus {
    let mut status = GitStatus {
        branch: None,
        head: None,
        base_commit: base_commit.to_owned(),
        changes: Vec::new(),
        clean: true,
    };
    let mut entries = out.split('\0');
    while let Some(entry) = entries.next() {
        if let Some(oid) = entry.strip_prefix("# branch.oid ") {
            status.head = (oid != "(initial)").then(|| oid.to_owned());
        } else if let Some(head) = entry.strip_prefix("# branch.head ") {
            status.branch = (head != "(detached)").then(|| head.to_owned());
        } else if let Some(path) = entry.strip_prefix("? ") {
            status.changes.push(Change {
                path: path.to_owned(),
                status: ChangeKind::Untracked,
                old_path: None,
            });
        } else if let Some(rest) = entry.strip_prefix("1 ") {
            let fields: Vec<&str> = rest.splitn(8, ' ').collect();
            if let [xy, .., path] = fields[..] {
                status.changes.push(Change {
                    path: path.to_owned(),
                    status: kind(xy),
                    old_path: None,
                });
            }
        } else if let Some(rest) = entry.strip_prefix("2 ") {
            let fields: Vec<&str> = rest.splitn(9, ' ').collect();
            let old = entries.next().map(str::to_owned);
            if let [xy, .., path] = fields[..] {
                let renamed = xy.contains('R');
                status.changes.push(Change {
                    path: path.to_owned(),
                    status: if renamed {
                        ChangeKind::Renamed
                    } else {
                        ChangeKind::Added
                    },
                    old_path: if renamed { old } else { None },
                });
            }
        } else if let Some(rest) = entry.strip_prefix("u ")
            && let Some(path) = rest.splitn(10, ' ').nth(9)
        {
            status.changes.push(Change {
                path: path.to_owned(),
                status: ChangeKind::Modified,
                old_path: None,
            });
        }
    }
    status.clean = status.changes.is_empty();
    status
}

fn kind(xy: &str) -> ChangeKind {
    if xy.contains('D') {
        ChangeKind::Deleted
    } else if xy.starts_with('A') {
        ChangeKind::Added
    } else {
        ChangeKind::Modified
    }
}

async fn run(
    agent: &AgentClient,
    body: &str,
    mut env: Vec<(String, String)>,
) -> Result<ExecResult> {
    // Read by the shell before the script's first line: the sandbox's own
    // `environment_vars` must not run anything ahead of it.
    for name in ["BASH_ENV", "ENV"] {
        env.push((name.to_owned(), String::new()));
    }
    let command = exec::Command {
        command: format!("{PRELUDE}{body}"),
        working_dir: "/".to_owned(),
        timeout: GIT_STEP_BOUND,
        env,
        stdin: None,
    };
    match exec::run(agent, command, 64 * 1024 * 1024).await {
        Ok(result) if result.exit_code == NO_GIT => Err(Error::Conflict(
            "the sandbox's image has no git: repository operations need it".to_owned(),
        )),
        Ok(result) if result.timed_out => Err(Error::Conflict(format!(
            "git did not finish within {GIT_STEP_BOUND:?}"
        ))),
        Ok(result) => Ok(result),
        Err(Error::MissingTool(detail)) => Err(Error::Conflict(format!(
            "the sandbox's image has no shell and no git: {detail}"
        ))),
        Err(err) => Err(err),
    }
}

fn failed(what: &str, result: &ExecResult) -> Error {
    Error::Conflict(format!("{what} failed: {}", result.stderr.trim()))
}

/// The repository's status.
pub async fn status(agent: &AgentClient, base_commit: &str) -> Result<GitStatus> {
    let result = run(agent, STATUS, Vec::new()).await?;
    if result.exit_code != 0 {
        return Err(failed("git status", &result));
    }
    Ok(parse_status(&result.stdout, base_commit))
}

/// Writes the diff from `base` to the working tree into the sandbox file `out`
/// (read it with the agent, then [`remove`] it). Unknown `base`: 422.
pub async fn diff_into(agent: &AgentClient, base: &str, untracked: bool, out: &str) -> Result<()> {
    let env = vec![
        ("__RB_BASE".to_owned(), base.to_owned()),
        ("__RB_OUT".to_owned(), out.to_owned()),
        (
            "__RB_UNTRACKED".to_owned(),
            if untracked { "1" } else { "0" }.to_owned(),
        ),
    ];
    let result = run(agent, DIFF, env).await?;
    match result.exit_code {
        0 => Ok(()),
        3 => Err(Error::Checkout(format!(
            "base {base:?} is not a commit of this repository"
        ))),
        _ => Err(failed("git diff", &result)),
    }
}

/// Applies the patch in the sandbox file `patch` (which it removes) to the working
/// tree, all or nothing: a patch that does not apply is 422 and changes nothing.
pub async fn apply(agent: &AgentClient, patch: &str) -> Result<()> {
    let env = vec![("__RB_PATCH".to_owned(), patch.to_owned())];
    let result = run(agent, APPLY, env).await?;
    match result.exit_code {
        0 => Ok(()),
        _ => Err(Error::Checkout(format!(
            "the patch does not apply (nothing was changed): {}",
            result.stderr.trim()
        ))),
    }
}

/// Puts `/workspace` back to `base` on `branch` (`None`: a detached `HEAD`), every
/// modified, untracked and ignored file gone, and checks it did; with `processes`
/// first kills everything the sandbox's users started and ends their sessions.
pub async fn reset(
    agent: &AgentClient,
    base: &str,
    branch: Option<&str>,
    processes: bool,
) -> Result<()> {
    let env = vec![
        ("__RB_BASE".to_owned(), base.to_owned()),
        (
            "__RB_BRANCH".to_owned(),
            branch.unwrap_or_default().to_owned(),
        ),
        (
            "__RB_KILL".to_owned(),
            if processes { "1" } else { "0" }.to_owned(),
        ),
    ];
    let result = run(agent, RESET, env).await?;
    if result.exit_code != 0 {
        return Err(Error::Conflict(format!(
            "the reset could not bring /workspace back to its checkout: {}",
            result.stderr.trim()
        )));
    }
    Ok(())
}

/// Removes a file of [`TMP_DIR`] (best effort).
pub async fn remove(agent: &AgentClient, path: &str) {
    let command = exec::Command {
        command: r#"rm -f -- "$__RB_PATH""#.to_owned(),
        working_dir: "/".to_owned(),
        timeout: Duration::from_secs(30),
        env: vec![("__RB_PATH".to_owned(), path.to_owned())],
        stdin: None,
    };
    let _ = exec::run(agent, command, 4096).await;
}

/// A fresh name under [`TMP_DIR`].
pub fn tmp_name(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{TMP_DIR}/{what}-{}-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The file `path` of the sandbox as a stream, removed once read (or dropped).
pub async fn read_then_remove(
    agent: std::sync::Arc<AgentClient>,
    path: String,
) -> Result<(u64, ByteStream)> {
    let (stat, stream) = agent.read(&path).await?;
    let cleanup = Cleanup {
        agent: agent.clone(),
        path: Some(path),
    };
    let stream =
        futures_util::stream::unfold((stream, cleanup), |(mut stream, mut cleanup)| async move {
            use futures_util::StreamExt;
            match stream.next().await {
                Some(item) => Some((item, (stream, cleanup))),
                None => {
                    cleanup.run().await;
                    None
                }
            }
        });
    Ok((stat.size, Box::pin(stream)))
}

/// Removes a temporary file when the stream that reads it ends or is dropped.
struct Cleanup {
    agent: std::sync::Arc<AgentClient>,
    path: Option<String>,
}

impl Cleanup {
    async fn run(&mut self) {
        if let Some(path) = self.path.take() {
            remove(&self.agent, &path).await;
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let agent = self.agent.clone();
            handle.spawn(async move { remove(&agent, &path).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_v2_gives_each_kind_of_change() {
        let out = [
            "# branch.oid 1111111111111111111111111111111111111111",
            "# branch.head trunk",
            "1 .M N... 100644 100644 100644 aaa aaa README.md",
            "1 D. N... 100644 000000 000000 aaa 000 gone.txt",
            "1 A. N... 000000 100644 100644 000 bbb staged new.txt",
            "2 R. N... 100644 100644 100644 aaa aaa R100 new name.txt",
            "old name.txt",
            "? dir/untracked one.txt",
            "",
        ]
        .join("\0");
        let status = parse_status(&out, "base");
        assert_eq!(status.branch.as_deref(), Some("trunk"));
        assert_eq!(status.head.as_deref(), Some(&"1".repeat(40)[..]));
        assert!(!status.clean);
        let got: Vec<(&str, ChangeKind, Option<&str>)> = status
            .changes
            .iter()
            .map(|c| (c.path.as_str(), c.status, c.old_path.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("README.md", ChangeKind::Modified, None),
                ("gone.txt", ChangeKind::Deleted, None),
                ("staged new.txt", ChangeKind::Added, None),
                ("new name.txt", ChangeKind::Renamed, Some("old name.txt")),
                ("dir/untracked one.txt", ChangeKind::Untracked, None),
            ]
        );
        let detached = parse_status("# branch.oid (initial)\0# branch.head (detached)\0", "b");
        assert_eq!(
            (detached.branch, detached.head, detached.clean),
            (None, None, true)
        );
    }
}
