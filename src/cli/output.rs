//! What client commands print: the server's JSON (`--json`), aligned tables, and a
//! spinner or progress bar on stderr (only when stderr is a terminal).

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    outln(text);
}

/// Prints `text` on stdout. Unlike `print!`, a closed stdout (`repobox ls | head -1`)
/// is no panic: what does not fit is dropped.
pub fn out(text: impl std::fmt::Display) {
    let _ = write!(std::io::stdout().lock(), "{text}");
}

/// [`out`] and a newline.
pub fn outln(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Rows as columns padded to their widest cell (the last column unpadded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|&h| h.to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// A string field of `value`, or `-` when absent or null.
pub fn field(value: &Value, name: &str) -> String {
    match value.get(name) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// The first 12 characters of a commit, or `-`.
pub fn short_commit(value: &Value, name: &str) -> String {
    let commit = field(value, name);
    commit.chars().take(12).collect()
}

/// A timestamp field to the second, in UTC (`2024-01-31 12:00:00`), or `-`.
pub fn short_time(value: &Value, name: &str) -> String {
    let text = field(value, name);
    chrono::DateTime::parse_from_rfc3339(&text).map_or(text, |time| {
        time.with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
}

/// Writes `bytes` to stdout or stderr at once (output is live, not line-buffered).
pub fn write_now(stderr: bool, bytes: &[u8]) -> std::io::Result<()> {
    if stderr {
        let mut err = std::io::stderr().lock();
        err.write_all(bytes)?;
        err.flush()
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }
}

/// A spinner with `message` on stderr while something is under way; hidden when
/// stderr is not a terminal (scripts see only the answer).
pub fn spinner(message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A bar of `total` steps on stderr; hidden when stderr is not a terminal.
pub fn progress(total: u64, message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_message(message.to_owned());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a-long-id".to_owned(), "running".to_owned(), "x".to_owned()],
            vec!["b".to_owned(), "ü".to_owned(), "yy".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "STATUS", "REPO"], &rows),
            "ID         STATUS   REPO\na-long-id  running  x\nb          ü        yy\n"
        );
    }

    #[test]
    fn fields_print_plainly() {
        let value = json!({"s": "text", "n": 3, "null": null, "c": "0123456789abcdef"});
        assert_eq!(field(&value, "s"), "text");
        assert_eq!(field(&value, "n"), "3");
        assert_eq!(field(&value, "null"), "-");
        assert_eq!(field(&value, "missing"), "-");
        assert_eq!(short_commit(&value, "c"), "0123456789ab");
        let times = json!({"t": "2023-12-21T10:30:56.123456Z", "none": null});
        assert_eq!(short_time(&times, "t"), "2023-12-21 10:30:56");
        assert_eq!(short_time(&times, "none"), "-");
    }
}
