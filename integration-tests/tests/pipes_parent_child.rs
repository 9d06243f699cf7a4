//! Parent and child processes over inherited pipes: both directions, several
//! children, deaths on either side, garbage, and fd/zombie hygiene.

use std::process::Command;
use std::time::{Duration, Instant};

use switchyard::process::Spawner;
use switchyard::{Code, Transport};
use switchyard_integration_tests::{TestingClient, TestingImpl, TestingServer, within};

const LIMIT: Duration = Duration::from_secs(60);
const CHILD: &str = env!("CARGO_BIN_EXE_pipe-child");

fn child(args: &[&str]) -> Command {
    let mut command = Command::new(CHILD);
    command.args(args);
    command
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test]
async fn the_parent_calls_a_child_over_pipes() {
    within(LIMIT, async {
        let child = Spawner::new(child(&["worker"])).spawn().await.unwrap();
        let client = TestingClient::new(child.channel());
        let selection = client.selection();
        assert_eq!(selection.transport, Transport::Pipe);
        assert!(
            selection.reason.to_string().contains("inherited pipes"),
            "{selection}"
        );
        assert_eq!(client.add(2, 3).await.unwrap(), 5);
        assert_eq!(client.pid().await.unwrap(), child.id());
        let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        assert!(client.echo(big.clone()).await.unwrap() == big);
        let status = child.shutdown(Duration::from_secs(5)).await;
        assert!(
            status.success(),
            "closing the pipes lets the worker exit: {status}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_child_finds_its_parents_service_by_name_over_the_pipe() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        let file = std::fs::File::create(&out).unwrap();
        let mut command = child(&["call-parent"]);
        command.stdout(file);
        let mut spawned = Spawner::new(command)
            .add_service(TestingServer::new(TestingImpl::default()))
            .spawn()
            .await
            .unwrap();
        assert!(spawned.wait().await.success());
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("pipe 5 "), "{text}");
        assert!(
            text.contains("serves this service over inherited pipes"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn each_call_goes_to_the_child_it_was_made_on() {
    within(LIMIT, async {
        let mut children = Vec::new();
        for _ in 0..4 {
            children.push(Spawner::new(child(&["worker"])).spawn().await.unwrap());
        }
        let mut calls = Vec::new();
        for spawned in &children {
            let client = TestingClient::new(spawned.channel());
            let pid = spawned.id();
            calls.push(tokio::spawn(async move {
                for _ in 0..50 {
                    assert_eq!(client.pid().await.unwrap(), pid);
                }
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn a_child_killed_mid_call_fails_the_call_with_its_exit_status() {
    within(LIMIT, async {
        let child = Spawner::new(child(&["worker"])).spawn().await.unwrap();
        let client = TestingClient::new(child.channel());
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.sleep(30_000).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let killed = Instant::now();
        child.kill();
        let err = pending.await.unwrap().unwrap_err();
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "{:?}",
            killed.elapsed()
        );
        assert_eq!(err.code(), Code::Unavailable);
        assert!(
            err.message()
                .contains(&format!("child process {}", child.id())),
            "{err}"
        );
        assert!(
            err.message().contains("SIGKILL") || err.message().contains("signal: 9"),
            "{err}"
        );
        let err = client.add(1, 1).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(child.exit_status().is_some());
    })
    .await;
}

/// Starts `pipe-child middle MODE MARKER`, waits until it has spawned its own
/// child, kills it with SIGKILL, and returns what the grandchild wrote.
async fn kill_the_middle(mode: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let mut middle = tokio::process::Command::new(CHILD)
        .args(["middle", mode, marker.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = middle.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = lines.next_line().await.unwrap().unwrap();
    assert!(ready.starts_with("ready "), "{ready}");
    // Let the grandchild's call reach the middle process, then kill it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    middle.kill().await.unwrap();
    while !marker.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The file is written in one call; give it a moment to be complete.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::read_to_string(&marker).unwrap()
}

#[tokio::test]
async fn a_killed_parent_fails_the_childs_call_and_parent_gone_resolves() {
    within(LIMIT, async {
        let text = kill_the_middle("waiter").await;
        assert!(text.starts_with("UNAVAILABLE"), "{text}");
        assert!(text.contains("parent process"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn an_orphaned_child_shuts_down_when_its_parent_dies() {
    within(LIMIT, async {
        assert_eq!(kill_the_middle("orphan").await, "parent gone");
    })
    .await;
}

#[tokio::test]
async fn a_child_writing_garbage_breaks_only_its_own_connection() {
    within(LIMIT, async {
        let garbage = Spawner::new(child(&["garbage"])).spawn().await;
        // Garbage before a hello fails the spawn; with a hello it would fail
        // the connection. Either way the parent survives.
        let err = garbage.unwrap_err();
        assert!(
            matches!(err.code(), Code::InvalidArgument | Code::Unavailable),
            "{err}"
        );
        assert!(
            err.message().contains("magic") || err.message().contains("handshake"),
            "{err}"
        );
        let broken = Spawner::new(child(&["garbage", "after-hello"]))
            .spawn()
            .await
            .unwrap();
        let client = TestingClient::new(broken.channel());
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match client.add(1, 1).await {
                Err(err) => break err,
                Ok(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(_) => panic!("the garbage never broke the connection"),
            }
        };
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("broke the protocol"), "{err}");
        let healthy = Spawner::new(child(&["worker"])).spawn().await.unwrap();
        assert_eq!(
            TestingClient::new(healthy.channel())
                .add(1, 2)
                .await
                .unwrap(),
            3
        );
    })
    .await;
}

#[tokio::test]
async fn the_pipe_fds_do_not_reach_grandchildren() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("fds.txt");
        let mut command = child(&["grandchild-fds"]);
        command.stdout(std::fs::File::create(&out).unwrap());
        let mut spawned = Spawner::new(command).spawn().await.unwrap();
        assert!(spawned.wait().await.success());
        let text = std::fs::read_to_string(&out).unwrap();
        let grandchild: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("grandchild "))
            .unwrap()
            .split(' ')
            .collect();
        let pipes: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("pipes "))
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(pipes.len(), 2, "{text}");
        for fd in pipes {
            assert!(
                !grandchild.contains(&fd),
                "grandchild inherited pipe fd {fd}: {text}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_child_takes_the_frame_limit_its_services_set_and_errors_name_the_knob() {
    within(LIMIT, async {
        let big: Vec<u8> = (0..20u32 << 20).map(|i| i as u8).collect();
        let parent_settings = || switchyard::ChannelBuilder::new().max_frame(32 << 20);
        // A child at the default 16 MiB: refused before sending, naming
        // both limits and the child's knob.
        let child16 = Spawner::new(child(&["worker"]))
            .channel_settings(parent_settings())
            .spawn()
            .await
            .unwrap();
        let err = TestingClient::new(child16.channel())
            .echo(big.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(
            err.message().contains("16777216 bytes")
                && err.message().contains("33554432 bytes")
                && err.message().contains("process::Services::max_frame"),
            "{err}"
        );
        // A child that raised it with Services::max_frame takes the body.
        let child32 = Spawner::new(child(&["worker-32m"]))
            .channel_settings(parent_settings())
            .spawn()
            .await
            .unwrap();
        let echoed = TestingClient::new(child32.channel())
            .echo(big.clone())
            .await
            .unwrap();
        assert!(echoed == big);
        drop(child16);
        drop(child32);
    })
    .await;
}

/// A child's other limits come from its `process::Services` too, and
/// their errors name that knob, not the server builder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_takes_its_call_and_metadata_limits_from_its_services() {
    within(LIMIT, async {
        let tight = Spawner::new(child(&["worker-tight"]))
            .spawn()
            .await
            .unwrap();
        let client = TestingClient::new(tight.channel());
        // One call at a time: a second one beside a sleeping one is refused.
        let sleeping = tokio::spawn({
            let client = client.clone();
            async move { client.sleep(1500).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let err = client.add(1, 2).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(
            err.message().contains("1 calls in flight")
                && err.message().contains("process::Services::max_in_flight"),
            "{err}"
        );
        sleeping.await.unwrap().expect("the first call completes");
        // Metadata over its 256 bytes: refused naming the child's knob.
        let err = client
            .with_metadata("x-big", "v".repeat(400))
            .add(1, 2)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(
            err.message().contains("process::Services::max_metadata"),
            "{err}"
        );
        assert_eq!(client.add(1, 2).await.unwrap(), 3);
        drop(tight);
    })
    .await;
}

#[test]
fn a_pipe_variable_naming_one_fd_twice_is_refused_not_aborted() {
    // The child of `same-fd-twice` is told its one pipe fd is both ends.
    // Taking it over twice would close it twice (an IO-safety abort in a
    // debug build); it must fail with an error saying what is wrong.
    let out = child(&["same-fd-twice"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("exit 1\n"),
        "the child must exit with an error: {text}"
    );
    assert!(
        text.contains("as both the read and the write end"),
        "the error names the fault: {text}"
    );
    assert!(!text.contains("IO Safety"), "{text}");
}

#[tokio::test]
async fn a_hundred_spawn_call_exit_cycles_leave_no_fd_or_zombie() {
    within(Duration::from_secs(120), async {
        // Warm up whatever the runtime opens once.
        let mut first = Spawner::new(child(&["worker"])).spawn().await.unwrap();
        first.kill();
        first.wait().await;
        first.closed().await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let baseline = open_fds();
        let mut pids = Vec::new();
        for i in 0..100 {
            let mut spawned = Spawner::new(child(&["worker"])).spawn().await.unwrap();
            let client = TestingClient::new(spawned.channel());
            assert_eq!(client.add(i, 1).await.unwrap(), i + 1);
            pids.push(spawned.id());
            spawned.kill();
            spawned.wait().await;
            spawned.closed().await;
        }
        // Other tests of this binary spawn children in this process too:
        // their fds come and go, a leak stays. Wait for the count to come
        // back (10 s at most).
        let settle = Instant::now();
        let mut now = open_fds();
        while now > baseline && settle.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = open_fds();
        }
        assert!(now <= baseline, "fds grew from {baseline} to {now}");
        for pid in pids {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(
                state.is_empty() || !state.contains(") Z"),
                "child {pid} is a zombie: {state}"
            );
        }
    })
    .await;
}
