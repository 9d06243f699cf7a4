//! What a command line clap refused is told as: one line naming the command
//! and what to run for its help (`unknown option --nope for `switchyard
//! services`; see `switchyard services --help``), as the tool always said.

use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::cli::Cli;

/// What clap's `err` means for the user: `None` when it is not an error but
/// help or the version, which clap prints itself (to stdout, exit 0);
/// otherwise the message of a usage error. `args` are the command line
/// without the program name, to tell which command was meant.
pub(crate) fn describe(err: &clap::Error, args: &[String]) -> Option<String> {
    let command = command_of(args);
    let see = match command {
        Some(command) => format!("see `switchyard {command} --help`"),
        None => "see `switchyard --help`".to_owned(),
    };
    let of = command.map_or_else(
        || "`switchyard`".to_owned(),
        |c| format!("`switchyard {c}`"),
    );
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        Some(ContextValue::Strings(values)) => Some(values.join(", ")),
        _ => None,
    };
    Some(match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => return None,
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            format!("no command given\n\n{}", Cli::command().render_help())
        }
        ErrorKind::InvalidSubcommand => format!(
            "unknown command {:?}; the commands are inspect, services and certs (see \
             `switchyard --help`)",
            context(ContextKind::InvalidSubcommand).unwrap_or_default()
        ),
        ErrorKind::UnknownArgument => {
            let arg = context(ContextKind::InvalidArg).unwrap_or_default();
            if arg.starts_with('-') {
                format!("unknown option {arg} for {of}; {see}")
            } else {
                format!("unexpected argument {arg:?} for {of}; {see}")
            }
        }
        ErrorKind::MissingRequiredArgument => format!(
            "{} needs {}; {see}",
            command.unwrap_or("switchyard"),
            context(ContextKind::InvalidArg).unwrap_or_default()
        ),
        ErrorKind::InvalidValue if context(ContextKind::InvalidValue).as_deref() == Some("") => {
            let arg = context(ContextKind::InvalidArg).unwrap_or_default();
            // "--runtime-dir <DIR>": the flag is the first word.
            let flag = arg.split_whitespace().next().unwrap_or_default();
            format!("{flag} needs a value; {see}")
        }
        _ => format!("{}; {see}", first_line(err)),
    })
}

/// The command named on the command line, if one of the tool's.
fn command_of(args: &[String]) -> Option<&'static str> {
    let first = args.iter().find(|arg| !arg.starts_with('-'))?;
    [
        "inspect", "health", "services", "certs", "bench", "version", "help",
    ]
    .into_iter()
    .find(|command| command == first)
}

/// clap's own message without its `error: ` prefix, usage and tips.
fn first_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The message for `args`, which clap must refuse.
    fn refused(args: &[&str]) -> String {
        let err = Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied()))
            .expect_err("a usage error");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        describe(&err, &args).expect("an error, not help")
    }

    #[test]
    fn usage_errors_name_the_command_and_its_help() {
        assert!(refused(&[]).starts_with("no command given"));
        assert_eq!(
            refused(&["frobnicate"]),
            "unknown command \"frobnicate\"; the commands are inspect, services and certs \
             (see `switchyard --help`)"
        );
        assert_eq!(
            refused(&["services", "--nope"]),
            "unknown option --nope for `switchyard services`; see `switchyard services --help`"
        );
        assert_eq!(
            refused(&["services", "extra"]),
            "unexpected argument \"extra\" for `switchyard services`; see `switchyard services \
             --help`"
        );
        assert_eq!(
            refused(&["inspect", "--runtime-dir"]),
            "--runtime-dir needs a value; see `switchyard inspect --help`"
        );
        assert!(refused(&["inspect"]).starts_with("inspect needs <TARGET>"));
        assert!(refused(&["certs", "a"]).starts_with("certs needs --out <DIR>"));
        assert!(refused(&["inspect", "a", "b"]).contains("\"b\""));
        assert!(
            refused(&["inspect", "a", "--json=yes"]).ends_with("see `switchyard inspect --help`")
        );
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for args in [
            &["--help"][..],
            &["-V"],
            &["inspect", "--help"],
            &["help", "certs"],
        ] {
            let err =
                Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied()))
                    .expect_err("help or version");
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            assert_eq!(describe(&err, &args), None, "{args:?}");
        }
    }
}
