//! Network faults between two hosts (network namespaces), for TCP and QUIC:
//! packet loss (`tc netem`, or an nftables rule where the kernel has no
//! netem), delay (`tc netem`, or where the kernel has no netem a relay in
//! the client's namespace that holds every datagram or TCP chunk 100 ms each
//! way, reached by a second channel), then a partition (the server's
//! cable pulled for 30 s; `SWITCHYARD_PARTITION_SECS` changes it). Every
//! call completes or fails by its deadline, never later; calls succeed again
//! once the partition heals.
//!
//! Needs root and iproute2 (and nftables for loss without netem); elsewhere
//! each test prints why it skips, or which part it skipped.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use switchyard::{Channel, Code, Transport};
use switchyard_integration_tests::TestingClient;
use switchyard_integration_tests::delay_relay::DelayRelay;
use switchyard_integration_tests::netns::Lan;

const DEADLINE: Duration = Duration::from_secs(2);
/// What a loaded machine may add to a deadline before a call counts as late.
const SLACK: Duration = Duration::from_millis(1500);

/// Outcomes of a batch of calls.
#[derive(Debug, Default)]
struct Tally {
    ok: u32,
    failed: Vec<Code>,
    slowest: Duration,
}

/// `count` calls, 8 at a time, each with [`DEADLINE`]; panics if any took
/// longer than its deadline plus [`SLACK`] or failed other than by deadline
/// or unavailability.
async fn batch(client: &TestingClient, count: u32, what: &str) -> Tally {
    let mut tally = Tally::default();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let client = client.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            let result = client.add(i64::from(i), 1).await;
            (i, result, started.elapsed())
        });
        if tasks.len() >= 8 || i + 1 == count {
            while let Some(done) = tasks.join_next().await {
                let (i, result, took) = done.expect("the call task");
                assert!(
                    took <= DEADLINE + SLACK,
                    "{what}: call {i} took {took:?}, past its {DEADLINE:?} deadline: {result:?}"
                );
                tally.slowest = tally.slowest.max(took);
                match result {
                    Ok(sum) => {
                        assert_eq!(sum, i64::from(i) + 1);
                        tally.ok += 1;
                    }
                    Err(status) => {
                        assert!(
                            matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
                            "{what}: call {i}: {status}"
                        );
                        tally.failed.push(status.code());
                    }
                }
            }
        }
    }
    eprintln!(
        "{what}: {} ok, {} failed by their deadline ({:?}), slowest {:?}",
        tally.ok,
        tally.failed.len(),
        tally.failed.first(),
        tally.slowest
    );
    tally
}

/// Calls over a second channel that reaches the server through a
/// [`DelayRelay`] in the client's namespace (100 ms each way): the
/// handshake and every call complete, each within its deadline.
async fn delayed_through_relay(transport: Transport, address: &str, local: Ipv4Addr) {
    // `scheme://host:port?query`: the relay takes the host's place.
    let (scheme, rest) = address.split_once("://").expect("a URL");
    let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
    let upstream: SocketAddr = host_port.parse().expect("an address");
    let listen = SocketAddr::new(local.into(), 0);
    let delay = Duration::from_millis(100);
    let relay = match transport {
        Transport::Quic => DelayRelay::udp(listen, upstream, delay).await,
        _ => DelayRelay::tcp(listen, upstream, delay).await,
    }
    .expect("the relay starts");
    let mut url = format!("{scheme}://{}", relay.addr());
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let started = Instant::now();
    let channel = Channel::builder()
        .prefer(transport)
        .timeout(DEADLINE)
        .connect(&url)
        .await
        .unwrap_or_else(|status| panic!("{transport}: no connection through the relay: {status}"));
    eprintln!(
        "{transport} through a 100 ms relay: connected in {:?}",
        started.elapsed()
    );
    assert_eq!(channel.selection().transport, transport);
    let what = format!("{transport} with 100 ms delay each way (relay)");
    let tally = batch(&TestingClient::new(channel), 40, &what).await;
    assert_eq!(tally.ok, 40, "{what}: calls failed");
    // Each call crossed the relay twice.
    assert!(
        tally.slowest >= 2 * delay,
        "{what}: the relay did not delay"
    );
}

fn faults(transport: Transport) {
    let test = format!("network_faults_over_{transport}");
    let Some(lan) = Lan::or_skip(2, &test) else {
        return;
    };
    let (a, b) = (&lan.hosts[0], &lan.hosts[1]);
    let server = b.serve_test_server();
    let address = server
        .endpoint(transport.as_str())
        .replace("0.0.0.0", &b.ip.to_string());
    let partition = std::env::var("SWITCHYARD_PARTITION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs);
    a.enter(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async {
                tokio::time::timeout(partition + Duration::from_secs(120), async {
                    let channel = Channel::builder()
                        .prefer(transport)
                        .timeout(DEADLINE)
                        .reconnect_backoff(switchyard::Backoff {
                            max: Duration::from_secs(5),
                            ..switchyard::Backoff::default()
                        })
                        .connect(&address)
                        .await
                        .expect("connects");
                    assert_eq!(channel.selection().transport, transport);
                    let client = TestingClient::new(channel);
                    let clean = batch(&client, 40, &format!("{transport} clean")).await;
                    assert_eq!(clean.ok, 40, "calls failed without any fault");

                    match a.lose(10).and_then(|_| b.lose(10)) {
                        Ok(how) => {
                            let what = format!("{transport} with 10% loss each way ({how})");
                            let tally = batch(&client, 40, &what).await;
                            // Loss slows calls down; it does not stop them.
                            assert!(tally.ok > 0, "{what}: no call got through");
                        }
                        Err(why) => eprintln!("{test}: skipping loss: {why}"),
                    }
                    a.stop_losing();
                    b.stop_losing();
                    let delay = a
                        .netem(Some(&["delay", "100ms", "20ms"]))
                        .and_then(|()| b.netem(Some(&["delay", "100ms", "20ms"])));
                    match delay {
                        Ok(()) => {
                            let what = format!("{transport} with 100 ms delay each way");
                            let tally = batch(&client, 40, &what).await;
                            assert_eq!(tally.ok, 40, "{what}: calls failed");
                            a.netem(None).and_then(|()| b.netem(None)).expect("unshape");
                        }
                        Err(why) => {
                            eprintln!("{test}: no tc netem in this kernel ({why}); delaying through a relay");
                            delayed_through_relay(transport, &address, a.ip).await;
                        }
                    }

                    b.unplug();
                    let started = Instant::now();
                    let mut during = Tally::default();
                    while started.elapsed() < partition {
                        let tally = batch(&client, 4, &format!("{transport} partitioned")).await;
                        during.ok += tally.ok;
                        during.failed.extend(tally.failed);
                    }
                    assert_eq!(during.ok, 0, "calls succeeded across a partition");
                    b.plug();
                    let healed = Instant::now();
                    loop {
                        match client.add(1, 1).await {
                            Ok(2) => break,
                            Ok(other) => panic!("1 + 1 = {other}?"),
                            Err(status) if healed.elapsed() < Duration::from_secs(60) => {
                                let _ = status;
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Err(status) => panic!("{transport}: no recovery in 60 s: {status}"),
                        }
                    }
                    eprintln!(
                        "{transport}: partition of {partition:?} healed; calls succeed again \
                         {:?} after",
                        healed.elapsed()
                    );
                    let after =
                        batch(&client, 40, &format!("{transport} after the partition")).await;
                    assert_eq!(after.ok, 40, "calls still failing after recovery");
                })
                .await
                .expect("a hang: the fault test did not finish");
            })
    });
}

#[test]
fn network_faults_over_tcp() {
    faults(Transport::Tcp);
}

#[test]
fn network_faults_over_quic() {
    faults(Transport::Quic);
}

/// The TCP connections established in `host`'s namespace with `peer`.
fn established_with(host: &switchyard_integration_tests::netns::Host, peer: Ipv4Addr) -> usize {
    let out = host
        .exec("ss", &["-Htn", "state", "established"])
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&format!("{peer}:")))
        .count()
}

/// A client whose cable is cut (no FIN, no RST ever reaches the server)
/// is dropped by the server's keepalive within `interval + timeout`, here
/// 1 s + 1 s (before keepalive, such a peer was still "established" a
/// minute later).
#[test]
fn a_client_cut_without_a_fin_is_dropped_within_the_keepalive_bound() {
    let test = "a_client_cut_without_a_fin_is_dropped_within_the_keepalive_bound";
    let Some(lan) = Lan::or_skip(2, test) else {
        return;
    };
    let (a, b) = (&lan.hosts[0], &lan.hosts[1]);
    if b.exec("ss", &["-V"]).is_err() {
        eprintln!("skipping {test}: no ss (iproute2)");
        return;
    }
    let server = b.serve_test_server_with(&["--keepalive-ms", "1000"]);
    let address = server.endpoint("tcp").replace("0.0.0.0", &b.ip.to_string());
    a.run(Duration::from_secs(60), async {
        let channel = Channel::builder()
            .prefer(Transport::Tcp)
            .timeout(DEADLINE)
            .connect(&address)
            .await
            .expect("connects");
        let client = TestingClient::new(channel);
        assert_eq!(client.add(1, 2).await.unwrap(), 3);
        assert_eq!(established_with(b, a.ip), 1, "the server sees the client");
        a.unplug();
        let cut = Instant::now();
        while established_with(b, a.ip) > 0 {
            assert!(
                cut.elapsed() < Duration::from_secs(2) + SLACK + Duration::from_secs(2),
                "the server kept a cut client for {:?}",
                cut.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dropped = cut.elapsed();
        eprintln!(
            "a client cut without a FIN: the server dropped it after {dropped:?} (keepalive 1 s \
             + 1 s)"
        );
        assert!(dropped >= Duration::from_secs(1), "dropped before any ping");
        a.plug();
    });
}
