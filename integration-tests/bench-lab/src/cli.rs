//! The command line of `switchyard-bench`, parsed with clap.

use std::path::PathBuf;

use clap::Parser;
use switchyard::Transport;

/// switchyard-bench: measure every transport beside the raw OS path
///
/// For each transport this build can use between processes (pipe, shm,
/// unix, tcp, quic): p50 and p99 of a 64-byte round trip (one call at a
/// time), calls/s with 32 calls in flight on one connection, the ratios to
/// the raw path (a pipe pair or socket echo; for shm, two shared-memory
/// rings both sides busy-poll; for quic, plain quinn with a stream per call
/// and the same TLS and transport settings) measured in the same run, and
/// the CPU time client and server spent per call. As root with iproute2 on
/// Linux, the quic pair is measured again with the server in a network
/// namespace reached through a veth pair (both made for the run and removed
/// after it). Then the bulk (mmap) and one-way tables, and the streams
/// table: server- and client-streaming rates of 64-byte messages and 1 MiB
/// chunks per transport beside a raw framed one-way path; the layers
/// table; and the compression table (as root with iproute2): 64 KiB
/// echoes over tcp and quic to a network namespace, compression on and
/// off, with the bytes each call puts on the veth.
///
/// The server side runs in a child process (this binary, re-executed).
/// Client and child are pinned to CPUs 0 and 1 when there are two or more;
/// SWITCHYARD_BENCH_PIN=0 turns that off.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard-bench",
    version,
    args_override_self = true,
    verbatim_doc_comment
)]
pub(crate) struct Args {
    /// A short run (5 000 round trips, 0.5 s of throughput): noisier.
    #[arg(long, verbatim_doc_comment)]
    pub(crate) quick: bool,
    /// Only these transports' rows (e.g. --only quic), without the bulk and
    /// one-way tables; not with --report.
    #[arg(
        long,
        verbatim_doc_comment,
        value_name = "T,..",
        value_delimiter = ',',
        num_args = 1,
        value_parser = transport,
        conflicts_with = "report"
    )]
    pub(crate) only: Option<Vec<Transport>>,
    /// Only the streams table (with --only: only those transports' rows).
    #[arg(long, verbatim_doc_comment, conflicts_with = "report")]
    pub(crate) only_streams: bool,
    /// Only the layers table (shm and tcp with no layers, an empty layer,
    /// auth plus a concurrency limit; the chain's own cost per call).
    #[arg(long, verbatim_doc_comment, conflicts_with_all = ["report", "only_streams", "only"])]
    pub(crate) only_layers: bool,
    /// Only the compression table: 64 KiB echoes of JSON lines and of
    /// random bytes to a server in a network namespace over a veth pair,
    /// tcp and quic, compression on and off; then the JSON rows with the
    /// veth shaped to 1gbit and to 100mbit (SWITCHYARD_BENCH_COMPRESS_RATES
    /// names others, or none). Needs root and iproute2; about 1.5 min.
    #[arg(long, verbatim_doc_comment, conflicts_with_all = ["report", "only_streams", "only", "only_layers"])]
    pub(crate) only_compression: bool,
    /// Only the balancing table: a channel to a name with one replica
    /// beside channels to three replicas on this host (server children
    /// publishing one name, over shared memory), with each policy.
    #[arg(long, verbatim_doc_comment, conflicts_with_all = ["report", "only_streams", "only", "only_layers", "only_compression"])]
    pub(crate) only_balance: bool,
    /// Only the shared-memory bulk table: 64 KiB, 1 MiB and 64 MiB echoes through
    /// the pools and, with the pools off, as a memfd per body.
    /// SWITCHYARD_BENCH_SHM_SPIN_US=2000 makes both sides spin up to 2 ms
    /// before they sleep (busy-polling, as iceoryx2's figures do);
    /// SWITCHYARD_BENCH_BULK_SIZES=64K (or 16K,1M, ...) measures other sizes.
    #[arg(long, verbatim_doc_comment, conflicts_with_all = ["report", "only_streams", "only", "only_layers", "only_compression", "only_balance"])]
    pub(crate) only_bulk: bool,
    /// Also write the run into the markdown FILE between
    /// <!-- bench:start --> and <!-- bench:end --> (added at the end if
    /// missing; the rest of the file is kept), with a bar chart next to it
    /// as STEM-bench.svg, STEM being FILE's name without its extension.
    /// Example: --report docs/performance.md
    #[arg(long, verbatim_doc_comment, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
}

/// A transport named on the command line (`--only quic,tcp`).
fn transport(name: &str) -> Result<Transport, String> {
    Transport::from_name(name).ok_or_else(|| {
        format!("{name:?} is not a transport; name some of pipe, shm, unix, tcp, quic")
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("switchyard-bench").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn only_takes_a_list_of_transports() {
        let args = parse(&["--quick", "--only", "quic,tcp"]).unwrap();
        assert!(args.quick);
        assert_eq!(args.only, Some(vec![Transport::Quic, Transport::Tcp]));
        assert_eq!(parse(&[]).unwrap().only, None);
        let args = parse(&["--only-streams", "--only", "shm"]).unwrap();
        assert!(args.only_streams);
        assert_eq!(args.only, Some(vec![Transport::Shm]));
        assert!(
            parse(&["--only-compression", "--quick"])
                .unwrap()
                .only_compression
        );
        let err = parse(&["--only-compression", "--only-layers"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let args = parse(&["--report", "docs/performance.md"]).unwrap();
        assert_eq!(args.report, Some(PathBuf::from("docs/performance.md")));
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        let err = parse(&["--only", "carrier-pigeon"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("is not a transport"), "{err}");
        let err = parse(&["--only", "quic", "--report", "x.md"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        assert_eq!(
            parse(&["--report"]).unwrap_err().kind(),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            parse(&["--nope"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            parse(&["extra"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
    }
}
