//! Follows a file in the stream server's directory (server streaming):
//! prints each line appended to it as it is written, until Ctrl-C.
//!
//! ```text
//! cargo run -p switchyard-examples --bin stream-server      # first, in another terminal
//! cargo run -p switchyard-examples --bin tail -- app.log [--all]
//! ```
//! `--all` prints the lines already in the file first.

use std::process::ExitCode;

use switchyard_examples::files::FilesClient;

const USAGE: &str = "usage: tail NAME [--all]   (a file in the stream server's directory)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, from_start) = match args.as_slice() {
        [name] if !name.starts_with("--") => (name.clone(), false),
        [name, all] | [all, name] if all == "--all" => (name.clone(), true),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match tail(name, from_start).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tail: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn tail(name: String, from_start: bool) -> Result<(), String> {
    let files = FilesClient::connect("files").await.map_err(|status| {
        format!(
            "could not reach the Files service: {status}\nstart it first: cargo run -p \
             switchyard-examples --bin stream-server"
        )
    })?;
    // A refusal (no such file, a bad name) comes as the stream's error,
    // before any line.
    let mut lines = files
        .tail(name.clone(), from_start)
        .await
        .map_err(|s| s.to_string())?;
    eprintln!(
        "following {name} over {} (Ctrl-C to stop)",
        files.selection().transport
    );
    // Ctrl-C ends the process; the server sees the call cancelled, as it
    // would if `lines` were dropped.
    while let Some(line) = lines.message().await.map_err(|s| s.to_string())? {
        println!("{line}");
    }
    Ok(())
}
