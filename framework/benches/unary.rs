//! Unary round trips over pipes, shared memory, Unix sockets, TCP and QUIC, each
//! beside the raw path measured in the same run.
//!
//! `cargo bench -p switchyard --bench unary` (add `-- --quick` for a short
//! run, `-- --only quic` for some transports' rows alone). The code is `switchyard bench`'s (`src/bin/switchyard/bench.rs`):
//! this bench prints the same table.

#[path = "../src/bin/switchyard/bench.rs"]
// The CLI's report reads fields this bench does not.
#[allow(dead_code)]
mod bench;
#[path = "../src/bin/switchyard/bench_bulk.rs"]
#[allow(dead_code)]
mod bench_bulk;
#[path = "../src/bin/switchyard/bench_extra.rs"]
// The report writing is the CLI's.
#[allow(dead_code)]
mod bench_extra;
#[path = "../src/bin/switchyard/bench_quic.rs"]
#[cfg(feature = "quic")]
mod bench_quic;
#[path = "../src/bin/switchyard/bench_shm.rs"]
#[cfg(target_os = "linux")]
mod bench_shm;

fn main() -> std::process::ExitCode {
    if bench::run_child_if_asked() {
        return std::process::ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let settings = if quick {
        bench::Settings::quick()
    } else {
        bench::Settings::full()
    };
    // `--only quic,tcp`: those rows alone, without the bulk and one-way tables.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| {
            list.split(',')
                .map(|name| {
                    switchyard::Transport::from_name(name)
                        .ok_or_else(|| format!("--only: {name:?} is not a transport"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose();
    let ran = only.and_then(|only| {
        let matrix = bench::run(settings, only.as_deref().unwrap_or_default())?;
        if only.is_none() {
            bench_extra::run(quick)?;
        }
        Ok(matrix)
    });
    match ran {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("unary bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
