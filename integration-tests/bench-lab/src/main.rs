//! `switchyard-bench`: the benchmark lab. Every transport switchyard can use
//! between processes, beside the raw OS path measured in the same run, in
//! one table; then the bulk (mmap), one-way, streams, layers and
//! compression tables.
//!
//! ```text
//! cargo run --release -p switchyard-bench-lab -- [--quick] [--only T,..] [--only-streams] [--only-layers] [--only-compression] [--only-balance] [--only-bulk] [--report FILE]
//! ```
//!
//! The server side of each measurement is this binary re-executed as a
//! child (`SWITCHYARD_BENCH_CHILD` names its role). The lab reaches
//! switchyard's internals (the shared-memory ring, the syscall layer, the
//! quinn configurations) through its `unstable-bench-internals` feature,
//! which is not public API.
//!
//! Exit status: 0 on success, 1 when a measurement failed, 2 on a usage
//! error.

mod bench;
mod bench_balance;
mod bench_bulk;
mod bench_compress;
mod bench_extra;
mod bench_layers;
mod bench_parked;
mod bench_peers;
#[cfg(feature = "quic")]
mod bench_quic;
#[cfg(target_os = "linux")]
mod bench_shm;
mod bench_streams;
mod cli;
mod netns;
mod report;

use std::process::ExitCode;

use clap::Parser;

/// Runs the benchmarks `args` ask for, printing the tables as they are
/// measured, and writes the report when asked; `command` is the command
/// line, recorded in the report.
fn run(args: &cli::Args, command: &str) -> Result<(), String> {
    if args.only_streams {
        return bench_streams::run(args.quick, args.only.as_deref().unwrap_or_default());
    }
    if args.only_layers {
        return bench_layers::run(args.quick);
    }
    if args.only_compression {
        return bench_compress::run(args.quick, false).map(drop);
    }
    if args.only_balance {
        return bench_balance::run(args.quick);
    }
    if args.only_bulk {
        println!("shm bulk (mmap): {}", bench_bulk::intro());
        let rows = bench_bulk::run(args.quick)?;
        print!("{}", bench_bulk::text(&rows));
        print!("{}", bench_bulk::pool_memory(&rows));
        // iceoryx2 request-response of 1 MiB, when the peers are built.
        if let Some(peers) = bench_peers::run(args.quick)? {
            print!("{}", bench_bulk::beside_iceoryx2(&rows, &peers));
        }
        return Ok(());
    }
    let settings = if args.quick {
        bench::Settings::quick()
    } else {
        bench::Settings::full()
    };
    let outcome = bench::run(settings, args.only.as_deref().unwrap_or_default())?;
    // tonic and iceoryx2 round trips, when their binary is built.
    if let Some(peers) = bench_peers::run(args.quick)? {
        print!("{}", bench_peers::text(&outcome.rows, &peers));
    }
    if args.only.is_some() {
        return Ok(());
    }
    let extras = bench_extra::run(args.quick)?;
    bench_streams::run(args.quick, &[])?;
    bench_layers::run(args.quick)?;
    bench_balance::run(args.quick)?;
    // Without root or iproute2 the run goes on without it (the reason is
    // printed and reported).
    let compression = bench_compress::run(args.quick, true)?;
    if let Some(report) = &args.report {
        let svg = report::write(report, &outcome, command)?;
        bench_extra::write_report(report, &extras)?;
        bench_compress::write_report(report, &compression)?;
        println!(
            "wrote the run into {} and the chart to {}",
            report.display(),
            svg.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    // A bench child (this binary re-executed by the lab).
    if bench::run_child_if_asked() {
        return ExitCode::SUCCESS;
    }
    // Usage errors exit 2 with clap's message; --help and --version exit 0.
    let args = cli::Args::parse();
    let command = std::iter::once("switchyard-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    match run(&args, &command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("switchyard-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
