//! The command line of `switchyard`, parsed with clap: one struct per
//! command, whose doc comments are its `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The synopsis at the top of `switchyard --help`, one line per command.
const USAGE: &str = "\
switchyard inspect <name | unix:///path | tcp://host:port> [--json] [--runtime-dir DIR]
       switchyard health <name | url> [--service SERVICE] [--runtime-dir DIR]
       switchyard services [--prune] [--json] [--runtime-dir DIR]
       switchyard services --remove-queue SERVICE [--runtime-dir DIR]
       switchyard certs --out DIR NAME[,SAN...]...
       switchyard help [COMMAND]
       switchyard --version";

/// What `--help` says below the options of the top-level command.
const AFTER_HELP: &str = "\
The benchmark lab is its own binary: cargo run --release -p switchyard-bench-lab -- --help

Run `switchyard COMMAND --help` for a command's options.
Exit status: 0 success, 1 the command failed, 2 usage error.";

/// Where the runtime directory is when `--runtime-dir` is not given.
const RUNTIME_DIR_DEFAULT: &str = "$SWITCHYARD_RUNTIME_DIR,
else $XDG_RUNTIME_DIR/switchyard, else ~/.switchyard/run,
else $TMPDIR/switchyard-<uid>";

/// switchyard: look into running switchyard processes and the local registry
#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    override_usage = USAGE,
    after_help = AFTER_HELP,
    subcommand_required = true,
    args_override_self = true
)]
pub(crate) struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print a process's connections: transport, why it was chosen, peers,
    /// counters.
    ///
    /// The process must serve the introspection service (every server does
    /// unless built with `.introspection(false)`). Connecting and the call
    /// each have 5 seconds.
    #[command(verbatim_doc_comment)]
    Inspect(InspectArgs),
    /// Ask a server whether it serves: prints SERVING or NOT_SERVING and
    /// exits 0 only for SERVING (a probe for orchestrators).
    ///
    /// Calls the server's health service (every server answers it unless
    /// built with `.health(false)`). Connecting and the call each have 5
    /// seconds; a server that cannot be reached, or does not serve the
    /// service asked about, exits 1 saying why.
    #[command(verbatim_doc_comment)]
    Health(HealthArgs),
    /// List the live entries of the local registry; --prune removes dead
    /// ones, --remove-queue a stopped service's message queue.
    ///
    /// Lists every live entry: published name, pid, services and endpoints
    /// (fastest first). Entries of processes that died are skipped.
    #[command(verbatim_doc_comment)]
    Services(ServicesArgs),
    /// A CA and certificates it issued, for QUIC with CA trust and mutual
    /// TLS.
    ///
    /// Writes DIR/ca.pem and DIR/ca-key.pem (a new CA each run), and for
    /// each NAME DIR/NAME.pem and DIR/NAME-key.pem: a certificate the CA
    /// issued for NAME and the other SANs listed after it (DNS names or IP
    /// addresses), good for serving and for calling other services under
    /// mutual TLS. Keys are written mode 0600.
    #[command(verbatim_doc_comment, after_help = CERTS_AFTER_HELP)]
    Certs(CertsArgs),
    /// The benchmark lab moved to its own binary, `switchyard-bench`:
    /// cargo run --release -p switchyard-bench-lab -- --help
    #[command(hide = true)]
    Bench(MovedArgs),
    /// Print the version (as --version).
    #[command(hide = true)]
    Version,
}

impl Command {
    /// The command's name on the command line.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Inspect(_) => "inspect",
            Self::Health(_) => "health",
            Self::Services(_) => "services",
            Self::Certs(_) => "certs",
            Self::Bench(_) => "bench",
            Self::Version => "version",
        }
    }
}

/// How to use what `switchyard certs` wrote.
const CERTS_AFTER_HELP: &str = "\
Use them with:
  SWITCHYARD_TLS_CERT=DIR/NAME.pem SWITCHYARD_TLS_KEY=DIR/NAME-key.pem
  SWITCHYARD_TLS_CA=DIR/ca.pem          (clients trust servers the CA issued)
  SWITCHYARD_TLS_CLIENT_CA=DIR/ca.pem   (servers require client certificates)

Example:
  switchyard certs --out certs inventory,inventory.default.svc.cluster.local gateway";

/// The options of `switchyard inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// A name published in the local registry (see `switchyard services`),
    /// unix:///path/to.sock or tcp://host:port.
    #[arg(verbatim_doc_comment, value_name = "TARGET")]
    pub(crate) target: String,
    /// Print the whole snapshot as JSON instead of the table.
    #[arg(long, verbatim_doc_comment)]
    pub(crate) json: bool,
    /// Look names up in DIR's registry.
    #[arg(long, verbatim_doc_comment, value_name = "DIR", long_help = runtime_dir_help("Look names up in DIR's registry"))]
    pub(crate) runtime_dir: Option<PathBuf>,
}

/// The options of `switchyard health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// A name published in the local registry, unix:///path/to.sock,
    /// tcp://host:port or quic://host:port?pin=...
    #[arg(verbatim_doc_comment, value_name = "TARGET")]
    pub(crate) target: String,
    /// The service to ask about; without it, the server as a whole.
    #[arg(long, verbatim_doc_comment, value_name = "SERVICE", default_value = "")]
    pub(crate) service: String,
    /// Look names up in DIR's registry.
    #[arg(long, verbatim_doc_comment, value_name = "DIR", long_help = runtime_dir_help("Look names up in DIR's registry"))]
    pub(crate) runtime_dir: Option<PathBuf>,
}

/// The options of `switchyard services`.
#[derive(Debug, Args)]
pub(crate) struct ServicesArgs {
    /// Remove the entries and sockets of dead processes and say how many
    /// went.
    #[arg(long, verbatim_doc_comment)]
    pub(crate) prune: bool,
    /// Remove SERVICE's message queue for good, with the one-way calls
    /// waiting in it (a server keeps its queue when it stops, so calls sent
    /// while it restarts are delivered). Refused while a live process
    /// serves SERVICE.
    #[arg(long, verbatim_doc_comment, value_name = "SERVICE")]
    pub(crate) remove_queue: Option<String>,
    /// Print the entries as a JSON array.
    #[arg(long, verbatim_doc_comment)]
    pub(crate) json: bool,
    /// Use DIR's registry.
    #[arg(long, verbatim_doc_comment, value_name = "DIR", long_help = runtime_dir_help("Use DIR's registry"))]
    pub(crate) runtime_dir: Option<PathBuf>,
}

/// The options of `switchyard certs`.
#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// Write the PEM files into DIR (created if missing).
    #[arg(long, verbatim_doc_comment, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// A certificate to issue: its name, then further SANs, comma-separated.
    #[arg(verbatim_doc_comment, value_name = "NAME[,SAN...]", required = true)]
    pub(crate) specs: Vec<String>,
}

/// Whatever followed `switchyard bench`, to say how to run it now.
#[derive(Debug, Args)]
pub(crate) struct MovedArgs {
    /// The benchmark's arguments, for the new command line.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub(crate) args: Vec<String>,
}

/// The `--runtime-dir` long help: `what`, then the default.
fn runtime_dir_help(what: &str) -> String {
    format!("{what} (default:\n{RUNTIME_DIR_DEFAULT}).")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_values_and_positionals() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "inspect",
            "calc",
            "--json",
            "--runtime-dir",
            "/d",
        ])
        .unwrap();
        let Command::Inspect(args) = cli.command else {
            panic!("inspect: {:?}", cli.command)
        };
        assert_eq!(args.target, "calc");
        assert!(args.json);
        assert_eq!(args.runtime_dir.as_deref(), Some("/d".as_ref()));

        let cli =
            Cli::try_parse_from(["switchyard", "inspect", "--runtime-dir=/e", "--", "--json"])
                .unwrap();
        let Command::Inspect(args) = cli.command else {
            panic!("inspect: {:?}", cli.command)
        };
        assert_eq!(args.runtime_dir.as_deref(), Some("/e".as_ref()));
        assert_eq!(args.target, "--json");
        assert!(!args.json);

        let cli = Cli::try_parse_from(["switchyard", "certs", "--out", "o", "a,b", "c"]).unwrap();
        let Command::Certs(args) = cli.command else {
            panic!("certs: {:?}", cli.command)
        };
        assert_eq!(args.specs, ["a,b", "c"]);

        let cli = Cli::try_parse_from(["switchyard", "bench", "--report", "x.md"]).unwrap();
        let Command::Bench(args) = cli.command else {
            panic!("bench: {:?}", cli.command)
        };
        assert_eq!(args.args, ["--report", "x.md"]);
    }

    #[test]
    fn a_flag_given_twice_counts_once() {
        let cli = Cli::try_parse_from(["switchyard", "services", "--json", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Services(ServicesArgs { json: true, .. })
        ));
    }
}
