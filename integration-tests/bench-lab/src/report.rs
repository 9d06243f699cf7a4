//! `switchyard-bench --report FILE`: writes the run into a markdown file,
//! between `<!-- bench:start -->` and `<!-- bench:end -->` (appended at the
//! end, under a heading, when the file has no markers; the rest of the file
//! is kept), with an SVG bar chart beside the file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::bench::{CONCURRENCY, MESSAGE, Outcome, RAW_QUINN_NOTE, Row, SPIN_RING_NOTE};

/// Opens the generated section.
pub(crate) const START: &str = "<!-- bench:start -->";
/// Closes the generated section.
pub(crate) const END: &str = "<!-- bench:end -->";
/// The heading put above the markers when they are first added.
const HEADING: &str = "## Latest `switchyard-bench` run";

/// Rewrites the section of `report` (created if missing) and writes the
/// chart next to it as `<stem>-bench.svg`; returns the chart's path.
pub(crate) fn write(report: &Path, outcome: &Outcome, command: &str) -> Result<PathBuf, String> {
    let stem = report
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("report");
    let svg_name = format!("{stem}-bench.svg");
    let svg_path = report.with_file_name(&svg_name);
    let doc = match std::fs::read_to_string(report) {
        Ok(doc) => doc,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(format!("reading {}: {err}", report.display())),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let body = section(
        outcome,
        command,
        &date_utc(now),
        &Machine::this(),
        &svg_name,
    );
    let doc = replace_section(&doc, &body).map_err(|err| format!("{}: {err}", report.display()))?;
    write_atomically(&svg_path, &svg(outcome))?;
    write_atomically(report, &doc)?;
    Ok(svg_path)
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp-switchyard");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|err| {
            let _ = std::fs::remove_file(&tmp);
            format!(
                "writing {}: {err}; does its directory exist and is it writable?",
                path.display()
            )
        })
}

/// `doc` with the text between the markers replaced by `body`; the markers
/// (under [`HEADING`]) are appended at the end if the file has none.
pub(crate) fn replace_section(doc: &str, body: &str) -> Result<String, String> {
    let body = body.trim_matches('\n');
    match (doc.find(START), doc.find(END)) {
        (Some(start), Some(end)) if start < end => {
            let before = &doc[..start + START.len()];
            let after = &doc[end..];
            Ok(format!("{before}\n{body}\n{after}"))
        }
        (None, None) => {
            let mut out = doc.trim_end_matches('\n').to_owned();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            let _ = write!(out, "{HEADING}\n\n{START}\n{body}\n{END}\n");
            Ok(out)
        }
        _ => Err(format!(
            "the markers are incomplete or out of order: put {START} before {END}, each on its \
             own line, or remove both to have them added at the end"
        )),
    }
}

/// Adds `markdown` to the section `write` wrote into `report`, at its end
/// (before [`END`]), after a blank line.
pub(crate) fn append(report: &Path, markdown: &str) -> Result<(), String> {
    let doc = std::fs::read_to_string(report)
        .map_err(|err| format!("reading {}: {err}", report.display()))?;
    let end = doc
        .find(END)
        .ok_or_else(|| format!("{} has no {END} marker", report.display()))?;
    let (before, after) = doc.split_at(end);
    let doc = format!("{}\n\n{markdown}{after}", before.trim_end());
    write_atomically(report, &doc)
}

/// A small table, printed as text or markdown.
pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Table {
    /// A header of these column names.
    pub(crate) fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    /// Each column's width: its widest cell.
    fn widths(&self) -> Vec<usize> {
        (0..self.header.len())
            .map(|i| {
                let cells = self.rows.iter().map(|row| row[i].chars().count());
                cells
                    .chain([self.header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Columns as wide as their widest cell, the first left-aligned.
    pub(crate) fn text(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i == 0 {
                    let _ = write!(line, "{cell:<width$}");
                } else {
                    let _ = write!(line, "  {cell:>width$}");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }

    /// A markdown table, one line a row.
    pub(crate) fn markdown(&self) -> String {
        let mut out = format!(
            "| {} |\n|{}\n",
            self.header.join(" | "),
            "---|".repeat(self.header.len())
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }

    /// The markdown table with its columns padded to line up, for a
    /// terminal (the same table to a markdown reader).
    pub(crate) fn markdown_aligned(&self) -> String {
        let widths = self.widths();
        let line = |row: &[String]| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, &width))| {
                    if i == 0 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, &width)| {
                if i == 0 {
                    "-".repeat(width + 2)
                } else {
                    format!("{}:", "-".repeat(width + 1))
                }
            })
            .collect();
        let mut out = line(&self.header);
        let _ = writeln!(out, "|{}|", rule.join("|"));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// The machine the run was on.
#[derive(Debug, Default)]
struct Machine {
    cpus: usize,
    model: String,
    kernel: String,
}

impl Machine {
    fn this() -> Self {
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|list| count_cpus(&list))
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(0);
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            cpus,
            model,
            kernel,
        }
    }

    fn describe(&self) -> String {
        let model = if self.model.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.model)
        };
        format!("{} CPUs online{model}, kernel {}", self.cpus, self.kernel)
    }
}

/// Counts the CPUs in a kernel CPU list such as `0-3,6,8-9`.
fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

fn section(outcome: &Outcome, command: &str, date: &str, machine: &Machine, svg: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run of {date} (UTC): `{command}` on {}; client and server {}.",
        machine.describe(),
        if outcome.pinned {
            "pinned to CPUs 0 and 1"
        } else {
            "not pinned"
        }
    );
    let _ = writeln!(out, "{}.", outcome.settings.describe());
    let _ = writeln!(
        out,
        "CPU µs/call is the CPU time client and server each spent per call, shown as \
         client+server (from /proc)."
    );
    if outcome.rows.iter().any(|row| row.transport == "shm") {
        let _ = writeln!(out, "The {SPIN_RING_NOTE}.");
    }
    if outcome.rows.iter().any(|row| row.transport == "quic") {
        let _ = writeln!(out, "The {RAW_QUINN_NOTE}.");
    }
    out.push('\n');
    out.push_str(&markdown_table(&outcome.rows));
    let skipped = crate::bench::skipped_text(&outcome.skipped);
    if !skipped.is_empty() {
        let _ = writeln!(out, "\nNot measured: {}.", skipped.join("; "));
    }
    let _ = writeln!(
        out,
        "\n![p50 of a {MESSAGE}-byte round trip per path, raw baseline beside switchyard]({svg})"
    );
    out
}

fn markdown_table(rows: &[Row]) -> String {
    let mut out = format!(
        "| path | p50 µs | p99 µs | calls/s ({CONCURRENCY} in flight) | p50 vs raw | p99 vs raw \
         | calls/s vs raw | CPU µs/call, 1 in flight | CPU µs/call, {CONCURRENCY} in flight |\n"
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        let f = &row.figures;
        let ratios = row
            .ratios()
            .map(|r| r.map(|x| format!("{x:.2}x")))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
            row.path,
            f.p50_us,
            f.p99_us,
            thousands(f.calls_per_s),
            ratios[0],
            ratios[1],
            ratios[2],
            f.cpu_one.text(),
            f.cpu_many.text()
        );
    }
    out
}

/// `613794.4` -> `613 794`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `YYYY-MM-DD` of a Unix time, UTC (Howard Hinnant's civil-from-days).
fn date_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A step of 1, 2, 2.5 or 5 times a power of ten giving about four grid
/// lines.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let rough = max / 4.0;
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power)
}

/// The least width of a transport's pair of bars, px.
const GROUP_WIDTH: f64 = 200.0;
const RAW_COLOUR: &str = "#9e9e9e";
const SWITCHYARD_COLOUR: &str = "#2b6cb0";

/// Grouped bars: per transport, p50 of the raw path beside switchyard's,
/// each labelled with its value (and switchyard's ratio to raw).
fn svg(outcome: &Outcome) -> String {
    let (left, right, top, bottom) = (64.0, 24.0, 64.0, 56.0);
    let mut groups: Vec<(&str, Vec<&Row>)> = Vec::new();
    for row in &outcome.rows {
        match groups.iter_mut().find(|(t, _)| *t == row.transport) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((row.transport, vec![row])),
        }
    }
    // Wide enough that the labels of neighbouring bars do not overlap.
    let width = f64::max(720.0, left + right + GROUP_WIDTH * groups.len() as f64);
    let height = 400.0;
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = outcome
        .rows
        .iter()
        .map(|r| r.figures.p50_us)
        .fold(0.0, f64::max);
    let step = tick_step(max * 1.15);
    let y_max = (max * 1.15 / step).ceil().max(1.0) * step;
    let y = |v: f64| top + plot_h - v / y_max * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="24" font-size="15" font-weight="bold">p50 of a {MESSAGE}-byte round trip, µs (lower is better)</text>"#
    );
    let pinned = if outcome.pinned {
        "pinned"
    } else {
        "not pinned"
    };
    let _ = writeln!(
        out,
        r##"<text x="{left}" y="42" fill="#555">one call at a time, {} iterations, client and server {pinned}</text>"##,
        outcome.settings.iterations
    );
    // Grid and y axis labels.
    let mut tick = 0.0;
    while tick <= y_max + step / 2.0 {
        let ty = y(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#e2e2e2"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{tick}</text>"#,
            left - 6.0,
            ty + 4.0
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="#333"/>"##,
        top + plot_h
    );
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#333"/>"##,
        top + plot_h,
        left + plot_w
    );
    // Bars.
    let group_w = plot_w / groups.len().max(1) as f64;
    for (g, (transport, rows)) in groups.iter().enumerate() {
        let bar_w = (group_w * 0.6 / rows.len().max(1) as f64).min(90.0);
        let group_x = left + group_w * g as f64;
        let first_x = group_x + (group_w - bar_w * rows.len() as f64) / 2.0;
        for (i, row) in rows.iter().enumerate() {
            let x = first_x + bar_w * i as f64;
            let v = row.figures.p50_us;
            let colour = if row.is_raw() {
                RAW_COLOUR
            } else {
                SWITCHYARD_COLOUR
            };
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {v:.1} µs</title></rect>"#,
                x + 2.0,
                y(v),
                bar_w - 4.0,
                (top + plot_h - y(v)).max(0.0),
                xml(&row.path)
            );
            let label = match row.ratios() {
                Some([p50, ..]) => format!("{v:.1} ({p50:.2}x)"),
                None => format!("{v:.1}"),
            };
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + bar_w / 2.0,
                y(v) - 6.0,
                xml(&label)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{}</text>"#,
            group_x + group_w / 2.0,
            top + plot_h + 22.0,
            xml(transport)
        );
    }
    // Legend.
    let legend_x = width - right - 250.0;
    for (i, (colour, name)) in [
        (RAW_COLOUR, "raw baseline"),
        (SWITCHYARD_COLOUR, "switchyard"),
    ]
    .into_iter()
    .enumerate()
    {
        let lx = legend_x + 130.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{colour}"/>"#,
            height - 22.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}">{name}</text>"#,
            lx + 18.0,
            height - 12.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Cpu, Figures, Settings};
    use switchyard::Transport;

    fn outcome() -> Outcome {
        let raw = Figures {
            p50_us: 63.8,
            p99_us: 104.0,
            calls_per_s: 613_794.4,
            cpu_one: Cpu {
                client_us: Some(5.0),
                server_us: Some(4.5),
            },
            cpu_many: Cpu::default(),
        };
        let ours = Figures {
            p50_us: 67.0,
            p99_us: 104.1,
            calls_per_s: 466_231.0,
            ..raw
        };
        Outcome {
            settings: Settings::quick(),
            pinned: true,
            rows: vec![
                Row {
                    path: "raw unix socket".into(),
                    transport: "unix",
                    figures: raw,
                    base: None,
                },
                Row {
                    path: "switchyard unix".into(),
                    transport: "unix",
                    figures: ours,
                    base: Some(raw),
                },
            ],
            skipped: vec![(Transport::Shm, "not implemented in this version")],
        }
    }

    #[test]
    fn markers_are_appended_when_missing_and_the_rest_is_kept() {
        let doc = "# Performance\n\nHand-written text.\n";
        let out = replace_section(doc, "first run\n").unwrap();
        assert_eq!(
            out,
            format!(
                "# Performance\n\nHand-written text.\n\n{HEADING}\n\n{START}\nfirst run\n{END}\n"
            )
        );
        assert_eq!(
            replace_section("", "x").unwrap(),
            format!("{HEADING}\n\n{START}\nx\n{END}\n")
        );
    }

    #[test]
    fn only_the_text_between_the_markers_is_replaced() {
        let doc = format!("intro\n{START}\nold\nlines\n{END}\nafter <!-- other -->\n");
        let once = replace_section(&doc, "new").unwrap();
        assert_eq!(
            once,
            format!("intro\n{START}\nnew\n{END}\nafter <!-- other -->\n")
        );
        let twice = replace_section(&once, "new").unwrap();
        assert_eq!(once, twice, "rewriting is idempotent");
    }

    #[test]
    fn incomplete_markers_are_an_error() {
        assert!(replace_section(&format!("a\n{START}\nb\n"), "x").is_err());
        assert!(replace_section(&format!("a\n{END}\nb\n"), "x").is_err());
        assert!(replace_section(&format!("{END}\n{START}\n"), "x").is_err());
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(date_utc(0), "1970-01-01");
        assert_eq!(date_utc(951_782_400), "2000-02-29");
        assert_eq!(date_utc(1_798_156_799), "2026-12-24");
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpus("0-1\n"), Some(2));
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn the_section_has_the_table_machine_and_chart() {
        let machine = Machine {
            cpus: 2,
            model: "Zen".into(),
            kernel: "6.18.0".into(),
        };
        let text = section(
            &outcome(),
            "switchyard bench --quick",
            "2026-11-24",
            &machine,
            "performance-bench.svg",
        );
        assert!(text.starts_with(
            "Run of 2026-11-24 (UTC): `switchyard bench --quick` on 2 CPUs online (Zen), kernel 6.18.0; client and server pinned to CPUs 0 and 1."
        ), "{text}");
        assert!(
            text.contains("| raw unix socket | 63.8 | 104.0 | 613 794 |  |  |  | 5.0+4.5 | ?+? |"),
            "{text}"
        );
        assert!(
            text.contains("| switchyard unix | 67.0 | 104.1 | 466 231 | 1.05x | 1.00x | 0.76x |"),
            "{text}"
        );
        assert!(text.contains("Not measured: shm (not implemented in this version)."));
        assert!(text.contains("](performance-bench.svg)"));
    }

    #[test]
    fn the_chart_has_a_labelled_bar_per_path() {
        let svg = svg(&outcome());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<title>").count(), 2);
        assert!(svg.contains(">63.8</text>"));
        assert!(svg.contains(">67.0 (1.05x)</text>"));
        assert!(svg.contains(">unix</text>"));
        assert!(svg.contains(RAW_COLOUR) && svg.contains(SWITCHYARD_COLOUR));
    }

    /// [`outcome`] with the shared-memory pair before the unix one, as the
    /// matrix orders them.
    fn outcome_with_shm() -> Outcome {
        let mut outcome = outcome();
        let ring = Figures {
            p50_us: 0.4,
            p99_us: 3.7,
            calls_per_s: 1_799_431.0,
            ..Figures::default()
        };
        let ours = Figures {
            p50_us: 68.0,
            p99_us: 136.2,
            calls_per_s: 136_796.0,
            ..Figures::default()
        };
        let shm = [
            Row {
                path: "raw spin ring".into(),
                transport: "shm",
                figures: ring,
                base: None,
            },
            Row {
                path: "switchyard shm".into(),
                transport: "shm",
                figures: ours,
                base: Some(ring),
            },
        ];
        outcome.rows.splice(0..0, shm);
        outcome.skipped.clear();
        outcome
    }

    #[test]
    fn the_shm_pair_is_in_the_table_and_the_chart() {
        let text = section(
            &outcome_with_shm(),
            "switchyard bench --quick",
            "2026-11-24",
            &Machine::default(),
            "performance-bench.svg",
        );
        assert!(
            text.contains("The raw spin ring: two shared-memory rings"),
            "{text}"
        );
        let ring = text.find("| raw spin ring | 0.4 | 3.7 | 1 799 431 |  |  |  |");
        let ours =
            text.find("| switchyard shm | 68.0 | 136.2 | 136 796 | 170.00x | 36.81x | 0.08x |");
        let unix = text.find("| raw unix socket |");
        assert!(ring.is_some() && ours.is_some(), "{text}");
        assert!(ring < ours && ours < unix, "{text}");
        let chart = svg(&outcome_with_shm());
        assert_eq!(chart.matches("<title>").count(), 4);
        assert!(chart.contains(">shm</text>") && chart.contains(">unix</text>"));
        assert!(chart.contains(">0.4</text>"));
        assert!(chart.contains(">68.0 (170.00x)</text>"));
        // Two groups fit the narrowest chart; each further one widens it.
        assert!(chart.contains(r#"width="720""#), "{chart}");
        let mut more = outcome_with_shm();
        for transport in ["tcp", "pipe"] {
            more.rows.push(Row {
                transport,
                ..more.rows[0].clone()
            });
        }
        assert!(svg(&more).contains(r#"width="888""#));
    }

    #[test]
    fn a_quic_pair_says_what_raw_quinn_is() {
        let mut run = outcome();
        let text = |run: &Outcome| section(run, "b", "2026-11-24", &Machine::default(), "c.svg");
        assert!(!text(&run).contains("raw quinn"));
        for row in &mut run.rows {
            row.transport = "quic";
        }
        assert!(text(&run).contains("The raw quinn: plain quinn"));
    }

    #[test]
    fn small_tables_print_as_aligned_markdown_and_go_to_the_end_of_the_section() {
        let table = Table {
            header: Table::header(&["path", "calls/s"]),
            rows: vec![vec!["tcp on".to_owned(), "1234".to_owned()]],
        };
        assert_eq!(
            table.markdown_aligned(),
            "| path   | calls/s |\n|--------|--------:|\n| tcp on |    1234 |\n"
        );
        assert_eq!(
            table.markdown(),
            "| path | calls/s |\n|---|---|\n| tcp on | 1234 |\n"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("perf.md");
        let doc = format!("# Perf\n\n{}\nmatrix\n{}\nafter\n", START, END);
        std::fs::write(&path, doc).expect("writable");
        append(&path, &table.markdown()).expect("appended");
        let text = std::fs::read_to_string(&path).expect("readable");
        assert!(
            text.ends_with("matrix\n\n| path | calls/s |\n|---|---|\n| tcp on | 1234 |\n<!-- bench:end -->\nafter\n"),
            "{text}"
        );
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(80.0), 20.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(85.0), 25.0);
        assert_eq!(tick_step(0.0), 1.0);
        assert_eq!(thousands(613_794.4), "613 794");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1 000");
    }
}
