//! The server the end-to-end tests start: serves `Testing` on a Unix socket
//! (and TCP with `--tcp`), prints `listening <endpoints>` on its first line,
//! and shuts down gracefully on SIGTERM.
//!
//! Flags: `--tcp`, `--quic` (a QUIC listener on 127.0.0.1, printed as
//! `quic://127.0.0.1:PORT?pin=<hex fingerprint>`), `--queues` (a message
//! queue for one-way calls), `--max-in-flight N`, `--max-frame BYTES`,
//! `--grace-ms MS`, `--bulk-threshold BYTES`.
//! With `call TARGET` it is a client instead: it calls `add(2, 3)` on TARGET
//! and prints `<transport> <result>` (for tests of SWITCHYARD_TRANSPORT).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use switchyard::transport::Listener;
use switchyard::transport::quic::QuicListener;
use switchyard::{Channel, Server};
use switchyard_integration_tests::{TestingClient, testing_service};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("call") {
        let target = args.get(1).cloned().unwrap_or_else(|| "testing".into());
        return match Channel::connect(&target).await {
            Ok(channel) => {
                let client = TestingClient::new(channel.clone());
                match client.add(2, 3).await {
                    Ok(sum) => {
                        println!("{} {sum}", channel.selection().transport);
                        ExitCode::SUCCESS
                    }
                    Err(status) => {
                        println!("error {status}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(status) => {
                println!("error {status}");
                ExitCode::FAILURE
            }
        };
    }
    // Queues are opt-in here (`--queues`): every queue counts against the
    // user's RLIMIT_MSGQUEUE, and the tests start many servers at once.
    let mut builder = Server::builder()
        .add_service(testing_service())
        .message_queues(false);
    let mut quic = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        builder = match flag.as_str() {
            "--tcp" => builder.tcp("127.0.0.1:0"),
            "--quic" => {
                quic = true;
                builder
            }
            "--bulk-threshold" => builder.bulk_threshold(value() as usize),
            "--queues" => builder.message_queues(true),
            "--max-in-flight" => builder.max_in_flight(value() as usize),
            "--max-frame" => builder.max_frame(value() as u32),
            "--grace-ms" => builder.grace_period(Duration::from_millis(value())),
            other => panic!("unknown flag {other}"),
        };
    }
    let server = match builder.start().await {
        Ok(server) => server,
        Err(status) => {
            eprintln!("test-server: {status}");
            return ExitCode::FAILURE;
        }
    };
    let mut endpoints = server.endpoints().to_vec();
    let mut quic_listener = None;
    if quic {
        match QuicListener::bind("127.0.0.1:0").await {
            Ok(listener) => {
                endpoints.push(format!(
                    "quic://{}?pin={}",
                    listener.local_addr(),
                    listener.fingerprint()
                ));
                quic_listener = Some(listener);
            }
            Err(err) => {
                eprintln!("test-server: cannot bind QUIC: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Handlers first, then the line tests wait for: a SIGTERM sent right
    // after it must reach the graceful path.
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("test-server: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    println!("listening {}", endpoints.join(" "));
    let _ = std::io::stdout().flush();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            accepted = accept(&mut quic_listener) => match accepted {
                Ok(link) => server.serve_link(link),
                Err(err) => eprintln!("test-server: a QUIC handshake failed: {err}"),
            },
        }
    }
    // Dropping the listener first: new QUIC connections are refused while
    // the calls in flight finish.
    drop(quic_listener);
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// The next QUIC link, or never without a listener.
async fn accept(
    listener: &mut Option<QuicListener>,
) -> std::io::Result<switchyard::transport::quic::QuicLink> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}
