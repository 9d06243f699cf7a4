//! Across machines, simulated: three hosts as network namespaces on one
//! bridge. A service on host B (and C) is called from host A over QUIC by
//! name through a discovery file; B's cable is pulled mid-call and plugged
//! back; UDP to B is dropped and the client falls back to TCP.
//!
//! Needs root and iproute2; elsewhere each test prints why it skips.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard::{Channel, Code, Transport};
use switchyard_integration_tests::netns::{Host, Lan};
use switchyard_integration_tests::{ServerProcess, TestingClient};

/// A LAN of `count` hosts, or `None` after printing why not.
fn lan(count: usize, test: &str) -> Option<Lan> {
    match Lan::new(count) {
        Ok(lan) => Some(lan),
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

/// The server's QUIC and TCP addresses as seen from other hosts.
fn addresses(server: &ServerProcess, host: &Host) -> (String, String) {
    let quic = server
        .endpoint("quic")
        .replace("0.0.0.0", &host.ip.to_string());
    let tcp = server
        .endpoint("tcp")
        .replace("0.0.0.0", &host.ip.to_string());
    (quic, tcp)
}

/// A discovery file naming `testing` at `addresses`.
fn discovery(dir: &Path, name: &str, addresses: &[&str]) -> PathBuf {
    let path = dir.join("discovery.toml");
    let list: Vec<String> = addresses.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        &path,
        format!("[services.{name}]\naddresses = [{}]\n", list.join(", ")),
    )
    .expect("write the discovery file");
    path
}

/// Runs `f` on `host` in a runtime of its own, with a watchdog.
fn on<T: Send>(host: &Host, f: impl AsyncFnOnce() -> T + Send) -> T {
    host.enter(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(90), f())
                    .await
                    .expect("a hang: the test did not finish in 90 s")
            })
    })
}

#[test]
fn services_on_other_hosts_are_called_over_quic_by_name() {
    let Some(lan) = lan(3, "services_on_other_hosts_are_called_over_quic_by_name") else {
        return;
    };
    let (a, b, c) = (&lan.hosts[0], &lan.hosts[1], &lan.hosts[2]);
    let on_b = b.serve_test_server();
    let on_c = c.serve_test_server();
    let (quic_b, tcp_b) = addresses(&on_b, b);
    let (quic_c, _) = addresses(&on_c, c);
    let dir = tempfile::tempdir().unwrap();
    let file = discovery(dir.path(), "testing", &[&tcp_b, &quic_b]);
    on(a, async || {
        let channel = Channel::builder()
            .runtime_dir(dir.path())
            .discovery_file(&file)
            .connect("testing")
            .await
            .expect("connects by name");
        let selection = channel.selection();
        assert_eq!(selection.transport, Transport::Quic, "{selection}");
        assert!(
            selection.reason.to_string().contains("discovery.toml"),
            "{selection}"
        );
        assert!(
            selection.reason.to_string().contains(&b.ip.to_string()),
            "{selection}"
        );
        let client = TestingClient::new(channel.clone());
        assert_eq!(client.add(2, 3).await.unwrap(), 5);
        assert_eq!(
            channel.peer().addr,
            format!(
                "quic://{}",
                &quic_b["quic://".len()..quic_b.find('?').unwrap()]
            )
        );
        // Host C by its address; the pin travels in it.
        let to_c = Channel::connect(&quic_c).await.expect("connects to C");
        assert_eq!(TestingClient::new(to_c).add(40, 2).await.unwrap(), 42);
        // A big body crosses the veth too.
        let big = vec![7u8; 3 << 20];
        assert_eq!(client.echo(big.clone()).await.unwrap(), big);
    });
}

#[test]
fn a_pulled_cable_fails_calls_by_their_deadline_and_calls_work_once_it_is_back() {
    let Some(lan) = lan(
        2,
        "a_pulled_cable_fails_calls_by_their_deadline_and_calls_work_once_it_is_back",
    ) else {
        return;
    };
    let (a, b) = (&lan.hosts[0], &lan.hosts[1]);
    let server = b.serve_test_server();
    let (quic, _) = addresses(&server, b);
    on(a, async || {
        let channel = Channel::builder()
            .timeout(Duration::from_millis(1500))
            .connect(&quic)
            .await
            .expect("connects");
        let client = TestingClient::new(channel);
        assert_eq!(client.add(1, 1).await.unwrap(), 2);
        let in_flight = tokio::spawn({
            let client = client.clone();
            async move {
                let started = Instant::now();
                (client.sleep(5_000).await, started.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.unplug();
        let (result, took) = in_flight.await.unwrap();
        let status = result.expect_err("the call cannot finish with the cable out");
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
            "{status}"
        );
        // By its deadline (1.5 s), with slack for a loaded machine.
        assert!(
            took < Duration::from_millis(4_500),
            "took {took:?}: {status}"
        );
        // With the cable still out, calls keep failing by their deadlines.
        let started = Instant::now();
        let status = client.add(1, 2).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(4_500), "{status}");

        b.plug();
        let started = Instant::now();
        loop {
            match client.add(2, 2).await {
                Ok(sum) => {
                    assert_eq!(sum, 4);
                    break;
                }
                Err(status) if started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = status;
                }
                Err(status) => panic!("calls did not recover after the cable came back: {status}"),
            }
        }
    });
}

#[test]
fn with_udp_dropped_the_client_falls_back_to_tcp_and_says_why() {
    let Some(lan) = lan(
        2,
        "with_udp_dropped_the_client_falls_back_to_tcp_and_says_why",
    ) else {
        return;
    };
    let (a, b) = (&lan.hosts[0], &lan.hosts[1]);
    let server = b.serve_test_server();
    let (quic, tcp) = addresses(&server, b);
    let blocked_by = match b.drop_udp() {
        Ok(tool) => tool,
        Err(why) => {
            eprintln!(
                "skipping with_udp_dropped_the_client_falls_back_to_tcp_and_says_why: neither \
                 nftables nor iptables works here ({why}); .ci/run installs nftables"
            );
            return;
        }
    };
    eprintln!("UDP to {} dropped with {blocked_by}", b.ip);
    let dir = tempfile::tempdir().unwrap();
    let file = discovery(dir.path(), "testing", &[&quic, &tcp]);
    on(a, async || {
        let channel = Channel::builder()
            .runtime_dir(dir.path())
            .discovery_file(&file)
            .attempt_timeout(Duration::from_millis(800))
            .connect("testing")
            .await
            .expect("falls back to tcp");
        let selection = channel.selection();
        eprintln!("{selection}");
        assert_eq!(selection.transport, Transport::Tcp, "{selection}");
        assert!(
            selection.reason.to_string().starts_with("fell back to tcp"),
            "{selection}"
        );
        assert!(selection.reason.to_string().contains("UDP"), "{selection}");
        assert_eq!(TestingClient::new(channel).add(20, 22).await.unwrap(), 42);
        // Demanding QUIC fails by the connect timeout, saying so.
        let err = Channel::builder()
            .runtime_dir(dir.path())
            .discovery_file(&file)
            .prefer(Transport::Quic)
            .connect_timeout(Duration::from_millis(800))
            .connect("testing")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("did not finish"), "{err}");
    });
}
