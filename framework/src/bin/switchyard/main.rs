//! `switchyard`: looks into running switchyard processes, lists the local
//! registry, and measures the transports on this machine.
//!
//! ```text
//! switchyard inspect <name | unix:///path | tcp://host:port> [--json] [--runtime-dir DIR]
//! switchyard services [--prune] [--json] [--runtime-dir DIR]
//! switchyard services --remove-queue SERVICE [--runtime-dir DIR]
//! switchyard bench [--quick] [--only T,..] [--report FILE]
//! switchyard certs --out DIR NAME[,SAN...]...
//! ```
//!
//! Exit status: 0 on success, 1 when the command failed, 2 on a usage error.

mod bench;
mod bench_bulk;
mod bench_extra;
#[cfg(feature = "quic")]
mod bench_quic;
#[cfg(target_os = "linux")]
mod bench_shm;
#[cfg(feature = "quic")]
mod certs;
mod inspect;
mod report;
mod services;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
switchyard: look into running switchyard processes and measure the transports

Usage:
  switchyard inspect <name | unix:///path | tcp://host:port> [--json] [--runtime-dir DIR]
      Print a process's connections: transport, why it was chosen, peers, counters.
  switchyard services [--prune] [--json] [--runtime-dir DIR]
      List the live entries of the local registry; --prune removes dead ones.
  switchyard services --remove-queue SERVICE [--runtime-dir DIR]
      Remove a stopped service's message queue for good.
  switchyard bench [--quick] [--only T,..] [--report FILE]
      Round trips over every transport beside the raw OS path, in one table.
  switchyard certs --out DIR NAME[,SAN...]...
      A CA and certificates it issued, for QUIC with CA trust and mutual TLS.
  switchyard help [COMMAND]    Show this text, or a command's.
  switchyard --version

Run `switchyard COMMAND --help` for a command's options.
Exit status: 0 success, 1 the command failed, 2 usage error.
";

const INSPECT_HELP: &str = "\
switchyard inspect: print the connections of a running switchyard process

Usage: switchyard inspect <TARGET> [--json] [--runtime-dir DIR]

TARGET is a name published in the local registry (see `switchyard services`),
unix:///path/to.sock or tcp://host:port. The process must serve the
introspection service (every server does unless built with
`.introspection(false)`).

Options:
  --json             Print the whole snapshot as JSON instead of the table.
  --runtime-dir DIR  Look names up in DIR's registry (default:
                     $SWITCHYARD_RUNTIME_DIR, else $XDG_RUNTIME_DIR/switchyard,
                     else ~/.switchyard/run, else $TMPDIR/switchyard-<uid>).
  -h, --help         Show this text.

Connecting and the call each have 5 seconds.
";

const SERVICES_HELP: &str = "\
switchyard services: list the local registry

Usage: switchyard services [--prune] [--json] [--runtime-dir DIR]
       switchyard services --remove-queue SERVICE [--runtime-dir DIR]

Lists every live entry: published name, pid, services and endpoints (fastest
first). Entries of processes that died are skipped.

Options:
  --prune            Remove the entries and sockets of dead processes and say
                     how many went.
  --remove-queue SERVICE
                     Remove SERVICE's message queue for good, with the one-way
                     calls waiting in it (a server keeps its queue when it
                     stops, so calls sent while it restarts are delivered).
                     Refused while a live process serves SERVICE.
  --json             Print the entries as a JSON array.
  --runtime-dir DIR  Use DIR's registry (default: $SWITCHYARD_RUNTIME_DIR, else
                     $XDG_RUNTIME_DIR/switchyard, else ~/.switchyard/run,
                     else $TMPDIR/switchyard-<uid>).
  -h, --help         Show this text.
";

const BENCH_HELP: &str = "\
switchyard bench: measure every transport beside the raw OS path

Usage: switchyard bench [--quick] [--only T,..] [--report FILE]

For each transport this build can use between processes (pipe, shm, unix,
tcp, quic): p50 and p99 of a 64-byte round trip (one call at a time), calls/s
with 32 calls in flight on one connection, the ratios to the raw path (a pipe
pair or socket echo; for shm, two shared-memory rings both sides busy-poll;
for quic, plain quinn with a stream per call and the same TLS and transport
settings) measured in the same run, and the CPU time client and server spent
per call. As root with iproute2 on Linux, the quic pair is measured again
with the server in a network namespace reached through a veth pair (both
made for the run and removed after it).
The server side runs in a child process (this binary, re-executed). Client
and child are pinned to CPUs 0 and 1 when there are two or more;
SWITCHYARD_BENCH_PIN=0 turns that off.

Options:
  --quick        A short run (5 000 round trips, 0.5 s of throughput): noisier.
  --only T,..    Only these transports' rows (e.g. --only quic), without the
                 bulk and one-way tables; not with --report.
  --report FILE  Also write the run into the markdown FILE between
                 <!-- bench:start --> and <!-- bench:end --> (added at the end
                 if missing; the rest of the file is kept), with a bar chart
                 next to it as <FILE stem>-bench.svg.
                 Example: --report docs/performance.md
  -h, --help     Show this text.
";

const CERTS_HELP: &str = "\
switchyard certs: make a CA and certificates for QUIC

Usage: switchyard certs --out DIR NAME[,SAN...]...

Writes DIR/ca.pem and DIR/ca-key.pem (a new CA each run), and for each NAME
DIR/NAME.pem and DIR/NAME-key.pem: a certificate the CA issued for NAME and
the other SANs listed after it (DNS names or IP addresses), good for serving
and for calling other services under mutual TLS. Keys are written mode 0600.

Use them with:
  SWITCHYARD_TLS_CERT=DIR/NAME.pem SWITCHYARD_TLS_KEY=DIR/NAME-key.pem
  SWITCHYARD_TLS_CA=DIR/ca.pem          (clients trust servers the CA issued)
  SWITCHYARD_TLS_CLIENT_CA=DIR/ca.pem   (servers require client certificates)

Example:
  switchyard certs --out certs inventory,inventory.default.svc.cluster.local gateway
";

/// How a command ended badly.
#[derive(Debug)]
enum Failure {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The command ran and failed (exit 1).
    Failed(String),
}

/// Options of one command: flags seen (with their values) and positionals.
#[derive(Debug, Default)]
struct Parsed {
    flags: Vec<(&'static str, Option<String>)>,
    positionals: Vec<String>,
    help: bool,
}

impl Parsed {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|(f, _)| *f == flag)
    }

    fn value(&self, flag: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(f, _)| *f == flag)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Parses `args` against `spec`: each flag and whether it takes a value.
/// Accepts `--flag value`, `--flag=value`, `-h`/`--help` and `--` (the rest
/// are positionals).
fn parse(command: &str, args: &[String], spec: &[(&'static str, bool)]) -> Result<Parsed, Failure> {
    let mut parsed = Parsed::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            parsed.positionals.extend(iter.by_ref().cloned());
            break;
        }
        if arg == "-h" || arg == "--help" {
            parsed.help = true;
            continue;
        }
        if !arg.starts_with('-') || arg == "-" {
            parsed.positionals.push(arg.clone());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let Some(&(flag, takes_value)) = spec.iter().find(|(f, _)| *f == name) else {
            return Err(Failure::Usage(format!(
                "unknown option {name} for `switchyard {command}`; see `switchyard {command} --help`"
            )));
        };
        let value = match (takes_value, inline) {
            (true, Some(value)) => Some(value),
            (true, None) => Some(iter.next().cloned().ok_or_else(|| {
                Failure::Usage(format!(
                    "{flag} needs a value; see `switchyard {command} --help`"
                ))
            })?),
            (false, Some(_)) => {
                return Err(Failure::Usage(format!("{flag} takes no value")));
            }
            (false, None) => None,
        };
        parsed.flags.push((flag, value));
    }
    Ok(parsed)
}

fn no_positionals(command: &str, parsed: &Parsed) -> Result<(), Failure> {
    match parsed.positionals.first() {
        Some(extra) => Err(Failure::Usage(format!(
            "unexpected argument {extra:?} for `switchyard {command}`; see `switchyard {command} --help`"
        ))),
        None => Ok(()),
    }
}

fn dispatch(args: &[String]) -> Result<(), Failure> {
    let Some((command, rest)) = args.split_first() else {
        return Err(Failure::Usage(format!("no command given\n\n{USAGE}")));
    };
    match command.as_str() {
        "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        "help" => {
            let text = match rest.first().map(String::as_str) {
                None => USAGE,
                Some("inspect") => INSPECT_HELP,
                Some("services") => SERVICES_HELP,
                Some("bench") => BENCH_HELP,
                Some("certs") => CERTS_HELP,
                Some(other) => {
                    return Err(Failure::Usage(format!(
                        "no command {other:?}; the commands are inspect, services, bench and certs"
                    )));
                }
            };
            print!("{text}");
            Ok(())
        }
        "-V" | "--version" | "version" => {
            println!("switchyard {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "inspect" => {
            let parsed = parse(
                "inspect",
                rest,
                &[("--json", false), ("--runtime-dir", true)],
            )?;
            if parsed.help {
                print!("{INSPECT_HELP}");
                return Ok(());
            }
            let target = match parsed.positionals.as_slice() {
                [target] => target,
                [] => {
                    return Err(Failure::Usage(
                        "inspect needs a target: a published name (see `switchyard services`), \
                         unix:///path or tcp://host:port"
                            .into(),
                    ));
                }
                [_, extra, ..] => {
                    return Err(Failure::Usage(format!(
                        "inspect takes one target; unexpected {extra:?}"
                    )));
                }
            };
            inspect::run(
                target,
                parsed.has("--json"),
                parsed.value("--runtime-dir").map(PathBuf::from),
            )
            .map_err(Failure::Failed)
        }
        "services" => {
            let parsed = parse(
                "services",
                rest,
                &[
                    ("--prune", false),
                    ("--json", false),
                    ("--runtime-dir", true),
                    ("--remove-queue", true),
                ],
            )?;
            if parsed.help {
                print!("{SERVICES_HELP}");
                return Ok(());
            }
            no_positionals("services", &parsed)?;
            if let Some(service) = parsed.value("--remove-queue") {
                return services::remove_queue(
                    service,
                    parsed.value("--runtime-dir").map(PathBuf::from),
                )
                .map_err(Failure::Failed);
            }
            services::run(
                parsed.has("--prune"),
                parsed.has("--json"),
                parsed.value("--runtime-dir").map(PathBuf::from),
            )
            .map_err(Failure::Failed)
        }
        "bench" => {
            let parsed = parse(
                "bench",
                rest,
                &[("--quick", false), ("--only", true), ("--report", true)],
            )?;
            if parsed.help {
                print!("{BENCH_HELP}");
                return Ok(());
            }
            no_positionals("bench", &parsed)?;
            let settings = if parsed.has("--quick") {
                bench::Settings::quick()
            } else {
                bench::Settings::full()
            };
            let only = parsed.value("--only").map(only_transports).transpose()?;
            if only.is_some() && parsed.has("--report") {
                return Err(Failure::Usage(
                    "--only measures part of the table; --report writes the whole of it, so \
                     give one or the other"
                        .into(),
                ));
            }
            let outcome = bench::run(settings, only.as_deref().unwrap_or_default())
                .map_err(Failure::Failed)?;
            if only.is_some() {
                return Ok(());
            }
            let extras = bench_extra::run(parsed.has("--quick")).map_err(Failure::Failed)?;
            if let Some(report) = parsed.value("--report") {
                let command = std::iter::once("switchyard".to_owned())
                    .chain(args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ");
                let svg =
                    report::write(report.as_ref(), &outcome, &command).map_err(Failure::Failed)?;
                bench_extra::write_report(report.as_ref(), &extras).map_err(Failure::Failed)?;
                println!(
                    "wrote the run into {report} and the chart to {}",
                    svg.display()
                );
            }
            Ok(())
        }
        "certs" => {
            let parsed = parse("certs", rest, &[("--out", true)])?;
            if parsed.help {
                print!("{CERTS_HELP}");
                return Ok(());
            }
            let Some(out) = parsed.value("--out") else {
                return Err(Failure::Usage(
                    "certs needs --out DIR; see `switchyard certs --help`".into(),
                ));
            };
            if parsed.positionals.is_empty() {
                return Err(Failure::Usage(
                    "certs needs at least one NAME[,SAN...]; see `switchyard certs --help`".into(),
                ));
            }
            #[cfg(feature = "quic")]
            return certs::run(out.as_ref(), &parsed.positionals).map_err(Failure::Failed);
            #[cfg(not(feature = "quic"))]
            return Err(Failure::Failed(format!(
                "this switchyard was built without its quic feature; cannot write {out}"
            )));
        }
        other => Err(Failure::Usage(format!(
            "unknown command {other:?}; the commands are inspect, services, bench and certs \
             (see `switchyard --help`)"
        ))),
    }
}

/// The transports of `--only quic,tcp`.
fn only_transports(list: &str) -> Result<Vec<switchyard::Transport>, Failure> {
    list.split(',')
        .map(|name| {
            switchyard::Transport::from_name(name.trim()).ok_or_else(|| {
                Failure::Usage(format!(
                    "--only: {name:?} is not a transport; name some of pipe, shm, unix, tcp, quic"
                ))
            })
        })
        .collect()
}

fn main() -> ExitCode {
    // A bench child (this binary re-executed by `switchyard bench`).
    if bench::run_child_if_asked() {
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("switchyard: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            let command = args.first().map_or("", String::as_str);
            // Messages can carry what a peer said (a status from inspect).
            let message = switchyard::debug::table::escape_terminal(&message);
            eprintln!("switchyard {command}: {message}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    const SPEC: &[(&str, bool)] = &[("--json", false), ("--runtime-dir", true)];

    #[test]
    fn flags_values_and_positionals() {
        let p = parse(
            "inspect",
            &strings(&["calc", "--json", "--runtime-dir", "/d"]),
            SPEC,
        )
        .unwrap();
        assert_eq!(p.positionals, ["calc"]);
        assert!(p.has("--json"));
        assert_eq!(p.value("--runtime-dir"), Some("/d"));
        let p = parse(
            "inspect",
            &strings(&["--runtime-dir=/e", "--", "--json"]),
            SPEC,
        )
        .unwrap();
        assert_eq!(p.value("--runtime-dir"), Some("/e"));
        assert_eq!(p.positionals, ["--json"]);
        assert!(!p.has("--json"));
        assert!(parse("inspect", &strings(&["-h"]), SPEC).unwrap().help);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for args in [&["--nope"][..], &["--runtime-dir"], &["--json=yes"]] {
            assert!(
                matches!(
                    parse("inspect", &strings(args), SPEC),
                    Err(Failure::Usage(_))
                ),
                "{args:?}"
            );
        }
        assert!(matches!(
            dispatch(&strings(&["frobnicate"])),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            dispatch(&strings(&["inspect"])),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            dispatch(&strings(&["services", "extra"])),
            Err(Failure::Usage(_))
        ));
        for args in [
            &["bench", "--only", "carrier-pigeon"][..],
            &["bench", "--only", "quic", "--report", "x.md"],
        ] {
            assert!(
                matches!(dispatch(&strings(args)), Err(Failure::Usage(_))),
                "{args:?}"
            );
        }
    }
}
