//! The peers of the round-trip table, measured in the same run: tonic's
//! unary call over TCP and iceoryx2's request-response over shared memory
//! (both sides busy-polling), 64-byte echoes one at a time (p50, p99) and
//! 32 in flight (calls/s), by the standalone `integration-tests/bench-peers`
//! binary (`--round-trips --json`: one object per peer per line). Each
//! switchyard row is then given as a ratio to the peer of its kind.

use std::fmt::Write as _;

use crate::bench::Row;

/// The payload of the round-trip table's rows.
const SMALL: u64 = 64;

/// The iceoryx2 round trip of `size` bytes among `peers`, if measured.
pub(crate) fn iceoryx2_of(peers: &[PeerTrip], size: u64) -> Option<&PeerTrip> {
    peers
        .iter()
        .find(|p| p.peer == "iceoryx2" && p.pattern == "request-response" && p.size == size)
}

/// One peer's figures.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PeerTrip {
    /// `tonic-tcp` or `iceoryx2`.
    pub(crate) peer: String,
    /// `unary` or `request-response`.
    pub(crate) pattern: String,
    /// Request and response payload bytes (64; iceoryx2 also 1 MiB).
    pub(crate) size: u64,
    /// Median round trip, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile, µs.
    pub(crate) p99_us: f64,
    /// Calls per second, 32 in flight.
    pub(crate) calls_per_s: f64,
}

/// Parses the peers' `--round-trips --json` output.
fn parse(stdout: &str) -> Result<Vec<PeerTrip>, String> {
    crate::bench_streams::peers::json_lines(stdout)?
        .into_iter()
        .map(|value| {
            let number = |key: &str| {
                value[key]
                    .as_f64()
                    .ok_or_else(|| format!("a peer's round trips lack {key:?}: {value}"))
            };
            Ok(PeerTrip {
                peer: value["peer"].as_str().unwrap_or_default().to_owned(),
                pattern: value["pattern"].as_str().unwrap_or_default().to_owned(),
                size: value["size"].as_u64().unwrap_or(64),
                p50_us: number("p50_us")?,
                p99_us: number("p99_us")?,
                calls_per_s: number("calls_per_s")?,
            })
        })
        .collect()
}

/// Runs the peers' round trips (quick or full); `Ok(None)`, saying why,
/// when their binary is not built.
pub(crate) fn run(quick: bool) -> Result<Option<Vec<PeerTrip>>, String> {
    crate::bench_streams::peers::run_binary(&["--round-trips"], quick)?
        .map(|out| parse(&out))
        .transpose()
}

/// Which peers a switchyard row is set beside: iceoryx2 for shared
/// memory; tonic for the sockets and pipes, and tarpc over the same socket.
fn peers_of(transport: &str) -> &'static [(&'static str, &'static str)] {
    match transport {
        "shm" => &[("iceoryx2", "request-response")],
        "unix" => &[("tonic-tcp", "unary"), ("tarpc-unix", "unary")],
        "tcp" => &[("tonic-tcp", "unary"), ("tarpc-tcp", "unary")],
        "pipe" => &[("tonic-tcp", "unary")],
        _ => &[],
    }
}

/// The peers' rows, and every switchyard row over its peer.
pub(crate) fn text(rows: &[Row], peers: &[PeerTrip]) -> String {
    let mut out = String::from("\npeers in the same run (bench-peers --round-trips):\n");
    let peers: Vec<&PeerTrip> = peers.iter().filter(|p| p.size == SMALL).collect();
    for p in &peers {
        let _ = writeln!(
            out,
            "  {:<10} {:<16} p50 {:>8.2} µs  p99 {:>8.2} µs  {:>10.0} calls/s",
            p.peer, p.pattern, p.p50_us, p.p99_us, p.calls_per_s
        );
    }
    let _ = writeln!(
        out,
        "switchyard over the peer of its kind (p50 and p99: lower is better; calls/s: higher):"
    );
    for row in rows.iter().filter(|r| !r.is_raw()) {
        for (peer, pattern) in peers_of(row.transport) {
            let Some(p) = peers
                .iter()
                .find(|p| p.peer == *peer && p.pattern == *pattern)
            else {
                continue;
            };
            let f = &row.figures;
            let _ = writeln!(
                out,
                "  {:<22} over {peer:<10} p50 {:.2}x  p99 {:.2}x  calls/s {:.2}x",
                row.path,
                f.p50_us / p.p50_us,
                f.p99_us / p.p99_us,
                f.calls_per_s / p.calls_per_s
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_round_trip_lines_parse() {
        let out = "table\n{\"peer\":\"iceoryx2\",\"pattern\":\"request-response\",\"size\":64,\
                   \"calls\":5,\"p50_us\":2.0,\"p99_us\":3.5,\"calls_per_s\":700000.0}\n";
        let trips = parse(out).unwrap();
        assert_eq!(trips.len(), 1);
        assert_eq!(trips[0].peer, "iceoryx2");
        assert_eq!(trips[0].p50_us, 2.0);
        assert!(parse("{\"peer\":\"x\"}").is_err());
        assert!(parse("{not json").is_err());
    }
}
