//! The `switchyard` command-line tool, run as a process against servers
//! started in this test process, each test in its own runtime directory.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use switchyard::{Channel, Server};

/// A small service for the registry and the connection table.
#[switchyard::service]
pub trait Greeter {
    /// Greets.
    async fn hello(&self, name: String) -> String;
}

struct English;

impl Greeter for English {
    async fn hello(&self, name: String) -> String {
        format!("hello, {name}")
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Runs the tool with `args`; killed if it takes more than 30 s.
async fn switchyard(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_remove("SWITCHYARD_BENCH_CHILD")
        .env_remove("SWITCHYARD_TRANSPORT")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("switchyard {args:?} took over 30 s"))
        .expect("the switchyard binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks the exit code; returns stdout.
fn expect_code(out: &Output, code: i32, args: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "switchyard {args}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn dir_arg(dir: &Path) -> &str {
    dir.to_str().expect("utf-8 temp path")
}

#[tokio::test]
async fn help_and_usage_errors() {
    let out = switchyard(&["--help"]).await;
    let stdout = expect_code(&out, 0, "--help");
    for command in ["inspect", "health", "services", "certs"] {
        assert!(
            stdout.contains(&format!("switchyard {command}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("switchyard-bench-lab"), "{stdout}");
    let out = switchyard(&["inspect", "--help"]).await;
    assert!(expect_code(&out, 0, "inspect --help").contains("--runtime-dir"));
    let out = switchyard(&["help", "bench"]).await;
    assert!(expect_code(&out, 0, "help bench").contains("switchyard-bench-lab"));

    let out = switchyard(&[]).await;
    expect_code(&out, 2, "");
    assert!(text(&out.stderr).contains("no command given"));
    let out = switchyard(&["frobnicate"]).await;
    expect_code(&out, 2, "frobnicate");
    assert!(text(&out.stderr).contains("unknown command \"frobnicate\""));
    let out = switchyard(&["services", "--nope"]).await;
    expect_code(&out, 2, "services --nope");
    assert!(text(&out.stderr).contains("unknown option --nope"));
    let out = switchyard(&["inspect"]).await;
    expect_code(&out, 2, "inspect");
    let out = switchyard(&["inspect", "--runtime-dir"]).await;
    expect_code(&out, 2, "inspect --runtime-dir");
    assert!(text(&out.stderr).contains("--runtime-dir needs a value"));
    // The benchmark lab moved out of the tool: said, with the new command.
    let out = switchyard(&["bench", "--report", "docs/performance.md"]).await;
    expect_code(&out, 2, "bench --report docs/performance.md");
    assert!(
        text(&out.stderr).contains(
            "the benchmark lab moved: run `cargo run --release -p switchyard-bench-lab -- \
             --report docs/performance.md`"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// Every command answers `--help` (and `help COMMAND`) with its own usage
/// line on stdout, and refuses an unknown flag with exit 2 and a message
/// naming the flag and where the help is.
#[tokio::test]
async fn every_command_has_help() {
    let out = switchyard(&["--help"]).await;
    assert!(expect_code(&out, 0, "--help").contains("Usage: switchyard "));
    let out = switchyard(&["-h"]).await;
    assert!(expect_code(&out, 0, "-h").contains("Usage: switchyard "));
    let out = switchyard(&["--version"]).await;
    let version = format!("switchyard {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(expect_code(&out, 0, "--version").trim(), version);
    for (command, option) in [
        ("inspect", "--json"),
        ("health", "--service"),
        ("services", "--remove-queue"),
        ("certs", "--out"),
    ] {
        for args in [[command, "--help"], [command, "-h"], ["help", command]] {
            let out = switchyard(&args).await;
            let stdout = expect_code(&out, 0, &args.join(" "));
            assert!(
                stdout.contains(&format!("Usage: switchyard {command}")),
                "{args:?}: {stdout}"
            );
            assert!(stdout.contains(option), "{args:?}: {stdout}");
        }
        let out = switchyard(&[command, "--frobnicate"]).await;
        expect_code(&out, 2, &format!("{command} --frobnicate"));
        assert_eq!(
            text(&out.stderr).trim_end(),
            format!(
                "switchyard: unknown option --frobnicate for `switchyard {command}`; see \
                 `switchyard {command} --help`"
            )
        );
        assert!(
            out.stdout.is_empty(),
            "{command}: a usage error prints no output"
        );
    }
}

#[tokio::test]
async fn services_lists_and_prunes_the_registry() {
    let temp = tempfile::tempdir().expect("temp dir");
    let rt = temp.path().join("rt");
    let dir = dir_arg(&rt);

    // Nothing published yet: said plainly, and the directory is not created.
    let out = switchyard(&["services", "--runtime-dir", dir]).await;
    assert!(expect_code(&out, 0, "services").contains("no registry in"));
    assert!(!rt.exists());

    let server = Server::builder()
        .add_service(GreeterServer::new(English))
        .runtime_dir(&rt)
        .start()
        .await
        .expect("server starts");
    let me = std::process::id().to_string();

    let out = switchyard(&["services", "--runtime-dir", dir]).await;
    let stdout = expect_code(&out, 0, "services");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("greeter "))
        .unwrap_or_else(|| panic!("greeter listed:\n{stdout}"));
    assert!(
        line.contains(&me) && line.contains("Greeter") && line.contains("unix://"),
        "{line}"
    );

    let out = switchyard(&["services", "--json", "--runtime-dir", dir]).await;
    let entries: Vec<switchyard::discovery::Entry> =
        serde_json::from_str(&expect_code(&out, 0, "services --json")).expect("a JSON array");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "greeter");
    assert_eq!(entries[0].pid, std::process::id());

    // An entry left behind by a process that died.
    let dead = rt.join("registry").join("x@4000000.json");
    std::fs::write(
        &dead,
        r#"{"name":"x","pid":4000000,"start_time":null,"boot_id":"","endpoints":[],"services":["X"],"published_ms":1}"#,
    )
    .expect("write the dead entry");
    let out = switchyard(&["services", "--prune", "--runtime-dir", dir]).await;
    let stdout = expect_code(&out, 0, "services --prune");
    assert!(
        stdout.contains("pruned 1 entry of dead processes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("greeter "),
        "the live entry stays:\n{stdout}"
    );
    assert!(!dead.exists(), "the dead entry is removed");
    let out = switchyard(&["services", "--prune", "--runtime-dir", dir]).await;
    assert!(expect_code(&out, 0, "services --prune").contains("pruned 0 entries"));

    server.shutdown().await;
}

#[tokio::test]
async fn health_probes_exit_zero_only_while_serving() {
    let temp = tempfile::tempdir().expect("temp dir");
    let rt = temp.path().join("rt");
    let dir = dir_arg(&rt);
    let server = Server::builder()
        .add_service(GreeterServer::new(English))
        .runtime_dir(&rt)
        .start()
        .await
        .expect("server starts");
    let out = switchyard(&["health", "greeter", "--runtime-dir", dir]).await;
    assert_eq!(expect_code(&out, 0, "health greeter").trim(), "SERVING");
    let args = [
        "health",
        "greeter",
        "--service",
        "Greeter",
        "--runtime-dir",
        dir,
    ];
    let out = switchyard(&args).await;
    assert_eq!(
        expect_code(&out, 0, "health --service Greeter").trim(),
        "SERVING"
    );
    server.health().set_not_serving("Greeter").unwrap();
    let out = switchyard(&args).await;
    assert_eq!(
        expect_code(&out, 1, "health --service Greeter, not serving").trim(),
        "NOT_SERVING"
    );
    assert!(
        text(&out.stderr).contains("reports \"Greeter\" as not serving"),
        "{}",
        text(&out.stderr)
    );
    let out = switchyard(&[
        "health",
        "greeter",
        "--service",
        "Nope",
        "--runtime-dir",
        dir,
    ])
    .await;
    expect_code(&out, 1, "health --service Nope");
    assert!(
        text(&out.stderr).contains("does not serve \"Nope\""),
        "{}",
        text(&out.stderr)
    );
    let out = switchyard(&["health", "nobody-here", "--runtime-dir", dir]).await;
    expect_code(&out, 1, "health nobody-here");
    assert!(
        text(&out.stderr).contains("could not reach nobody-here"),
        "{}",
        text(&out.stderr)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn inspect_prints_the_connections_table() {
    let temp = tempfile::tempdir().expect("temp dir");
    let rt = temp.path().join("rt");
    let dir = dir_arg(&rt);
    let server = Server::builder()
        .add_service(GreeterServer::new(English))
        .runtime_dir(&rt)
        .start()
        .await
        .expect("server starts");
    // A client connection in this process, chosen by name.
    let channel = Channel::builder()
        .runtime_dir(&rt)
        .connect("greeter")
        .await
        .expect("connect");
    let client = GreeterClient::new(channel);
    assert_eq!(
        client.hello("ada".into()).await.expect("call"),
        "hello, ada"
    );
    let me = std::process::id();

    let out = switchyard(&["inspect", "greeter", "--runtime-dir", dir]).await;
    let stdout = expect_code(&out, 0, "inspect greeter");
    let mut lines = stdout.lines();
    let header = lines.next().expect("header");
    assert!(header.contains(&format!("(pid {me})")), "{header}");
    let columns = stdout
        .lines()
        .find(|l| l.starts_with("id "))
        .unwrap_or_else(|| panic!("column header:\n{stdout}"));
    assert!(columns.ends_with("reason"), "{columns}");
    let client_row = stdout
        .lines()
        .find(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.get(1) == Some(&"client") && cells.get(3) == Some(&"shm")
        })
        .unwrap_or_else(|| panic!("the client connection:\n{stdout}"));
    assert!(client_row.contains("same host"), "{client_row}");
    assert!(
        client_row.contains(" 1/0 "),
        "one call succeeded: {client_row}"
    );
    // The transports not chosen follow the row, indented.
    let below = stdout
        .lines()
        .skip_while(|l| *l != client_row)
        .nth(1)
        .unwrap_or_default();
    assert!(below.starts_with("    rejected "), "{stdout}");
    assert!(
        stdout.contains("the client set up shared memory over this server's Unix socket"),
        "{stdout}"
    );

    // By address, as JSON.
    let url = format!(
        "unix://{}",
        server.unix_path().expect("unix listener").display()
    );
    let out = switchyard(&["inspect", &url, "--json"]).await;
    let snapshot: switchyard::debug::Snapshot =
        serde_json::from_str(&expect_code(&out, 0, "inspect --json")).expect("a snapshot");
    assert_eq!(snapshot.process.pid, me);
    assert!(snapshot.connections.iter().any(|c| c.transport == "shm"));

    // A name nobody publishes.
    let out = switchyard(&["inspect", "missing", "--runtime-dir", dir]).await;
    expect_code(&out, 1, "inspect missing");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("could not reach missing") && stderr.contains("start the server"),
        "{stderr}"
    );

    // A server without the introspection service, by address.
    let quiet = Server::builder()
        .add_service(GreeterServer::new(English))
        .unpublished()
        .unix_path(temp.path().join("quiet.sock"))
        .introspection(false)
        .start()
        .await
        .expect("second server starts");
    let url = format!("unix://{}", temp.path().join("quiet.sock").display());
    let out = switchyard(&["inspect", &url]).await;
    expect_code(&out, 1, "inspect quiet");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("introspection(false)"), "{stderr}");

    drop(client);
    quiet.shutdown().await;
    server.shutdown().await;
}

/// A stopped server keeps its message queue; `services --remove-queue`
/// removes it for good, saying how many calls went with it, and refuses
/// while a live process serves the service.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn services_remove_queue_removes_a_stopped_services_queue() {
    use switchyard::sys::mqueue;
    use switchyard::transport::mqueue::service_queue_name;
    let Ok(limits) = mqueue::limits() else {
        println!("skipping: POSIX message queues are not available");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("rt");
    let name = service_queue_name(&rt, "Ledger");
    let queue = mqueue::create_exclusive(&name, limits.msg_max.min(4), 64).unwrap();
    mqueue::open_send(&name)
        .unwrap()
        .send(b"a call waiting", 0)
        .unwrap();
    drop(queue);
    // A live server publishing Greeter does not protect Ledger's queue.
    let server = Server::builder()
        .add_service(GreeterServer::new(English))
        .runtime_dir(&rt)
        .start()
        .await
        .unwrap();
    // A stopped server recorded that it kept the queue: `services` lists it.
    let registry = switchyard::discovery::Registry::open(&rt).unwrap();
    registry
        .record_kept_queue(&switchyard::discovery::KeptQueue {
            service: "Ledger".into(),
            queue: name.clone(),
            pid: 1,
            stopped_ms: 0,
        })
        .unwrap();
    let out = switchyard(&["services", "--runtime-dir", dir_arg(&rt)]).await;
    let listed = expect_code(&out, 0, "services");
    assert!(
        listed.contains("queues kept by stopped servers"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("Ledger  {name}  1 waiting")),
        "{listed}"
    );
    assert!(listed.contains("--remove-queue Ledger"), "{listed}");
    let out = switchyard(&[
        "services",
        "--remove-queue",
        "Ledger",
        "--runtime-dir",
        dir_arg(&rt),
    ])
    .await;
    let stdout = expect_code(&out, 0, "services --remove-queue Ledger");
    assert!(stdout.contains(&name), "{stdout}");
    assert!(stdout.contains("1 calls discarded"), "{stdout}");
    assert!(matches!(
        mqueue::open_send(&name),
        Err(mqueue::MqError::NotFound { .. })
    ));
    assert!(
        registry.kept_queues().unwrap().is_empty(),
        "its record went too"
    );
    // Greeter is served by a live process: refused.
    let out = switchyard(&[
        "services",
        "--remove-queue",
        "Greeter",
        "--runtime-dir",
        dir_arg(&rt),
    ])
    .await;
    expect_code(&out, 1, "services --remove-queue Greeter");
    assert!(
        text(&out.stderr).contains("stop it first"),
        "{}",
        text(&out.stderr)
    );
    server.shutdown().await;
}

/// A failure's message may carry what a peer or a user sent: control
/// characters in it reach the terminal as visible escapes, never raw.
#[tokio::test]
async fn failure_messages_cannot_reach_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let name = "evil\u{1b}[2J\u{202e}name";
    let out = switchyard(&["inspect", name, "--runtime-dir", dir_arg(dir.path())]).await;
    expect_code(&out, 1, "inspect <a name with escapes>");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains('\u{1b}'), "raw ESC in {stderr:?}");
    assert!(
        !stderr.contains('\u{202e}'),
        "raw bidi override in {stderr:?}"
    );
    assert!(stderr.contains("\\u{1b}[2J"), "{stderr:?}");
}
