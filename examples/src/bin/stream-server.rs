//! The server of the streaming examples: `Files` (uploads, log tails) over
//! a directory, and a `Chat` room. The `upload`, `tail` and `chat` clients
//! find it by name in the local registry.
//!
//! ```text
//! cargo run -p switchyard-examples --bin stream-server -- [--dir DIR] [--tcp ADDR]
//! ```
//! `DIR` defaults to `switchyard-stream-files` in the temporary directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use switchyard::Server;
use switchyard_examples::chat::{ChatServer, Room};
use switchyard_examples::files::{FilesServer, Store};

const USAGE: &str = "usage: stream-server [--dir DIR] [--tcp ADDR]";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match serve(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stream-server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &[String]) -> Result<(), String> {
    let mut dir = std::env::temp_dir().join("switchyard-stream-files");
    let mut tcp = None;
    let mut rest = args;
    while let [flag, value, tail @ ..] = rest {
        match flag.as_str() {
            "--dir" => dir = PathBuf::from(value),
            "--tcp" => tcp = Some(value.clone()),
            _ => return Err(format!("unknown option {flag:?}\n{USAGE}")),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(USAGE.to_owned());
    }
    std::fs::create_dir_all(&dir).map_err(|err| {
        format!(
            "could not create the directory {}: {err}; pick another with --dir",
            dir.display()
        )
    })?;
    let mut builder = Server::builder()
        .add_service(FilesServer::new(Store::new(&dir)))
        .add_service(ChatServer::new(Room::new()))
        // Tails and chats never end by themselves: on Ctrl-C, give calls
        // in flight 2 s (not the default 30) before cancelling them.
        .grace_period(Duration::from_secs(2));
    if let Some(addr) = tcp {
        builder = builder.tcp(addr);
    }
    let server = builder.start().await.map_err(|s| s.to_string())?;
    println!(
        "serving Files and Chat on {}",
        server.endpoints().join(", ")
    );
    println!("files in {}", dir.display());
    println!("try, in other terminals:");
    println!("  cargo run -p switchyard-examples --bin upload -- --generate 256MiB");
    println!("  cargo run -p switchyard-examples --bin tail -- app.log");
    println!("    then: echo hello >> {}", dir.join("app.log").display());
    println!("  cargo run -p switchyard-examples --bin chat -- ann   (and -- bob in another)");
    server.run_until_signal().await;
    Ok(())
}
