//! Unary round trips over pipes, shared memory, Unix sockets and TCP, each
//! beside the raw path measured in the same run.
//!
//! `cargo bench -p switchyard --bench unary` (add `-- --quick` for a short
//! run). The code is `switchyard bench`'s (`src/bin/switchyard/bench.rs`):
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
#[path = "../src/bin/switchyard/bench_shm.rs"]
#[cfg(target_os = "linux")]
mod bench_shm;

fn main() -> std::process::ExitCode {
    if bench::run_child_if_asked() {
        return std::process::ExitCode::SUCCESS;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let settings = if quick {
        bench::Settings::quick()
    } else {
        bench::Settings::full()
    };
    match bench::run(settings).and_then(|_| bench_extra::run(quick)) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("unary bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
