//! Unary round trips over pipes, Unix sockets and TCP, each beside the raw
//! OS path measured in the same run.
//!
//! `cargo bench -p switchyard --bench unary` (add `-- --quick` for a short
//! run). The code is `switchyard bench`'s (`src/bin/switchyard/bench.rs`):
//! this bench prints the same table.

#[path = "../src/bin/switchyard/bench.rs"]
// The CLI's report reads fields this bench does not.
#[allow(dead_code)]
mod bench;

fn main() -> std::process::ExitCode {
    if bench::run_child_if_asked() {
        return std::process::ExitCode::SUCCESS;
    }
    let settings = if std::env::args().any(|a| a == "--quick") {
        bench::Settings::quick()
    } else {
        bench::Settings::full()
    };
    match bench::run(settings) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("unary bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
