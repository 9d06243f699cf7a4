//! Finding services by name, and which transport a connection takes and why.

use std::time::Duration;

use switchyard::discovery::Registry;
use switchyard::{Channel, Code, Transport};
use switchyard_integration_tests::{ServerProcess, TestingClient, test_server_exe, within};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_name_in_the_registry_selects_shared_memory_with_a_reason() {
    let server = ServerProcess::start(&["--tcp"]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let selection = client.selection();
        assert_eq!(selection.transport, Transport::Shm, "{selection}");
        assert!(
            selection
                .reason
                .to_string()
                .starts_with("same host: boot id and IPC namespace match"),
            "{selection}"
        );
        assert!(
            selection
                .rejected
                .iter()
                .any(|(t, _)| *t == Transport::Unix),
            "{selection}"
        );
        assert!(
            selection
                .reason
                .to_string()
                .contains(&format!("pid {}", server.pid())),
            "{selection}"
        );
        assert!(
            selection.rejected.iter().any(|(t, _)| *t == Transport::Tcp),
            "{selection}"
        );
        assert_eq!(client.add(1, 2).await.unwrap(), 3);
    })
    .await;
}

#[tokio::test]
async fn prefer_forces_tcp_and_the_handshake_notes_the_same_host() {
    let server = ServerProcess::start(&["--tcp"]);
    within(LIMIT, async {
        let channel = Channel::builder()
            .runtime_dir(server.dir())
            .prefer(Transport::Tcp)
            .connect("testing")
            .await
            .unwrap();
        let selection = channel.selection();
        assert_eq!(selection.transport, Transport::Tcp);
        assert!(
            selection
                .reason
                .to_string()
                .contains("boot id and IPC namespace match"),
            "{selection}"
        );
        assert_eq!(TestingClient::new(channel).add(2, 2).await.unwrap(), 4);
    })
    .await;
}

#[tokio::test]
async fn a_tcp_address_of_a_same_host_server_moves_to_shared_memory() {
    let server = ServerProcess::start(&["--tcp"]);
    within(LIMIT, async {
        let tcp = server.endpoint("tcp");
        let channel = Channel::connect(&tcp).await.unwrap();
        let selection = channel.selection();
        assert_eq!(selection.transport, Transport::Shm, "{selection}");
        assert!(
            selection
                .reason
                .to_string()
                .starts_with("upgraded: reached tcp://")
                && selection
                    .reason
                    .to_string()
                    .contains("same boot id and IPC namespace")
                && selection.reason.to_string().contains("Unix socket"),
            "{selection}"
        );
        assert!(
            selection.rejected.iter().any(|(t, _)| *t == Transport::Tcp),
            "{selection}"
        );
        let client = TestingClient::new(channel.clone());
        assert_eq!(client.add(20, 22).await.unwrap(), 42);
        assert!(
            channel.peer().addr.starts_with("shm://"),
            "{:?}",
            channel.peer()
        );
        // Demanding TCP keeps it.
        let kept = Channel::builder()
            .prefer(Transport::Tcp)
            .connect(&tcp)
            .await
            .unwrap();
        assert_eq!(kept.selection().transport, Transport::Tcp);
        assert_eq!(TestingClient::new(kept).add(1, 1).await.unwrap(), 2);
    })
    .await;
}

#[tokio::test]
async fn an_override_that_cannot_work_is_an_error_not_a_fallback() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let err = Channel::builder()
            .runtime_dir(server.dir())
            .prefer(Transport::Tcp)
            .connect("testing")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("no tcp endpoint"), "{err}");
        let err = Channel::builder()
            .runtime_dir(server.dir())
            .prefer(Transport::Quic)
            .connect("testing")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("no quic endpoint"), "{err}");
    })
    .await;
}

#[test]
fn switchyard_transport_in_the_environment_forces_a_transport() {
    let server = ServerProcess::start(&["--tcp"]);
    let run = |value: &str| {
        let out = std::process::Command::new(test_server_exe())
            .args(["call", "testing"])
            .env("SWITCHYARD_RUNTIME_DIR", server.dir())
            .env("SWITCHYARD_TRANSPORT", value)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(run("tcp"), "tcp 5");
    assert_eq!(run("unix"), "unix 5");
    assert_eq!(run("shm"), "shm 5");
    assert_eq!(run(""), "shm 5");
    let bogus = run("carrier-pigeon");
    assert!(bogus.starts_with("error INVALID_ARGUMENT"), "{bogus}");
    assert!(bogus.contains("use one of"), "{bogus}");
    // Only values that can be demanded are offered.
    assert!(
        bogus.contains("use one of shm, unix, tcp, quic ("),
        "{bogus}"
    );
    assert_eq!(
        run("mmap").split(':').next(),
        Some("error FAILED_PRECONDITION")
    );
}

#[tokio::test]
async fn a_dead_servers_entry_is_ignored_and_pruned() {
    let mut server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let registry = Registry::open(server.dir()).unwrap();
        assert_eq!(
            registry.lookup("testing").unwrap().unwrap().pid,
            server.pid()
        );
        server.kill();
        let entries = || {
            std::fs::read_dir(server.dir().join("registry"))
                .unwrap()
                .count()
        };
        assert_eq!(entries(), 1, "SIGKILL leaves the entry behind");
        let err = Channel::builder()
            .runtime_dir(server.dir())
            .connect("testing")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("no live process"), "{err}");
        assert_eq!(entries(), 0, "the lookup pruned it");
    })
    .await;
}

#[tokio::test]
async fn a_restarted_server_is_found_again_by_the_same_channel() {
    let mut server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        assert_eq!(client.add(1, 1).await.unwrap(), 2);
        server.kill();
        let restarted = server.restart(&[]);
        // The first call may still see the dead connection; the next one
        // reconnects through the registry.
        let mut result = client.add(2, 2).await;
        if result.is_err() {
            result = client.add(2, 2).await;
        }
        assert_eq!(result.unwrap(), 4);
        assert!(
            client
                .selection()
                .reason
                .to_string()
                .contains(&format!("pid {}", restarted.pid()))
        );
    })
    .await;
}

#[tokio::test]
async fn connect_by_name_checks_the_service_is_served() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let url = server.endpoint("unix");
        let client = TestingClient::connect(&url).await.unwrap();
        assert_eq!(client.add(3, 4).await.unwrap(), 7);
    })
    .await;
}
