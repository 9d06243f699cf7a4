//! `switchyard`: looks into running switchyard processes and lists the
//! local registry.
//!
//! ```text
//! switchyard inspect <name | unix:///path | tcp://host:port> [--json] [--runtime-dir DIR]
//! switchyard health <name | url> [--service SERVICE] [--runtime-dir DIR]
//! switchyard services [--prune] [--json] [--runtime-dir DIR]
//! switchyard services --remove-queue SERVICE [--runtime-dir DIR]
//! switchyard certs --out DIR NAME[,SAN...]...
//! ```
//!
//! The arguments are parsed with clap ([`cli`]); each command has `--help`.
//! The benchmark lab is its own binary, `switchyard-bench`
//! (`integration-tests/bench-lab`); `switchyard bench` says so.
//!
//! Exit status: 0 on success, 1 when the command failed, 2 on a usage error.

#[cfg(feature = "quic")]
mod certs;
mod cli;
mod health;
mod inspect;
mod reach;
mod services;
mod usage;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// How a command ended badly.
#[derive(Debug)]
enum Failure {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The command ran and failed (exit 1).
    Failed(String),
}

/// Runs `command`.
fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Inspect(args) => {
            inspect::run(&args.target, args.json, args.runtime_dir).map_err(Failure::Failed)
        }
        Command::Health(args) => {
            health::run(&args.target, &args.service, args.runtime_dir).map_err(Failure::Failed)
        }
        Command::Services(args) => match args.remove_queue {
            Some(service) => {
                services::remove_queue(&service, args.runtime_dir).map_err(Failure::Failed)
            }
            None => services::run(args.prune, args.json, args.runtime_dir).map_err(Failure::Failed),
        },
        Command::Certs(args) => {
            #[cfg(feature = "quic")]
            return certs::run(&args.out, &args.specs).map_err(Failure::Failed);
            #[cfg(not(feature = "quic"))]
            return Err(Failure::Failed(format!(
                "this switchyard was built without its quic feature; cannot write {}",
                args.out.display()
            )));
        }
        Command::Bench(args) => {
            let rest: String = args.args.iter().map(|arg| format!(" {arg}")).collect();
            Err(Failure::Usage(format!(
                "the benchmark lab moved: run `cargo run --release -p switchyard-bench-lab --{rest}` \
                 (its binary is switchyard-bench; see integration-tests/bench-lab)"
            )))
        }
        Command::Version => {
            println!("switchyard {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli =
        match Cli::try_parse_from(std::iter::once("switchyard".to_owned()).chain(args.clone())) {
            Ok(cli) => cli,
            Err(err) => {
                return match usage::describe(&err, &args) {
                    None => {
                        // Help or the version, which clap writes to stdout.
                        let _ = err.print();
                        ExitCode::SUCCESS
                    }
                    Some(message) => {
                        eprintln!("switchyard: {message}");
                        ExitCode::from(2)
                    }
                };
            }
        };
    let command = cli.command.name();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("switchyard {command}: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            // Messages can carry what a peer said (a status from inspect).
            let message = switchyard::debug::table::escape_terminal(&message);
            eprintln!("switchyard {command}: {message}");
            ExitCode::from(1)
        }
    }
}
