//! Sessions: a shell whose state carries from one command to the next.
//!
//! A session is not a shell process kept alive (one reading its commands from a pipe
//! hangs on a heredoc or on a command that reads stdin, and mixes up the streams and
//! exit codes of consecutive commands). Each command is its own `bash` under the
//! agent, exactly as `execute` runs one, that first restores the session's state and,
//! when it exits (also by `exit n` or `set -e`), saves it: variables (exported or
//! not, arrays included), functions, aliases, shell options and the working
//! directory. So exit codes, separate stdout/stderr, `stdin`, heredocs and timeouts
//! are those of `execute`; a command killed at its timeout saves nothing, and the
//! session goes on from the state before it.
//!
//! The state lives in the sandbox, under `/.repobox/sessions/<id>/`: sessions survive
//! a server restart, and end with their sandbox. What does not carry over: background
//! jobs, traps, and variables bash makes read-only or manages itself.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use crate::agent::AgentClient;
use crate::error::{Error, Result};
use crate::exec;

/// Where sessions keep their state inside a sandbox.
pub const SESSIONS_DIR: &str = "/.repobox/sessions";
/// The file holding the next session number.
const NEXT_FILE: &str = "/.repobox/sessions/.next";
/// Bound on the small file operations of create, list and delete.
const STEP_BOUND: Duration = Duration::from_secs(30);

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct SessionInfo {
    /// `sess-<n>`, unique within the sandbox and never reused.
    pub session_id: String,
    /// Where its next command starts (as its last command left it).
    pub working_directory: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Whether `id` is a session id (`sess-<n>`), before it is used in a path.
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("sess-")
        .is_some_and(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn dir(id: &str) -> String {
    format!("{SESSIONS_DIR}/{id}")
}

/// `value` as one shell word.
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// A small file of the session's (at most 64 KiB: it is the sandbox's to write, so a
/// larger one is refused, never read whole).
async fn read_text(agent: &AgentClient, path: &str) -> Result<Option<String>> {
    read_bounded(agent, path, 64 * 1024).await
}

async fn write_text(agent: &AgentClient, path: &str, text: String) -> Result<()> {
    let body = futures_util::stream::once(async move { Ok(Bytes::from(text)) });
    agent.write(path, 0o600, true, Box::pin(body)).await?;
    Ok(())
}

/// Creates a session starting in `working_dir` with `env` exported. The caller holds
/// the sandbox's session lock (the number is read, then written).
pub async fn create(
    agent: &AgentClient,
    working_dir: &str,
    env: &BTreeMap<String, String>,
) -> Result<SessionInfo> {
    tokio::time::timeout(STEP_BOUND, async {
        match agent.stat(working_dir, true).await? {
            Some(stat) if stat.kind == repobox_protocol::Kind::Directory => {}
            _ => {
                return Err(Error::invalid(format!(
                    "working_directory {working_dir:?} is not a directory in the sandbox"
                )));
            }
        }
        let next = read_text(agent, NEXT_FILE)
            .await?
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(1);
        write_text(agent, NEXT_FILE, format!("{}\n", next + 1)).await?;
        let id = format!("sess-{next}");
        let created_at = Utc::now();
        let mut state = format!("cd -- {}\n", quoted(working_dir));
        for (name, value) in env {
            state.push_str(&format!("export {name}={}\n", quoted(value)));
        }
        let dir = dir(&id);
        write_text(agent, &format!("{dir}/created"), created_at.to_rfc3339()).await?;
        write_text(agent, &format!("{dir}/cwd"), working_dir.to_owned()).await?;
        write_text(agent, &format!("{dir}/options"), String::new()).await?;
        // Last: a session without its state does not exist.
        write_text(agent, &format!("{dir}/state"), state).await?;
        Ok(SessionInfo {
            session_id: id,
            working_directory: working_dir.to_owned(),
            created_at,
        })
    })
    .await
    .map_err(|_| Error::NotRunning("the sandbox's agent did not answer in time".to_owned()))?
}

/// The session `id`, or 404.
pub async fn get(agent: &AgentClient, id: &str) -> Result<SessionInfo> {
    let missing = || Error::SessionNotFound(format!("no session {id:?} in this sandbox"));
    if !valid_id(id) {
        return Err(missing());
    }
    let dir = dir(id);
    if read_text(agent, &format!("{dir}/state")).await?.is_none() {
        return Err(missing());
    }
    let cwd = read_text(agent, &format!("{dir}/cwd"))
        .await?
        .unwrap_or_default();
    let created_at = read_text(agent, &format!("{dir}/created"))
        .await?
        .and_then(|text| DateTime::parse_from_rfc3339(text.trim()).ok())
        .map_or_else(Utc::now, |at| at.with_timezone(&Utc));
    Ok(SessionInfo {
        session_id: id.to_owned(),
        working_directory: cwd,
        created_at,
    })
}

/// Every session of the sandbox, oldest first.
pub async fn list(agent: &AgentClient) -> Result<Vec<SessionInfo>> {
    let entries = match agent.list(SESSIONS_DIR).await {
        Ok(entries) => entries,
        Err(Error::PathNotFound(_)) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut ids: Vec<(u64, String)> = entries
        .into_iter()
        .filter(|entry| valid_id(&entry.name))
        .filter_map(|entry| Some((entry.name[5..].parse().ok()?, entry.name)))
        .collect();
    ids.sort();
    let mut sessions = Vec::new();
    for (_, id) in ids {
        match get(agent, &id).await {
            Ok(session) => sessions.push(session),
            // Deleted meanwhile.
            Err(Error::SessionNotFound(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(sessions)
}

/// Deletes the session `id` (its state); 404 when there is none.
pub async fn delete(agent: &AgentClient, id: &str) -> Result<()> {
    get(agent, id).await?;
    let command = exec::Command {
        command: format!("rm -rf -- {}", quoted(&dir(id))),
        working_dir: "/".to_owned(),
        timeout: STEP_BOUND,
        env: Vec::new(),
        stdin: None,
    };
    let result = exec::run(agent, command, 64 * 1024).await?;
    if result.exit_code != 0 {
        return Err(Error::internal(format!(
            "could not remove the session's state: {}",
            result.stderr
        )));
    }
    Ok(())
}

/// Largest saved state a session command restores (it travels in the environment,
/// where one value may not exceed 128 KiB).
const MAX_STATE_BYTES: usize = 96 * 1024;

/// A session's state as the next command restores it.
#[derive(Debug, Clone, Default)]
pub struct Restore {
    state: String,
    options: String,
    skip: String,
}

/// Reads the state of session `id` for its next command (404 when there is none).
///
/// The state files live in the sandbox, where its processes and the files API can
/// rewrite them, and they are code: sourced as they are, they would run whatever was
/// written into them. So the server reads them and hands their text to the command
/// (no later rewrite reaches it), and under `COMMAND_ALLOWLIST` checks that text as
/// a command first: a state written by the save hook passes (it holds assignments,
/// checked functions and `cd`); anything else that would start a program not listed
/// is refused (403), exactly as if it had been sent as a command.
pub async fn restore(
    agent: &AgentClient,
    id: &str,
    policy: &crate::policy::CommandPolicy,
) -> Result<Restore> {
    let missing = || Error::SessionNotFound(format!("no session {id:?} in this sandbox"));
    if !valid_id(id) {
        return Err(missing());
    }
    let dir = dir(id);
    let state = read_bounded(agent, &format!("{dir}/state"), MAX_STATE_BYTES)
        .await?
        .ok_or_else(missing)?;
    let options = read_bounded(agent, &format!("{dir}/options"), 16 * 1024)
        .await?
        .unwrap_or_default();
    if policy.allows_everything() {
        return Ok(Restore {
            state,
            options,
            skip: String::new(),
        });
    }
    policy.check(&state).map_err(|refusal| {
        Error::CommandNotAllowed(format!(
            "the session's saved state would start a program COMMAND_ALLOWLIST does not allow (it was changed outside the session's commands?): {refusal}"
        ))
    })?;
    Ok(Restore {
        state,
        options: strict_options(&options)?,
        skip: crate::policy::CODE_VARIABLES.join(" "),
    })
}

/// The saved shell options under an allow-list: `set ±o name` lines only (`shopt` is
/// not allowed to the session's commands, so its lines carry nothing of theirs), and
/// never `set -o keyword`, which the policy refuses.
fn strict_options(options: &str) -> Result<String> {
    let mut kept = String::new();
    for line in options.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["set", "-o", "keyword"] => {}
            ["set", sign @ ("-o" | "+o"), name]
                if name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') =>
            {
                kept.push_str(&format!("set {sign} {name}\n"));
            }
            ["shopt", "-s" | "-u", name]
                if name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') => {}
            [] => {}
            _ => {
                return Err(Error::CommandNotAllowed(format!(
                    "the session's saved options hold a line the server did not write: {line:?}"
                )));
            }
        }
    }
    Ok(kept)
}

async fn read_bounded(agent: &AgentClient, path: &str, limit: usize) -> Result<Option<String>> {
    let (_, mut stream) = match agent.read(path).await {
        Ok(opened) => opened,
        Err(Error::PathNotFound(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > limit {
            return Err(Error::Conflict(format!(
                "the session's file {path} is larger than {limit} bytes; start a new session"
            )));
        }
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The wrapper each session command runs in: restore, run, save on exit. Its inputs
/// come in the environment (`__RB_DIR`, `__RB_CMD`, `__RB_OWN`: the names of the
/// command's own `environment`, which win for this command and are not saved;
/// `__RB_STATE` and `__RB_OPTS`: the state as the server read and checked it, see
/// [`restore`]; `__RB_SKIP`: variables not to save).
const WRAPPER: &str = r#"__rb_dir=$__RB_DIR; __rb_cmd=$__RB_CMD; read -r -a __rb_own <<< "$__RB_OWN"
__rb_state=$__RB_STATE; __rb_opts=$__RB_OPTS; read -r -a __rb_skipped <<< "$__RB_SKIP"
unset __RB_DIR __RB_CMD __RB_OWN __RB_STATE __RB_OPTS __RB_SKIP
declare -A __rb_mine=() __rb_skip=()
for __rb_n in "${__rb_skipped[@]}"; do __rb_skip[$__rb_n]=1; done
for __rb_n in "${__rb_own[@]}"; do __rb_mine[$__rb_n]=${!__rb_n}; unset "$__rb_n"; done
eval "$__rb_state"
__rb_keep=()
for __rb_n in "${__rb_own[@]}"; do
  if declare -p "$__rb_n" >/dev/null 2>&1; then __rb_keep+=("$(declare -p "$__rb_n")"); fi
  export "$__rb_n=${__rb_mine[$__rb_n]}"
done
__rb_save() {
  { __rb_rc=$?; set +o > "$__rb_dir/options.tmp"; shopt -p >> "$__rb_dir/options.tmp"; set +euxv; } 2>/dev/null
  {
    for __rb_n in $(compgen -v); do
      case $__rb_n in
        __rb_*|BASH*|EUID|PPID|SHELLOPTS|UID|FUNCNAME|GROUPS|DIRSTACK|PIPESTATUS|LINENO|RANDOM|SECONDS|SRANDOM|EPOCHSECONDS|EPOCHREALTIME|HISTCMD|OPTIND|OPTARG|OPTERR|COMP_*|_|PWD|OLDPWD|SHLVL|IFS) continue ;;
      esac
      [[ -v __rb_mine[$__rb_n] || -v __rb_skip[$__rb_n] ]] && continue
      [[ ${!__rb_n@a} == *r* ]] && continue
      declare -p "$__rb_n"
    done
    (( ${#__rb_keep[@]} )) && printf '%s\n' "${__rb_keep[@]}"
    for __rb_n in $(compgen -A function); do
      [[ $__rb_n == __rb_* ]] || declare -f "$__rb_n"
    done
    alias -p
    printf 'cd -- %q || true\n' "$PWD"
  } > "$__rb_dir/state.tmp" 2>/dev/null
  printf '%s' "$PWD" > "$__rb_dir/cwd.tmp" 2>/dev/null
  mv -f "$__rb_dir/options.tmp" "$__rb_dir/options" 2>/dev/null
  mv -f "$__rb_dir/cwd.tmp" "$__rb_dir/cwd" 2>/dev/null
  mv -f "$__rb_dir/state.tmp" "$__rb_dir/state" 2>/dev/null
  exit $__rb_rc
}
trap __rb_save EXIT
shopt -s expand_aliases
eval "$__rb_opts" 2>/dev/null
shopt -s expand_aliases
eval "$__rb_cmd"
"#;

/// `command` as a command of session `id`: the wrapper, with the command, where to
/// start (`working_dir`, when the request names one) and its own environment.
pub fn command(
    id: &str,
    mut command: exec::Command,
    working_dir: Option<&str>,
    restore: Restore,
) -> exec::Command {
    let own: Vec<String> = command.env.iter().map(|(name, _)| name.clone()).collect();
    let user = match working_dir {
        Some(dir) => format!("cd -- {} && {{\n{}\n}}", quoted(dir), command.command),
        None => command.command,
    };
    command.env.extend([
        ("__RB_DIR".to_owned(), dir(id)),
        ("__RB_CMD".to_owned(), user),
        ("__RB_OWN".to_owned(), own.join(" ")),
        ("__RB_STATE".to_owned(), restore.state),
        ("__RB_OPTS".to_owned(), restore.options),
        ("__RB_SKIP".to_owned(), restore.skip),
    ]);
    command.command = WRAPPER.to_owned();
    command.working_dir = "/".to_owned();
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked_before_they_reach_a_path() {
        assert!(valid_id("sess-1"));
        assert!(valid_id("sess-42"));
        for bad in ["sess-", "sess-1/../x", "sess-a", "../sess-1", "sess-1 ", ""] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn saved_options_keep_set_lines_only_under_an_allow_list() {
        let saved = "set +o allexport\nset -o braceexpand\nset +o keyword\nset -o keyword\nshopt -s expand_aliases\n";
        assert_eq!(
            strict_options(saved).unwrap(),
            "set +o allexport\nset -o braceexpand\nset +o keyword\n"
        );
        for forged in [
            "touch /pwned",
            "set -o allexport; touch /x",
            "shopt -s extdebug; id",
        ] {
            assert!(strict_options(forged).is_err(), "{forged}");
        }
    }

    #[test]
    fn a_saved_state_passes_the_policy_and_a_forged_one_does_not() {
        let policy = crate::policy::CommandPolicy::new(&["ls".to_owned(), "cat".to_owned()]);
        let saved = "declare -- x=\"1 \\$(touch /y)\"\ndeclare -ax arr=([0]=\"a\" [1]=\"b\")\ndeclare -x HOME=\"/root\"\nf () \n{ \n    ls -la\n}\ncd -- /workspace || true\n";
        policy.check(saved).unwrap();
        for forged in [
            "declare -- x=1\ntouch /pwned\n",
            "declare -- x=\"$(touch /pwned)\"\n",
            "f () { touch /pwned; }\nf\n",
            "PROMPT_COMMAND='touch /pwned'\n",
        ] {
            assert!(policy.check(forged).is_err(), "{forged}");
        }
    }

    #[test]
    fn values_are_quoted_as_one_shell_word() {
        assert_eq!(quoted("it's"), r"'it'\''s'");
        assert_eq!(quoted("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
