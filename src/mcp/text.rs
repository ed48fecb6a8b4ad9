//! What the tools answer: short plain text an LLM reads well, every cut said in words.
//! Pure functions of the API's JSON, tested here.

use std::fmt::Write as _;

use serde_json::Value;

/// Where a sandbox's checkout is, and what relative paths are taken against.
pub const WORKSPACE: &str = "/workspace";
/// Of a command's stdout or stderr, the first this many bytes are kept…
const STREAM_HEAD_BYTES: usize = 12 * 1024;
/// …and the last this many (the end of a build log is where its error is).
const STREAM_TAIL_BYTES: usize = 20 * 1024;
/// A longer line of a file or a search match is cut here.
pub const MAX_LINE_CHARS: usize = 2000;
/// What `read_file` answers at most, in characters, whatever `limit_lines` says.
pub const MAX_READ_CHARS: usize = 100_000;

/// `path` as an absolute path in the sandbox: relative ones are under `/workspace`.
pub fn absolute(path: &str) -> String {
    let path = path.trim();
    if path.starts_with('/') {
        path.to_owned()
    } else {
        let rest = path.trim_start_matches("./");
        if rest.is_empty() || rest == "." {
            WORKSPACE.to_owned()
        } else {
            format!("{WORKSPACE}/{rest}")
        }
    }
}

/// `segment` percent-encoded for one path segment of a URL (a sandbox id is the
/// caller's text: a `/` or `?` in it must not change which route is called).
pub fn segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `n` and the noun, singular for one (`1 entry`, `2 entries`).
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", noun(n, one, many))
}

/// The noun for `n` of it.
fn noun<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// A string field of `value`, or `default`.
fn str_or<'a>(value: &'a Value, name: &str, default: &'a str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or(default)
}

/// A created sandbox (a ContainerResponse).
pub fn created(sandbox: &Value) -> String {
    let mut out = format!(
        "Created sandbox {} ({}).\n",
        str_or(sandbox, "container_id", "?"),
        str_or(sandbox, "status", "?")
    );
    let _ = writeln!(
        out,
        "container_id: {}",
        str_or(sandbox, "container_id", "?")
    );
    let _ = writeln!(out, "repository: {}", str_or(sandbox, "repo_url", "?"));
    let _ = writeln!(out, "branch: {}", str_or(sandbox, "branch", "(detached)"));
    let _ = writeln!(out, "commit: {}", str_or(sandbox, "resolved_commit", "?"));
    let _ = writeln!(
        out,
        "checkout: {} (the working directory of run_command; relative paths of the file tools are taken from it)",
        str_or(sandbox, "working_directory", WORKSPACE)
    );
    let _ = write!(
        out,
        "expires: {}",
        str_or(
            sandbox,
            "expires_at",
            "never (destroy it with destroy_sandbox when done)"
        )
    );
    out
}

/// `GET /containers`.
pub fn sandboxes(listing: &Value) -> String {
    let empty = Vec::new();
    let items = listing
        .get("containers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if items.is_empty() {
        return "No sandboxes. Create one with create_sandbox.".to_owned();
    }
    let active = listing
        .get("active_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut out = format!(
        "{} ({active} running):\n",
        count(items.len(), "sandbox", "sandboxes")
    );
    for sandbox in items {
        let commit = str_or(sandbox, "resolved_commit", "");
        let _ = write!(
            out,
            "- {} {} {} branch {} commit {}",
            str_or(sandbox, "container_id", "?"),
            str_or(sandbox, "status", "?"),
            str_or(sandbox, "repo_url", "?"),
            str_or(sandbox, "branch", "(detached)"),
            commit.get(..12).unwrap_or(commit),
        );
        if let Some(reason) = sandbox.get("status_reason").and_then(Value::as_str) {
            let _ = write!(out, " ({reason})");
        }
        match sandbox.get("expires_at").and_then(Value::as_str) {
            Some(at) => {
                let _ = writeln!(out, ", expires {at}");
            }
            None => out.push_str(", no expiry\n"),
        }
    }
    out.pop();
    out
}

/// An ExecResult.
pub fn exec_result(result: &Value) -> String {
    let code = result.get("exit_code").and_then(Value::as_i64);
    let code = code.map_or_else(|| "none".to_owned(), |code| code.to_string());
    let secs = result
        .get("execution_time_secs")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let mut out = if result.get("timed_out").and_then(Value::as_bool) == Some(true) {
        format!(
            "Timed out after {secs:.1} s: the command and everything it started were killed (exit code {code}).\n"
        )
    } else {
        format!("exit code: {code} ({secs:.2} s)\n")
    };
    for stream in ["stdout", "stderr"] {
        let text = str_or(result, stream, "");
        let cut_by_server = result
            .get(format!("{stream}_truncated"))
            .and_then(Value::as_bool)
            == Some(true);
        if text.is_empty() {
            let _ = writeln!(out, "{stream}: (empty)");
            continue;
        }
        let (shown, cut) = clip(text, STREAM_HEAD_BYTES, STREAM_TAIL_BYTES);
        let mut notes = Vec::new();
        if cut > 0 {
            notes.push(format!(
                "{cut} bytes cut from the middle of {} here",
                text.len()
            ));
        }
        if cut_by_server {
            notes.push("the server kept only the first MAX_OUTPUT_BYTES of it".to_owned());
        }
        if notes.is_empty() {
            let _ = writeln!(out, "{stream}:");
        } else {
            let _ = writeln!(out, "{stream} (truncated: {}):", notes.join("; "));
        }
        out.push_str(&shown);
        if !shown.ends_with('\n') {
            out.push_str("\n[no newline at the end]\n");
        }
    }
    out.pop();
    out
}

/// `text` with its middle cut out when it is longer than `head + tail` bytes (at
/// character boundaries), and how many bytes were cut.
pub fn clip(text: &str, head: usize, tail: usize) -> (String, usize) {
    if text.len() <= head + tail {
        return (text.to_owned(), 0);
    }
    let head_end = floor_boundary(text, head);
    let tail_start = ceil_boundary(text, text.len() - tail);
    let cut = tail_start - head_end;
    let shown = format!(
        "{}\n[… {cut} bytes cut …]\n{}",
        &text[..head_end],
        &text[tail_start..]
    );
    (shown, cut)
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// `line` cut at [`MAX_LINE_CHARS`] characters, saying how much more there was.
fn cut_line(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE_CHARS) {
        None => line.to_owned(),
        Some((at, _)) => format!(
            "{}… [line cut: {} more characters]",
            &line[..at],
            line[at..].chars().count()
        ),
    }
}

/// Lines `offset..offset + limit` (1-based) of a text file, numbered as `cat -n` does,
/// with a header saying which lines of how many; `None` when `offset` is past the end.
pub fn numbered_lines(path: &str, content: &str, offset: usize, limit: usize) -> Option<String> {
    let total = content.lines().count();
    if total == 0 {
        return (offset == 1).then(|| format!("{path}: empty file (0 lines)"));
    }
    if offset > total {
        return None;
    }
    let mut body = String::new();
    let mut last = offset - 1;
    let mut budget_hit = false;
    for (index, line) in content.lines().enumerate().skip(offset - 1).take(limit) {
        let entry = format!("{:>6}\t{}\n", index + 1, cut_line(line));
        if !body.is_empty() && body.len() + entry.len() > MAX_READ_CHARS {
            budget_hit = true;
            break;
        }
        body.push_str(&entry);
        last = index + 1;
    }
    let mut out = format!("{path}: lines {offset}-{last} of {total}\n{body}");
    if last < total {
        let why = if budget_hit {
            format!("stopped to stay under {MAX_READ_CHARS} characters")
        } else {
            format!("limit_lines was {limit}")
        };
        let _ = write!(
            out,
            "[{} more {} ({why}); read on with offset_line={}]",
            total - last,
            noun(total - last, "line", "lines"),
            last + 1
        );
    } else {
        out.pop();
    }
    Some(out)
}

/// `GET /browse`, at most `max` entries.
pub fn directory(listing: &Value, max: usize) -> String {
    let empty = Vec::new();
    let path = str_or(listing, "path", "?");
    let items = listing
        .get("items")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if items.is_empty() {
        return format!("{path}: empty directory");
    }
    let mut out = format!("{path}: {}\n", count(items.len(), "entry", "entries"));
    for item in items.iter().take(max) {
        let name = str_or(item, "name", "?");
        match str_or(item, "type", "?") {
            "directory" => {
                let _ = writeln!(out, "dir  {name}/");
            }
            "symlink" => {
                let _ = writeln!(
                    out,
                    "link {name} -> {}",
                    str_or(item, "symlink_target", "?")
                );
            }
            kind => {
                let size = item.get("size").and_then(Value::as_u64).unwrap_or(0);
                let kind = if kind == "file" { "file" } else { kind };
                let _ = writeln!(out, "{kind} {name} ({size} bytes)");
            }
        }
    }
    if items.len() > max {
        let _ = write!(
            out,
            "[truncated: {} more {} not shown; showing the first {max} by name (raise max_entries, or list a subdirectory)]",
            items.len() - max,
            noun(items.len() - max, "entry", "entries")
        );
    } else {
        out.pop();
    }
    out
}

/// The matches of `search_files` (grep's `path:line:text` lines, `limit + 1` asked for
/// so that one more than `limit` says there are more).
pub fn matches(pattern: &str, under: &str, stdout: &str, limit: usize) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    if lines.is_empty() {
        return format!("No matches for {pattern:?} under {under}.");
    }
    let shown = lines.len().min(limit);
    let mut out = if lines.len() > limit {
        format!(
            "More than {limit} matching lines for {pattern:?} under {under}; the first {limit} (truncated: narrow the pattern or the path for the rest):\n"
        )
    } else {
        format!(
            "{} for {pattern:?} under {under}:\n",
            count(shown, "matching line", "matching lines")
        )
    };
    for line in &lines[..shown] {
        out.push_str(&cut_line(line));
        out.push('\n');
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relative_paths_are_under_the_workspace() {
        assert_eq!(absolute("/etc/hosts"), "/etc/hosts");
        assert_eq!(absolute("src/main.rs"), "/workspace/src/main.rs");
        assert_eq!(absolute("./a"), "/workspace/a");
        assert_eq!(absolute("."), "/workspace");
        assert_eq!(absolute(""), "/workspace");
    }

    #[test]
    fn ids_cannot_leave_their_path_segment() {
        assert_eq!(segment("repo-container-1-0"), "repo-container-1-0");
        assert_eq!(segment("../x?y=1 z"), "..%2Fx%3Fy%3D1%20z");
    }

    #[test]
    fn long_output_keeps_its_head_and_tail() {
        assert_eq!(clip("short", 3, 2), ("short".to_owned(), 0));
        let (shown, cut) = clip("aaaaXXXXXXbbbb", 4, 4);
        assert_eq!(cut, 6);
        assert_eq!(shown, "aaaa\n[… 6 bytes cut …]\nbbbb");
        // Never inside a character.
        let (shown, cut) = clip("ééééé", 3, 3);
        assert_eq!(shown, "é\n[… 6 bytes cut …]\né");
        assert_eq!(cut, 6);
    }

    #[test]
    fn exec_results_say_code_streams_and_cuts() {
        let text = exec_result(&json!({
            "exit_code": 3, "stdout": "out\n", "stderr": "", "execution_time_secs": 0.012,
            "timed_out": false, "stdout_truncated": false, "stderr_truncated": false
        }));
        assert_eq!(text, "exit code: 3 (0.01 s)\nstdout:\nout\nstderr: (empty)");
        let text = exec_result(&json!({
            "exit_code": 124, "stdout": "partial", "stderr": "x\n", "execution_time_secs": 1.0,
            "timed_out": true, "stdout_truncated": false, "stderr_truncated": true
        }));
        assert!(text.starts_with("Timed out after 1.0 s"), "{text}");
        assert!(text.contains("exit code 124"), "{text}");
        assert!(text.contains("partial\n[no newline at the end]"), "{text}");
        assert!(
            text.contains("stderr (truncated: the server kept only"),
            "{text}"
        );
        let long = "y".repeat(100_000);
        let text = exec_result(&json!({"exit_code": 0, "stdout": long, "stderr": ""}));
        assert!(
            text.contains("stdout (truncated: 67232 bytes cut from the middle of 100000 here)"),
            "{text}"
        );
        assert!(text.len() < 40_000);
    }

    #[test]
    fn files_are_numbered_and_paged() {
        let content = "one\ntwo\nthree\n";
        assert_eq!(
            numbered_lines("/f", content, 1, 10).unwrap(),
            "/f: lines 1-3 of 3\n     1\tone\n     2\ttwo\n     3\tthree"
        );
        assert_eq!(
            numbered_lines("/f", content, 2, 1).unwrap(),
            "/f: lines 2-2 of 3\n     2\ttwo\n[1 more line (limit_lines was 1); read on with offset_line=3]"
        );
        assert!(numbered_lines("/f", content, 4, 1).is_none());
        assert_eq!(
            numbered_lines("/f", "", 1, 10).unwrap(),
            "/f: empty file (0 lines)"
        );
        let wide = "z".repeat(MAX_LINE_CHARS + 5);
        let text = numbered_lines("/f", &wide, 1, 1).unwrap();
        assert!(text.ends_with("… [line cut: 5 more characters]"), "{text}");
        let many = "0123456789\n".repeat(20_000);
        let text = numbered_lines("/f", &many, 1, 20_000).unwrap();
        assert!(text.len() <= MAX_READ_CHARS + 200, "{}", text.len());
        assert!(
            text.contains("stopped to stay under"),
            "{}",
            &text[text.len() - 200..]
        );
    }

    #[test]
    fn listings_are_bounded() {
        let listing = json!({"path": "/w", "items": [
            {"name": "a", "type": "directory", "size": null},
            {"name": "b.txt", "type": "file", "size": 3},
            {"name": "c", "type": "symlink", "symlink_target": "b.txt"},
        ], "total_items": 3});
        assert_eq!(
            directory(&listing, 10),
            "/w: 3 entries\ndir  a/\nfile b.txt (3 bytes)\nlink c -> b.txt"
        );
        assert_eq!(
            directory(&listing, 1),
            "/w: 3 entries\ndir  a/\n[truncated: 2 more entries not shown; showing the first 1 by name (raise max_entries, or list a subdirectory)]"
        );
    }

    #[test]
    fn matches_say_when_there_are_more() {
        assert_eq!(matches("x", "/w", "", 2), "No matches for \"x\" under /w.");
        assert_eq!(
            matches("x", "/w", "/w/a:1:x\n/w/b:2:x\n", 2),
            "2 matching lines for \"x\" under /w:\n/w/a:1:x\n/w/b:2:x"
        );
        let text = matches("x", "/w", "/w/a:1:x\n/w/b:2:x\n/w/c:3:x\n", 2);
        assert!(text.starts_with("More than 2 matching lines"), "{text}");
        assert!(text.ends_with("/w/b:2:x"), "{text}");
    }

    #[test]
    fn sandbox_listings_have_one_line_each() {
        assert_eq!(
            sandboxes(&json!({"containers": [], "total_count": 0, "active_count": 0})),
            "No sandboxes. Create one with create_sandbox."
        );
        let text = sandboxes(&json!({"containers": [{
            "container_id": "repo-container-1-0", "status": "running", "repo_url": "http://g/r",
            "branch": "main", "resolved_commit": "0123456789abcdef0123", "expires_at": null
        }], "total_count": 1, "active_count": 1}));
        assert_eq!(
            text,
            "1 sandbox (1 running):\n- repo-container-1-0 running http://g/r branch main commit 0123456789ab, no expiry"
        );
    }
}
