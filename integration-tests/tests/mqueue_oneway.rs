//! One-way calls through the server's POSIX message queue: chosen by
//! themselves on the same host, ordered by priority, durable across a server
//! restart, backpressure when full, and safe against foreign and malformed
//! queues.

use std::time::{Duration, Instant};

use switchyard::debug::IntrospectionClient;
use switchyard::transport::mqueue::service_queue_name;
use switchyard::{Code, Transport};
use switchyard_integration_tests::{
    ServerProcess, TESTING_DESCRIPTOR, TestingClient, test_server_exe, within,
};

const LIMIT: Duration = Duration::from_secs(60);

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    loop {
        let got = lines(path);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn queues_available() -> bool {
    match switchyard::transport::mqueue::limits() {
        Ok(_) => true,
        Err(err) => {
            println!("skipping: POSIX message queues are not available ({err})");
            false
        }
    }
}

#[tokio::test]
async fn one_way_calls_take_the_servers_queue_by_themselves() {
    if !queues_available() {
        return;
    }
    let server = ServerProcess::start(&["--queues"]);
    let out = server.dir().join("out.txt");
    within(LIMIT, async {
        let channel = server.channel().await;
        let selection = channel.oneway_selection(&TESTING_DESCRIPTOR);
        assert_eq!(selection.transport, Transport::MessageQueue, "{selection}");
        assert!(
            selection
                .reason
                .to_string()
                .contains("same host, IPC namespace and user"),
            "{selection}"
        );
        let connection = channel.selection().transport;
        assert!(
            selection.rejected.iter().any(|(t, _)| *t == connection),
            "{selection}"
        );
        let client = TestingClient::new(channel.clone());
        for i in 0..40 {
            client
                .record(out.display().to_string(), format!("line {i}"))
                .await
                .unwrap();
        }
        let expected: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
        assert_eq!(wait_for_lines(&out, 40).await, expected);
        // The server's own view: a queue "connection" that handled them.
        let snapshot = IntrospectionClient::new(channel).snapshot().await.unwrap();
        let queue = snapshot
            .connections
            .iter()
            .find(|c| c.transport == "mqueue" && c.role == "server")
            .expect("the server lists its queue");
        assert_eq!(queue.calls_succeeded, 40);
    })
    .await;
}

#[tokio::test]
async fn calls_sent_while_the_server_is_down_arrive_after_it_restarts_by_priority() {
    if !queues_available() {
        return;
    }
    let mut server = ServerProcess::start(&["--queues"]);
    let out = server.dir().join("out.txt");
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        server.kill();
        let path = out.display().to_string();
        // The queue holds limits().msg_max messages (10 here): send that many.
        let n = switchyard::transport::mqueue::limits()
            .unwrap()
            .msg_max
            .min(10);
        let mut urgent = Vec::new();
        let mut normal = Vec::new();
        for i in 0..n {
            if i % 3 == 1 {
                urgent.push(format!("urgent {i}"));
                client
                    .record_urgent(path.clone(), format!("urgent {i}"))
                    .await
                    .unwrap();
            } else {
                normal.push(format!("normal {i}"));
                client
                    .record(path.clone(), format!("normal {i}"))
                    .await
                    .unwrap();
            }
        }
        let selection = client.channel().oneway_selection(&TESTING_DESCRIPTOR);
        assert_eq!(selection.transport, Transport::MessageQueue, "{selection}");
        // Unary calls fail clearly meanwhile.
        let err = client.add(1, 1).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::NotFound | Code::Unavailable),
            "{err}"
        );
        let _restarted = server.restart(&["--queues"]);
        let got = wait_for_lines(&out, n).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lines(&out).len(), n, "each call arrives once");
        let expected: Vec<String> = urgent.into_iter().chain(normal).collect();
        assert_eq!(got, expected, "urgent first, FIFO within a priority");
    })
    .await;
}

#[test]
fn fifty_calls_survive_a_sigkill_in_priority_order() {
    // 50 calls must all sit in the queue while the server is down: that
    // needs a queue of more than the default 10 messages, so the scenario
    // runs in an IPC namespace of its own with fs.mqueue.msg_max = 64.
    if !queues_available() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        println!("skipping: needs root to make an IPC namespace (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let scenario = env!("CARGO_BIN_EXE_mq-scenario");
    let run = std::process::Command::new("unshare")
        .args(["--ipc", "sh", "-c"])
        .arg("echo 64 > /proc/sys/fs/mqueue/msg_max && exec \"$0\" \"$@\"")
        .arg(scenario)
        .arg(test_server_exe())
        .arg(&out)
        .output();
    let run = match run {
        Ok(run) => run,
        Err(err) => {
            println!("skipping: unshare could not run ({err})");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&run.stderr);
    if stderr.contains("unshare failed") || stderr.contains("Operation not permitted") {
        println!("skipping: no IPC namespace here ({stderr})");
        return;
    }
    assert!(
        run.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&run.stdout)
    );
}

#[tokio::test]
async fn a_full_queue_waits_until_the_deadline_and_try_returns_resource_exhausted() {
    if !queues_available() {
        return;
    }
    let mut server = ServerProcess::start(&["--queues"]);
    let out = server.dir().join("out.txt");
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        server.kill();
        let path = out.display().to_string();
        let capacity = switchyard::transport::mqueue::limits().unwrap().msg_max;
        for i in 0..capacity {
            client
                .try_record(path.clone(), format!("fill {i}"))
                .await
                .unwrap();
        }
        let err = client
            .try_record(path.clone(), "one too many".into())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("full"), "{err}");
        let start = Instant::now();
        let err = client
            .with_timeout(Duration::from_millis(100))
            .record(path.clone(), "waits".into())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        assert!(start.elapsed() >= Duration::from_millis(100));
        // A restarted server drains what waited; nothing extra was queued.
        let _restarted = server.restart(&["--queues"]);
        assert_eq!(wait_for_lines(&out, capacity).await.len(), capacity);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lines(&out).len(), capacity);
    })
    .await;
}

/// Makes a queue under the name the `Testing` service's server in `dir`
/// would use, with `mode` (as someone else might, first): its name and fd.
fn squat_queue(dir: &std::path::Path, mode: u32) -> (String, nix::mqueue::MqdT) {
    let name = service_queue_name(dir, "Testing");
    let queue = nix::mqueue::mq_open(
        name.as_str(),
        nix::mqueue::MQ_OFlag::O_CREAT | nix::mqueue::MQ_OFlag::O_RDWR,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        Some(&nix::mqueue::MqAttr::new(0, 4, 1024, 0)),
    )
    .unwrap();
    rustix::fs::fchmod(&queue, rustix::fs::Mode::from_raw_mode(mode)).unwrap();
    (name, queue)
}

#[tokio::test]
async fn a_queue_made_by_someone_else_is_not_hijacked() {
    if !queues_available() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("sy-it-").tempdir().unwrap();
    // Someone else's queue under the server's name, open to others.
    let (name, foreign) = squat_queue(dir.path(), 0o644);
    let server = ServerProcess::start_in(dir, &["--queues"]);
    let out = server.dir().join("out.txt");
    within(LIMIT, async {
        let channel = server.channel().await;
        let selection = channel.oneway_selection(&TESTING_DESCRIPTOR);
        assert_ne!(selection.transport, Transport::MessageQueue, "{selection}");
        assert!(
            selection
                .rejected
                .iter()
                .any(|(_, why)| why.to_string().contains("no message queue")),
            "{selection}"
        );
        // One-way calls still work, over the connection.
        let client = TestingClient::new(channel);
        client
            .record(out.display().to_string(), "over the socket".into())
            .await
            .unwrap();
        assert_eq!(wait_for_lines(&out, 1).await, vec!["over the socket"]);
        let attrs = nix::mqueue::mq_getattr(&foreign).unwrap();
        assert_eq!(attrs.curmsgs(), 0, "nothing went into the foreign queue");
    })
    .await;
    nix::mqueue::mq_unlink(name.as_str()).unwrap();
}

#[tokio::test]
async fn a_malformed_message_is_dropped_and_counted_and_draining_goes_on() {
    if !queues_available() {
        return;
    }
    let server = ServerProcess::start(&["--queues"]);
    let out = server.dir().join("out.txt");
    within(LIMIT, async {
        let channel = server.channel().await;
        let name = service_queue_name(server.dir(), "Testing");
        let garbage = switchyard::sys::mqueue::open_send(&name).unwrap();
        garbage.send(b"definitely not a frame", 3).unwrap();
        let client = TestingClient::new(channel.clone());
        client
            .record(out.display().to_string(), "after the garbage".into())
            .await
            .unwrap();
        assert_eq!(wait_for_lines(&out, 1).await, vec!["after the garbage"]);
        let snapshot = IntrospectionClient::new(channel).snapshot().await.unwrap();
        let queue = snapshot
            .connections
            .iter()
            .find(|c| c.transport == "mqueue")
            .expect("the queue is listed");
        assert!(
            queue
                .events
                .iter()
                .any(|e| e.kind == "dropped" && e.detail.starts_with("1 malformed")),
            "{:?}",
            queue.events
        );
    })
    .await;
}

#[test]
fn graceful_shutdown_keeps_the_queue_unless_asked_to_remove_it() {
    if !queues_available() {
        return;
    }
    let exists = |name: &str| switchyard::sys::mqueue::open_send(name).is_ok();
    // By default a graceful stop keeps the (empty) queue for the next start.
    let mut server = ServerProcess::start(&["--queues"]);
    let name = service_queue_name(server.dir(), "Testing");
    assert!(exists(&name), "the server made its queue");
    assert!(
        server
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert!(exists(&name), "a graceful stop keeps the queue");
    // ... and records it in the registry, for `switchyard services`.
    let registry = switchyard::discovery::Registry::open(server.dir()).unwrap();
    let kept = registry.kept_queues().unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].service, "Testing");
    assert_eq!(kept[0].queue, name);
    registry.forget_kept_queue("Testing");
    // Removing it for good is explicit (the library call behind
    // `switchyard services --remove-queue`).
    assert_eq!(
        switchyard::transport::mqueue::remove(&name).unwrap(),
        Some(0)
    );
    assert!(!exists(&name));
    // With --remove-queues (ServerBuilder::remove_queues_on_shutdown), a
    // graceful stop removes it.
    let mut server = ServerProcess::start(&["--queues", "--remove-queues"]);
    let name = service_queue_name(server.dir(), "Testing");
    assert!(exists(&name), "the server made its queue");
    assert!(
        server
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert!(
        matches!(
            switchyard::sys::mqueue::open_send(&name),
            Err(switchyard::sys::mqueue::MqError::NotFound { .. })
        ),
        "remove_queues_on_shutdown removes the queue on graceful shutdown"
    );
    let registry = switchyard::discovery::Registry::open(server.dir()).unwrap();
    assert!(registry.kept_queues().unwrap().is_empty(), "nothing kept");
    let _ = test_server_exe();
}

#[tokio::test]
async fn ten_calls_sent_while_the_server_restarts_after_sigterm_all_arrive_in_order() {
    if !queues_available() {
        return;
    }
    let mut server = ServerProcess::start(&["--queues"]);
    let out = server.dir().join("out.txt");
    let path = out.display().to_string();
    within(LIMIT, async {
        // An old client: connected, its one-way calls on the queue.
        let old = TestingClient::new(server.channel().await);
        old.record(path.clone(), "before".into()).await.unwrap();
        assert_eq!(wait_for_lines(&out, 1).await, vec!["before"]);
        // A graceful stop, as a service manager does on restart.
        assert!(
            server
                .terminate(Duration::from_secs(10))
                .is_some_and(|s| s.success()),
            "the server stops gracefully on SIGTERM"
        );
        // Five calls from the old client, then five from a client that
        // connects by name while no server runs.
        let mut sent = Vec::new();
        for i in 0..5 {
            let line = format!("old {i}");
            old.record(path.clone(), line.clone())
                .await
                .unwrap_or_else(|err| panic!("{line}: {err}"));
            sent.push(line);
        }
        let fresh = switchyard::Channel::builder()
            .runtime_dir(server.dir())
            .connect("testing")
            .await
            .expect("a client connecting by name while the server restarts");
        let selection = fresh.oneway_selection(&TESTING_DESCRIPTOR);
        assert_eq!(selection.transport, Transport::MessageQueue, "{selection}");
        let new = TestingClient::new(fresh);
        for i in 0..5 {
            let line = format!("new {i}");
            new.record(path.clone(), line.clone())
                .await
                .unwrap_or_else(|err| panic!("{line}: {err}"));
            sent.push(line);
        }
        assert_eq!(lines(&out), vec!["before"], "nothing is handled while down");
        let registry = switchyard::discovery::Registry::open(server.dir()).unwrap();
        assert_eq!(
            registry.kept_queues().unwrap().len(),
            1,
            "the stop left a record"
        );
        let _restarted = server.restart(&["--queues"]);
        let got = wait_for_lines(&out, 11).await;
        assert!(
            registry.kept_queues().unwrap().is_empty(),
            "the next start took the queue back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lines(&out).len(), 11, "each call arrives once");
        let expected: Vec<String> = std::iter::once("before".to_owned()).chain(sent).collect();
        assert_eq!(got, expected, "all 10 delivered, in the order sent");
        println!("SIGTERM restart: 10 of 10 one-way calls delivered in order");
    })
    .await;
}

#[tokio::test]
async fn a_full_queue_with_the_server_down_fails_by_the_deadline_or_the_bound_never_hangs() {
    if !queues_available() {
        return;
    }
    let mut server = ServerProcess::start(&["--queues"]);
    let out = server.dir().join("out.txt");
    let path = out.display().to_string();
    let queue = service_queue_name(server.dir(), "Testing");
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        server.kill();
        let capacity = switchyard::transport::mqueue::limits().unwrap().msg_max;
        for i in 0..capacity {
            client
                .try_record(path.clone(), format!("fill {i}"))
                .await
                .unwrap();
        }
        // With a deadline: DeadlineExceeded at the deadline, naming the
        // queue and what to do.
        let start = Instant::now();
        let err = client
            .with_timeout(Duration::from_millis(200))
            .record(path.clone(), "waits".into())
            .await
            .unwrap_err();
        let waited_deadline = start.elapsed();
        let waited = waited_deadline;
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        assert!(err.message().contains(&queue), "{err}");
        assert!(err.message().contains("start it"), "{err}");
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // Without a deadline, from a client that connects by name while the
        // server is down: the wait is bounded (queue_full_wait), then
        // ResourceExhausted naming the queue and what to do.
        let fresh = switchyard::Channel::builder()
            .runtime_dir(server.dir())
            .queue_full_wait(Duration::from_millis(300))
            .connect("testing")
            .await
            .unwrap();
        let start = Instant::now();
        let err = TestingClient::new(fresh)
            .record(path.clone(), "no deadline".into())
            .await
            .unwrap_err();
        let waited = start.elapsed();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains(&queue), "{err}");
        assert!(err.message().contains("queue_full_wait"), "{err}");
        assert!(err.message().contains("start it"), "{err}");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        println!(
            "full queue, server down: deadline 200 ms -> DeadlineExceeded after \
             {waited_deadline:?}; no deadline, queue_full_wait 300 ms -> ResourceExhausted after \
             {waited:?}"
        );
    })
    .await;
    assert!(lines(&out).is_empty(), "nothing was handled: no server ran");
}

#[tokio::test]
async fn a_squatted_queue_name_is_reported_loudly_and_can_be_required() {
    if !queues_available() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("sy-it-").tempdir().unwrap();
    // Someone made a queue under the server's name first.
    let (name, _squat) = squat_queue(dir.path(), 0o666);
    within(LIMIT, async {
        // Required: the server refuses to start, naming the queue and the fix.
        let err = switchyard::Server::builder()
            .add_service(switchyard_integration_tests::testing_service())
            .runtime_dir(dir.path())
            .require_queues(true)
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(err.message().contains(&name), "{err}");
        assert!(err.message().contains("NOT kept"), "{err}");
        assert!(err.message().contains("SWITCHYARD_RUNTIME_DIR"), "{err}");
        // By default it starts, and says so: on its handle (and in an
        // error-level log), and in the selection of every client.
        let server = switchyard::Server::builder()
            .add_service(switchyard_integration_tests::testing_service())
            .runtime_dir(dir.path())
            .start()
            .await
            .unwrap();
        assert_eq!(
            server.queue_problems().len(),
            1,
            "{:?}",
            server.queue_problems()
        );
        let problem = &server.queue_problems()[0];
        assert!(problem.contains(&name), "{problem}");
        assert!(problem.contains("someone else holds"), "{problem}");
        let channel = switchyard::Channel::builder()
            .runtime_dir(dir.path())
            .connect("testing")
            .await
            .unwrap();
        let selection = channel.oneway_selection(&TESTING_DESCRIPTOR);
        assert_ne!(selection.transport, Transport::MessageQueue, "{selection}");
        let (_, why) = selection
            .rejected
            .iter()
            .find(|(t, _)| *t == Transport::MessageQueue)
            .expect("the queue is listed as rejected");
        assert!(why.to_string().contains("no message queue"), "{why}");
        assert!(why.to_string().contains(&name), "{why}");
        assert!(why.to_string().contains("NOT kept"), "{why}");
        println!("squatted queue, client selection: {why}");
        server.shutdown().await;
    })
    .await;
    nix::mqueue::mq_unlink(name.as_str()).unwrap();
}
