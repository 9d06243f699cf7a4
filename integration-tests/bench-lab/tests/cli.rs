//! The `switchyard-bench` binary's command line, run as a process: `--help`
//! and usage errors, which measure nothing.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-bench");

/// Runs the lab with `args` as a parent (never as a bench child).
fn lab(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SWITCHYARD_BENCH_CHILD")
        .output()
        .expect("the switchyard-bench binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_options() {
    for flag in ["--help", "-h"] {
        let out = lab(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage: switchyard-bench"), "{stdout}");
        for option in ["--quick", "--only", "--only-streams", "--report"] {
            assert!(stdout.contains(option), "{flag}: {option} in\n{stdout}");
        }
    }
    let out = lab(&["--version"]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("switchyard-bench {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_and_say_why() {
    for (args, says) in [
        (&["--frobnicate"][..], "--frobnicate"),
        (&["--only", "carrier-pigeon"], "is not a transport"),
        (
            &["--only", "quic", "--report", "x.md"],
            "cannot be used with",
        ),
        (&["--report"], "--report"),
    ] {
        let out = lab(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing measured");
    }
}
