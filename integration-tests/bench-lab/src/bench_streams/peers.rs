//! The peers in the same run: tonic streaming over TCP (its best case, an
//! always-ready stream, and the `mpsc` channel pattern of its examples)
//! and iceoryx2 publish-subscribe, measured by the standalone
//! `integration-tests/bench-peers` binary (its own cargo project: tonic
//! and iceoryx2 stay out of the workspace), which this module runs and
//! reads (`--json`: one object per measurement per line).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{Direction, Line, SMALL};

/// Where the peers' binary is: `SWITCHYARD_BENCH_PEERS`, else its release
/// build in its own project.
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("SWITCHYARD_BENCH_PEERS").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../bench-peers/target/release/bench-peers")
        },
        PathBuf::from,
    )
}

/// One peer measurement.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PeerRate {
    peer: String,
    pattern: String,
    direction: String,
    size: u64,
    messages_per_s: f64,
    gb_per_s: f64,
}

impl PeerRate {
    fn value(&self) -> f64 {
        if self.size == SMALL as u64 {
            self.messages_per_s
        } else {
            self.gb_per_s
        }
    }
}

/// The JSON objects of the peers' `--json` output, one per line (the
/// other lines are skipped).
pub(crate) fn json_lines(stdout: &str) -> Result<Vec<serde_json::Value>, String> {
    stdout
        .lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .map(|line| serde_json::from_str(line).map_err(|e| format!("peers' line {line:?}: {e}")))
        .collect()
}

/// Parses the peers' `--json` output.
fn parse(stdout: &str) -> Result<Vec<PeerRate>, String> {
    Ok(json_lines(stdout)?
        .into_iter()
        .map(|value| {
            let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
            let number = |key: &str| value[key].as_f64().unwrap_or(0.0);
            PeerRate {
                peer: text("peer"),
                pattern: text("pattern"),
                direction: text("direction"),
                size: value["size"].as_u64().unwrap_or(0),
                messages_per_s: number("messages_per_s"),
                gb_per_s: number("gb_per_s"),
            }
        })
        .collect())
}

/// Runs the peers' binary with `args`, `--json` and (when `quick`)
/// `--quick`, and returns its standard output; `Ok(None)`, saying why and
/// how to build it, when it is not built.
pub(crate) fn run_binary(args: &[&str], quick: bool) -> Result<Option<String>, String> {
    let binary = binary();
    if !binary.is_file() {
        println!(
            "peers: not built, so no tonic or iceoryx2 figures this run; build them once with \
             integration-tests/bench-peers/run.sh --quick (or set SWITCHYARD_BENCH_PEERS)"
        );
        return Ok(None);
    }
    // The peers pin their own sides; this process is pinned to one CPU,
    // which its children would inherit.
    crate::bench::unpin();
    let mut command = Command::new(&binary);
    command
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if quick {
        command.arg("--quick");
    }
    let output = command
        .output()
        .map_err(|e| format!("running {}: {e}", binary.display()));
    crate::bench::pin(0);
    let output = output?;
    if !output.status.success() {
        return Err(format!(
            "the peers' bench ({} {}) failed: {}",
            binary.display(),
            args.join(" "),
            output.status
        ));
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// Runs the peers' streams (quick or full); `Ok(None)` when they are not
/// built.
pub(super) fn run(quick: bool) -> Result<Option<Vec<PeerRate>>, String> {
    run_binary(&[], quick)?.map(|out| parse(&out)).transpose()
}

/// The peers' rates, and ours beside them as ratios: over unix, tcp and
/// shm against tonic over TCP (both patterns, same direction and size),
/// and shm against iceoryx2 publish-subscribe.
pub(super) fn text(lines: &[Line], peers: &[PeerRate]) -> String {
    let mut out = String::from("\npeers in the same run (bench-peers):\n");
    for p in peers {
        let unit = if p.size == SMALL as u64 {
            "msgs/s"
        } else {
            "GB/s"
        };
        let _ = writeln!(
            out,
            "  {:<9} {:<8} {:<17} {:>7} B  {:>12.2} {unit}",
            p.peer,
            p.pattern,
            p.direction,
            p.size,
            p.value()
        );
    }
    let find = |peer: &str, pattern: &str, direction: &str, size: u64| {
        peers
            .iter()
            .find(|p| {
                p.peer == peer && p.pattern == pattern && p.direction == direction && p.size == size
            })
            .map(PeerRate::value)
    };
    let ratio = |ours: f64, theirs: Option<f64>| {
        theirs.map_or_else(|| "-".to_owned(), |theirs| format!("{:.2}x", ours / theirs))
    };
    let _ = writeln!(
        out,
        "\nswitchyard over the peers (the better window):\n  {:<6} {:<14} {:<6} {:>12} {:>12} {:>12}",
        "", "", "", "tonic ready", "tonic mpsc", "iceoryx2"
    );
    for line in lines
        .iter()
        .filter(|l| matches!(l.transport, "unix" | "tcp" | "shm"))
    {
        let best = line
            .ours
            .iter()
            .map(|r| r.value(line.size))
            .fold(0.0, f64::max);
        let direction = match line.direction {
            Direction::Server => "server-streaming",
            Direction::Client => "client-streaming",
        };
        let size = line.size as u64;
        let iceoryx2 = if line.transport == "shm" {
            ratio(best, find("iceoryx2", "pubsub", "publish", size))
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "  {:<6} {:<14} {:<6} {:>12} {:>12} {:>12}",
            line.transport,
            line.direction.name(),
            if line.size == SMALL { "64 B" } else { "1 MiB" },
            ratio(best, find("tonic-tcp", "ready", direction, size)),
            ratio(best, find("tonic-tcp", "channel", direction, size)),
            iceoryx2,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_json_lines_parse() {
        let out = "table on stderr\n{\"peer\":\"tonic-tcp\",\"pattern\":\"ready\",\
                   \"direction\":\"server-streaming\",\"size\":64,\"messages\":5,\
                   \"seconds\":1.0,\"messages_per_s\":5.0,\"gb_per_s\":0.0}\n";
        let rates = parse(out).unwrap();
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].peer, "tonic-tcp");
        assert_eq!(rates[0].value(), 5.0);
        assert!(parse("{not json").is_err());
    }
}
