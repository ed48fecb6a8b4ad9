//! Samples, figures and the report: the terminal table and `target/bench/latest.json`.
//!
//! A figure is one row: repobox's value, the floor's (the same work done directly
//! against the Docker Engine API), their ratio, and the target when it has
//! one. Targets are printed, never enforced: the benchmark exits 0 whatever the
//! numbers say.

use std::fmt::Write as _;

use serde::Serialize;

/// Measurements of one quantity (milliseconds, unless a row says otherwise).
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples(Vec<f64>);

impl Samples {
    /// No samples yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds one.
    pub(crate) fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    /// The samples, in the order they were taken.
    pub(crate) fn values(&self) -> &[f64] {
        &self.0
    }

    /// How many.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile by nearest rank (p50 is the median; with an even count,
    /// the lower middle sample).
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// The median.
    pub(crate) fn p50(&self) -> f64 {
        self.percentile(50.0)
    }

    /// The largest.
    pub(crate) fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// What a figure should be, per the issue.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub(crate) enum Target {
    /// repobox ÷ floor at most this (latencies: lower is better).
    RatioAtMost(f64),
    /// repobox ÷ floor at least this (throughputs: higher is better).
    RatioAtLeast(f64),
    /// repobox's own value at most this (memory).
    AtMost(f64),
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtMost(ratio) => format!("<= {ratio:.2}x floor"),
            Target::RatioAtLeast(ratio) => format!(">= {ratio:.2}x floor"),
            Target::AtMost(value) => format!("<= {value} {unit}"),
        }
    }

    fn met(self, repobox: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::RatioAtMost(limit) => ratio.map(|ratio| ratio <= limit),
            Target::RatioAtLeast(limit) => ratio.map(|ratio| ratio >= limit),
            Target::AtMost(limit) => Some(repobox <= limit),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// Figure number and what is measured, e.g. `1 exec true, p50`.
    pub figure: String,
    /// Unit of `repobox` and `floor`.
    pub unit: &'static str,
    /// Samples on each side (runs, for throughputs).
    pub n: usize,
    /// repobox's value.
    pub repobox: Option<f64>,
    /// The floor's value, when the figure has one.
    pub floor: Option<f64>,
    /// repobox ÷ floor.
    pub ratio: Option<f64>,
    /// The target, in words.
    pub target: Option<String>,
    /// The target as data.
    pub target_spec: Option<Target>,
    /// Whether the target is met (`None`: no target, or nothing measured).
    pub met: Option<bool>,
    /// Every sample, in the order taken (on the p50 row of a latency figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<Raw>,
}

/// The samples behind a row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Raw {
    /// repobox's.
    pub repobox: Vec<f64>,
    /// The floor's.
    pub floor: Vec<f64>,
}

impl Row {
    /// A row comparing repobox with the floor.
    pub(crate) fn new(
        figure: impl Into<String>,
        unit: &'static str,
        n: usize,
        repobox: f64,
        floor: Option<f64>,
        target: Option<Target>,
    ) -> Self {
        let ratio = floor
            .filter(|floor| *floor > 0.0)
            .map(|floor| repobox / floor);
        Self {
            figure: figure.into(),
            unit,
            n,
            repobox: Some(repobox).filter(|value| value.is_finite()),
            floor,
            ratio,
            target: target.map(|target| target.describe(unit)),
            target_spec: target,
            met: target.and_then(|target| target.met(repobox, ratio)),
            samples: None,
        }
    }

    /// A row for a figure that could not be measured (e.g. an endpoint missing).
    pub(crate) fn missing(
        figure: impl Into<String>,
        unit: &'static str,
        target: Option<Target>,
    ) -> Self {
        Self {
            figure: figure.into(),
            unit,
            n: 0,
            repobox: None,
            floor: None,
            ratio: None,
            target: target.map(|target| target.describe(unit)),
            target_spec: target,
            met: None,
            samples: None,
        }
    }
}

/// Rows for latency samples: p50 (with the target), and p90/p99 when there are
/// enough samples for them to mean something.
pub(crate) fn latency_rows(
    figure: &str,
    repobox: &Samples,
    floor: &Samples,
    target: Option<Target>,
) -> Vec<Row> {
    let n = repobox.len().min(floor.len());
    let mut first = Row::new(
        format!("{figure}, p50"),
        "ms",
        n,
        repobox.p50(),
        Some(floor.p50()),
        target,
    );
    first.samples = Some(Raw {
        repobox: repobox.values().to_vec(),
        floor: floor.values().to_vec(),
    });
    let mut rows = vec![first];
    if n >= 10 {
        rows.push(Row::new(
            format!("{figure}, p90"),
            "ms",
            n,
            repobox.percentile(90.0),
            Some(floor.percentile(90.0)),
            None,
        ));
    }
    if n >= 100 {
        rows.push(Row::new(
            format!("{figure}, p99"),
            "ms",
            n,
            repobox.percentile(99.0),
            Some(floor.percentile(99.0)),
            None,
        ));
    }
    rows
}

/// A titled group of rows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Section {
    /// Heading.
    pub title: String,
    /// Its rows.
    pub rows: Vec<Row>,
}

/// Everything one run found.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    /// Sections, in the order they are printed.
    pub sections: Vec<Section>,
    /// Observations worth keeping beside the numbers (breakdowns, errors, drift).
    pub notes: Vec<String>,
}

impl Report {
    /// Adds rows to the section `title` (created on first use).
    pub(crate) fn add(&mut self, title: &str, rows: impl IntoIterator<Item = Row>) {
        let rows: Vec<Row> = rows.into_iter().collect();
        for row in &rows {
            eprintln!("  {}", format_row_inline(row));
        }
        match self.sections.iter_mut().find(|s| s.title == title) {
            Some(section) => section.rows.extend(rows),
            None => self.sections.push(Section {
                title: title.to_owned(),
                rows,
            }),
        }
    }

    /// Records a note (also shown at once on stderr).
    pub(crate) fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    /// The table as text.
    pub(crate) fn render(&self) -> String {
        let header = ["figure", "repobox", "floor", "ratio", "target", "met"];
        let mut out = String::new();
        for section in &self.sections {
            let cells: Vec<[String; 6]> = section.rows.iter().map(cells).collect();
            let mut widths = header.map(str::len);
            for row in &cells {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            let _ = writeln!(out, "\n{}", section.title);
            let line = |out: &mut String, row: &[String; 6]| {
                let mut text = String::new();
                for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                    let pad = width - cell.chars().count();
                    // The figure and target columns read left to right; numbers align right.
                    if i == 0 || i == 4 {
                        let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
                    } else {
                        let _ = write!(text, "{}{cell}  ", " ".repeat(pad));
                    }
                }
                let _ = writeln!(out, "{}", text.trim_end());
            };
            line(&mut out, &header.map(str::to_owned));
            let rule = widths.map(|width| "-".repeat(width));
            line(&mut out, &rule);
            for row in &cells {
                line(&mut out, row);
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nNotes");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

/// A value with its unit, at a precision that suits it.
pub(crate) fn value(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "n/a".to_owned(),
        Some(value) if value >= 1000.0 => format!("{value:.0} {unit}"),
        Some(value) if value >= 100.0 => format!("{value:.1} {unit}"),
        Some(value) => format!("{value:.2} {unit}"),
    }
}

fn cells(row: &Row) -> [String; 6] {
    [
        format!("{} (n={})", row.figure, row.n),
        value(row.repobox, row.unit),
        row.floor
            .map_or_else(|| "-".to_owned(), |floor| value(Some(floor), row.unit)),
        row.ratio
            .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}x")),
        row.target.clone().unwrap_or_else(|| "-".to_owned()),
        match row.met {
            Some(true) => "yes".to_owned(),
            Some(false) => "NO".to_owned(),
            None => "-".to_owned(),
        },
    ]
}

fn format_row_inline(row: &Row) -> String {
    let [figure, repobox, floor, ratio, target, met] = cells(row);
    format!("{figure}: repobox {repobox}, floor {floor}, ratio {ratio}, target {target}: {met}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples = Samples::new();
        for value in 1..=100 {
            samples.push(f64::from(value));
        }
        assert_eq!(samples.p50(), 50.0);
        assert_eq!(samples.percentile(90.0), 90.0);
        assert_eq!(samples.percentile(99.0), 99.0);
        assert_eq!(samples.percentile(100.0), 100.0);
    }

    #[test]
    fn targets_are_judged_on_the_ratio() {
        let row = Row::new(
            "x",
            "ms",
            1,
            11.0,
            Some(10.0),
            Some(Target::RatioAtMost(1.15)),
        );
        assert_eq!(row.met, Some(true));
        let row = Row::new(
            "x",
            "ops/s",
            1,
            8.0,
            Some(10.0),
            Some(Target::RatioAtLeast(0.85)),
        );
        assert_eq!(row.met, Some(false));
        let row = Row::new("x", "MiB", 1, 29.0, None, Some(Target::AtMost(30.0)));
        assert_eq!(row.met, Some(true));
    }
}
