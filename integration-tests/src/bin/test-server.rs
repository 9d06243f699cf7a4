//! The server the end-to-end tests start: serves `Testing` on a Unix socket
//! (and TCP with `--tcp`), prints `listening <endpoints>` on its first line,
//! and shuts down gracefully on SIGTERM.
//!
//! Flags: `--tcp`, `--tcp-at ADDR`, `--quic ADDR` (printed as
//! `quic://ADDR?pin=<hex fingerprint>`), `--no-unix`, `--queues` (a message
//! queue for one-way calls), `--remove-queues` (remove it on graceful
//! shutdown), `--max-in-flight N`, `--max-frame BYTES`,
//! `--grace-ms MS`, `--bulk-threshold BYTES`, `--quic-validation
//! always|never|N` (a Retry always, never, or while more than N handshakes
//! are under way), `--quic-max-handshakes N`, `--require-token TOKEN`
//! (calls without `authorization: Bearer TOKEN` are refused),
//! `--compression off|auto|always` (how replies are compressed).
//! With `call TARGET` it is a client instead: it calls `add(2, 3)` on TARGET
//! and prints `<transport> <result>` (for tests of SWITCHYARD_TRANSPORT).
//! With `hold TARGET N DIR` it starts N calls of `sleep_or_mark(60 s)` on
//! TARGET (call i marks DIR/i if the server cancels it), prints `holding
//! <transport>` once they are sent, and waits to be killed.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use switchyard::{Channel, Server};
use switchyard_integration_tests::{TestingClient, testing_service};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hold") {
        let target = args.get(1).cloned().unwrap_or_else(|| "testing".into());
        let count: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(8);
        let markers = std::path::PathBuf::from(args.get(3).cloned().unwrap_or_else(|| ".".into()));
        let channel = match Channel::connect(&target).await {
            Ok(channel) => channel,
            Err(status) => {
                println!("error {status}");
                return ExitCode::FAILURE;
            }
        };
        let client = TestingClient::new(channel.clone());
        // One round trip first, so the calls below are sent on a live
        // connection before the line is printed.
        let _ = client.add(0, 0).await;
        let calls: Vec<_> = (0..count)
            .map(|i| {
                let client = client.clone();
                let marker = markers.join(i.to_string()).display().to_string();
                tokio::spawn(async move { client.sleep_or_mark(60_000, marker).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        println!("holding {}", channel.selection().transport);
        let _ = std::io::stdout().flush();
        for call in calls {
            let _ = call.await;
        }
        return ExitCode::SUCCESS;
    }
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
    let mut quic = switchyard::transport::quic::QuicConfig::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--quic-validation" {
            use switchyard::transport::quic::AddressValidation;
            quic.address_validation = match it.next().map(String::as_str) {
                Some("always") => AddressValidation::Always,
                Some("never") => AddressValidation::Never,
                other => AddressValidation::WhenBusy {
                    handshakes: other.and_then(|n| n.parse().ok()).unwrap_or_else(|| {
                        panic!("--quic-validation needs always, never or a number")
                    }),
                },
            };
            continue;
        }
        if flag == "--compression" {
            builder = builder.compression(match it.next().map(String::as_str) {
                Some("off") => switchyard::Compression::off(),
                Some("always") => switchyard::Compression::always(),
                Some("auto") => switchyard::Compression::auto(),
                other => panic!("--compression needs off, auto or always, not {other:?}"),
            });
            continue;
        }
        if let Some(addr) = match flag.as_str() {
            "--tcp-at" | "--quic" | "--require-token" => it.next(),
            _ => None,
        } {
            builder = match flag.as_str() {
                "--quic" => builder.quic(addr),
                "--require-token" => builder.layer(switchyard::layers::RequireBearer::new(addr)),
                _ => builder.tcp(addr),
            };
            continue;
        }
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        builder = match flag.as_str() {
            "--tcp" => builder.tcp("127.0.0.1:0"),
            "--bulk-threshold" => builder.bulk_threshold(value() as usize),
            "--queues" => {
                raise_queue_budget();
                builder.message_queues(true)
            }
            "--remove-queues" => builder.remove_queues_on_shutdown(true),
            "--no-unix" => builder.no_unix(),
            "--max-in-flight" => builder.max_in_flight(value() as usize),
            "--max-frame" => builder.max_frame(value() as u32),
            "--grace-ms" => builder.grace_period(Duration::from_millis(value())),
            "--keepalive-ms" => {
                let ms = Duration::from_millis(value());
                builder.keepalive(ms, ms)
            }
            "--idle-ms" => builder.idle_timeout(Duration::from_millis(value())),
            "--quic-max-handshakes" => {
                quic.max_handshakes = value() as usize;
                builder
            }
            other => panic!("unknown flag {other}"),
        };
    }
    let server = match builder.quic_config(quic).start().await {
        Ok(server) => server,
        Err(status) => {
            eprintln!("test-server: {status}");
            return ExitCode::FAILURE;
        }
    };
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
    println!("listening {}", server.endpoints().join(" "));
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// The queue budget (RLIMIT_MSGQUEUE) is the user's, shared by every test
/// running beside this server, and the kernel checks the total against the
/// creating process's own limit: raise ours so that queues other tests hold
/// (or stale ones on a developer machine) do not make this server start
/// without its queue. Root may raise the hard limit; others go up to it.
fn raise_queue_budget() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const WANTED: u64 = 64 << 20;
    let now = getrlimit(Resource::Msgqueue);
    // `None` is unlimited: nothing to raise.
    if now.current.is_none_or(|current| current >= WANTED) {
        return;
    }
    let raised = Rlimit {
        current: Some(WANTED),
        maximum: now.maximum.map(|max| max.max(WANTED)),
    };
    if setrlimit(Resource::Msgqueue, raised).is_err() && now.maximum > now.current {
        // Not root: up to the hard limit.
        let _ = setrlimit(
            Resource::Msgqueue,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        );
    }
}
