//! The shared-memory bulk path (mmap) across real processes: frame bodies
//! over the bulk threshold travel beside the ring (through each side's
//! pool, or as a sealed memfd of their own when the pool cannot take them),
//! both ways, byte-exact, including gRPC's odd sizes; limits are enforced
//! before a body is copied; a connection stays usable after a refusal; the
//! pools are counted and gone after close.
#![cfg(target_os = "linux")]

use std::time::Duration;

use switchyard::transport::shm::{DEFAULT_BULK_THRESHOLD, bulk_transfers};
use switchyard::{Channel, Code};
use switchyard_integration_tests::{ServerProcess, TestingClient, shm_client_on, within};

/// The watchdog of every test.
const LIMIT: Duration = Duration::from_secs(60);

/// A client to `server` by name with `builder`'s settings, checked to run
/// over shared memory.
async fn shm_client(server: &ServerProcess, builder: switchyard::ChannelBuilder) -> TestingClient {
    let channel = builder
        .runtime_dir(server.dir())
        .connect("testing")
        .await
        .expect("connect by name");
    shm_client_on(channel)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn bodies_over_the_threshold_travel_as_mapped_regions_both_ways() {
    within(LIMIT, async {
        let server = ServerProcess::start(&[]);
        let client = shm_client(&server, Channel::builder()).await;
        // gRPC's large_unary sizes straddle nothing here: both are over the
        // default threshold of 256 KiB; 100 KiB stays in the ring.
        for (len, seed) in [(271_828, 1), (314_159, 2), (4 << 20, 3), (100 * 1024, 4)] {
            let before = bulk_transfers();
            let sent = pattern(len, seed);
            let back = client.echo(sent.clone()).await.expect("echo");
            assert!(back == sent, "a {len}-byte echo came back changed");
            let after = bulk_transfers();
            // Other tests run beside this one, so counters are only checked
            // to grow where this test must have made them grow.
            if len > DEFAULT_BULK_THRESHOLD {
                assert!(
                    after.sent > before.sent,
                    "the {len}-byte request went as a region"
                );
                assert!(
                    after.received > before.received,
                    "the {len}-byte response came back as a region"
                );
                assert!(after.bytes_sent - before.bytes_sent >= len as u64);
            }
        }
        // A result produced by the server (not an echo) over the threshold.
        let before = bulk_transfers();
        let got = client.payload(1 << 20).await.expect("payload");
        assert_eq!(got.len(), 1 << 20);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        assert!(bulk_transfers().received > before.received);
    })
    .await;
}

#[tokio::test]
async fn a_smaller_threshold_sends_smaller_bodies_as_regions() {
    within(LIMIT, async {
        let server = ServerProcess::start(&[]);
        let client = shm_client(&server, Channel::builder().bulk_threshold(8 * 1024)).await;
        let before = bulk_transfers();
        let sent = pattern(20_000, 9);
        assert!(client.echo(sent.clone()).await.expect("echo") == sent);
        assert!(
            bulk_transfers().sent > before.sent,
            "a 20 000-byte request over an 8 KiB threshold went as a region"
        );
    })
    .await;
}

#[tokio::test]
async fn an_oversized_bulk_request_is_refused_before_it_is_copied() {
    within(LIMIT, async {
        let limit = 2 << 20;
        let server = ServerProcess::start(&["--max-frame", &limit.to_string()]);
        let client = shm_client(&server, Channel::builder()).await;
        let seen = client.requests_seen().await.unwrap();
        let status = client
            .echo(vec![7u8; 3 << 20])
            .await
            .expect_err("over the server's limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(
            status.message().contains(&limit.to_string())
                && status.message().contains("nothing was sent"),
            "{status}"
        );
        // The server never saw it, and the connection still works.
        assert_eq!(client.requests_seen().await.unwrap(), seen);
        let sent = pattern(1 << 20, 5);
        assert!(
            client
                .echo(sent.clone())
                .await
                .expect("echo after the refusal")
                == sent
        );
    })
    .await;
}

#[tokio::test]
async fn an_oversized_bulk_response_is_refused_and_the_connection_goes_on() {
    within(LIMIT, async {
        let server = ServerProcess::start(&[]);
        let client = shm_client(&server, Channel::builder().max_frame(1 << 20)).await;
        let status = client
            .payload(2 << 20)
            .await
            .expect_err("over the client's limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.message().contains("client's limit"), "{status}");
        let got = client
            .payload(512 * 1024)
            .await
            .expect("a response under the limit");
        assert_eq!(got.len(), 512 * 1024);
    })
    .await;
}

/// This process's connections to the server with pid `pid`, as the debug
/// model shows them.
fn connections_to(pid: u32) -> Vec<switchyard::debug::model::ConnectionInfo> {
    switchyard::debug::snapshot()
        .connections
        .into_iter()
        .filter(|c| c.peer.pid == Some(pid))
        .collect()
}

#[tokio::test]
async fn large_bodies_go_through_the_pools_and_nothing_stays_in_use_after_close() {
    within(LIMIT, async {
        let server = ServerProcess::start(&[]);
        let client = shm_client(&server, Channel::builder()).await;
        for round in 0..20u8 {
            let sent = pattern(1 << 20, round);
            assert!(client.echo(sent.clone()).await.expect("echo") == sent);
        }
        // Larger than the first segment: the pool grows.
        let sent = pattern(6 << 20, 99);
        assert!(client.echo(sent.clone()).await.expect("echo") == sent);
        let open = connections_to(server.pid());
        let mmap = open
            .iter()
            .find_map(|c| c.mmap.clone())
            .expect("a shm connection with an mmap track");
        eprintln!("client's pool after 21 echoes: {mmap:?}");
        assert_eq!(
            mmap.pool_bodies_sent, 21,
            "every request went through the pool"
        );
        assert_eq!(mmap.pool_fallbacks, 0);
        assert_eq!(
            mmap.bodies_received, 21,
            "and every response came back pooled"
        );
        assert!(mmap.pool_held_bytes >= 6 << 20 && mmap.pool_held_bytes <= 64 << 20);
        drop(client);
        // Closed: its pool goes (once the last frame queued for it does),
        // and the closed connection says so (the watchdog bounds the wait).
        let mmap = loop {
            let closed = connections_to(server.pid())
                .into_iter()
                .filter(|c| c.closed_unix_ms.is_some())
                .find_map(|c| c.mmap);
            if let Some(mmap) = closed
                && mmap.pool_held_bytes == 0
            {
                break mmap;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(mmap.pool_in_use_bytes, 0, "{mmap:?}");
        assert_eq!(mmap.pool_bodies_sent, 21, "{mmap:?}");
    })
    .await;
}

#[tokio::test]
async fn a_body_over_the_pool_limit_goes_as_a_region_and_is_counted() {
    within(LIMIT, async {
        let server = ServerProcess::start(&[]);
        let client = shm_client(&server, Channel::builder().shm_pool_limit(1 << 20)).await;
        let sent = pattern(3 << 20, 17);
        assert!(client.echo(sent.clone()).await.expect("echo") == sent);
        let sent = pattern(512 << 10, 18);
        assert!(client.echo(sent.clone()).await.expect("echo") == sent);
        let mmap = connections_to(server.pid())
            .iter()
            .find_map(|c| c.mmap.clone())
            .expect("an mmap track");
        assert_eq!(mmap.pool_fallbacks, 1, "{mmap:?}");
        assert_eq!(mmap.pool_bodies_sent, 1, "{mmap:?}");
        assert_eq!(mmap.bodies_sent, 2, "{mmap:?}");
        let text = switchyard::debug::table::connections_table(&switchyard::debug::snapshot());
        assert!(
            text.contains(
                "shm pool: 1 bodies sent through it (0 from loans, not copied), 1 as a region"
            ),
            "{text}"
        );
    })
    .await;
}
