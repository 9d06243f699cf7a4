//! Streams at scale, against a server in another process: 10,000 open on
//! one connection at once, a 1 GiB stream checked by hash, and a reader
//! that reads slowly while the server streams as fast as it can (its
//! memory stays flat: credit holds the server back). The figures are
//! printed; nothing here is timed as a pass/fail condition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchyard::{Bytes, Channel, Transport};
use switchyard_integration_tests::measure::rss_kib;
use switchyard_integration_tests::{
    DuplexRequest, FNV_OFFSET, ServerProcess, TestingClient, fnv1a64_from, payload_pattern, within,
};
use tokio::sync::{Barrier, mpsc};

/// A channel to `server` over `transport` (Unix or shared memory).
async fn channel(server: &ServerProcess, transport: Transport) -> Channel {
    Channel::builder()
        .runtime_dir(server.dir())
        .prefer(transport)
        .connect("testing")
        .await
        .unwrap_or_else(|status| panic!("connect over {transport}: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_streams_on_one_connection() {
    const STREAMS: usize = 10_000;
    let server = ServerProcess::start(&["--max-in-flight", "20000"]);
    within(Duration::from_secs(240), async {
        let client = TestingClient::new(channel(&server, Transport::Unix).await);
        let before = client.requests_seen().await.unwrap();
        let started = Instant::now();
        // Each task opens a bidirectional stream, exchanges one message,
        // and holds the stream open until all 10,000 are open.
        let all_open = Arc::new(Barrier::new(STREAMS + 1));
        let mut tasks = Vec::with_capacity(STREAMS);
        for index in 0..STREAMS {
            let client = client.clone();
            let all_open = Arc::clone(&all_open);
            tasks.push(tokio::spawn(async move {
                let (feed, rx) = mpsc::channel(1);
                let requests = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                });
                let mut responses = client.full_duplex_call(requests).await.unwrap();
                let size = (index % 64) as u64;
                feed.send(DuplexRequest {
                    response_size: size,
                    end_with: None,
                })
                .await
                .unwrap();
                let message = responses.message().await.unwrap().expect("one response");
                assert_eq!(message.len() as u64, size);
                all_open.wait().await;
                drop(feed);
                assert!(responses.message().await.unwrap().is_none(), "a clean end");
            }));
        }
        all_open.wait().await;
        let opened = started.elapsed();
        let seen = client.requests_seen().await.unwrap() - before;
        assert!(seen >= STREAMS as u64, "the server saw {seen} streams");
        for task in tasks {
            task.await.unwrap();
        }
        println!(
            "{STREAMS} bidirectional streams open at once on one Unix connection after {opened:?}; \
             all ended cleanly after {:?}",
            started.elapsed()
        );
        assert_eq!(client.add(1, 2).await.unwrap(), 3);
    })
    .await;
}

/// Streams 1 GiB to the server in 1 MiB messages over `transport`; the
/// server's digest of what it read must be the client's of what it sent.
async fn one_gib_checked_by_hash(transport: Transport) {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let server = ServerProcess::start(&[]);
    within(Duration::from_secs(600), async {
        let client = TestingClient::new(channel(&server, transport).await);
        // Four distinct chunks in turn: a reordering or a lost message
        // changes the digest.
        let chunks: Vec<Bytes> = (0..4u8)
            .map(|seed| Bytes::from(payload_pattern(CHUNK, seed)))
            .collect();
        let mut digest = FNV_OFFSET;
        for index in 0..CHUNKS {
            digest = fnv1a64_from(digest, &chunks[index % 4]);
        }
        let started = Instant::now();
        let items =
            futures_util::stream::iter(0..CHUNKS).map(move |index| chunks[index % 4].clone());
        let (len, count, seen) = client.streaming_input_call(items).await.unwrap();
        let took = started.elapsed();
        assert_eq!((len, count), ((CHUNK * CHUNKS) as u64, CHUNKS as u64));
        assert_eq!(seen, digest, "the stream arrived changed");
        println!(
            "1 GiB over {transport} in 1 MiB messages, digest matched, in {took:?} \
             (debug build; the server hashes every byte)"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_stream_over_unix_arrives_whole() {
    one_gib_checked_by_hash(Transport::Unix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_stream_over_shm_arrives_whole() {
    one_gib_checked_by_hash(Transport::Shm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_keeps_a_fast_servers_memory_flat() {
    const SIZE: u64 = 64 * 1024;
    const READ: usize = 300;
    let server = ServerProcess::start(&[]);
    within(Duration::from_secs(120), async {
        let client = TestingClient::new(channel(&server, Transport::Unix).await);
        assert_eq!(client.add(1, 1).await.unwrap(), 2);
        let rss_before = rss_kib(server.pid());
        // The server would stream 2.5 GiB as fast as it can; the client
        // reads one message per 10 ms.
        let mut stream = client
            .streaming_output_call(vec![SIZE; 40_000], 0, None)
            .await
            .unwrap();
        let mut samples = Vec::new();
        for read in 1..=READ {
            let message = stream.message().await.unwrap().expect("a message");
            assert_eq!(message.len() as u64, SIZE);
            if read % 50 == 0 {
                samples.push(rss_kib(server.pid()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(stream);
        let peak = samples.iter().copied().max().unwrap_or(rss_before);
        let grown = peak.saturating_sub(rss_before);
        println!(
            "server RSS while a reader took {READ} of 40,000 64 KiB messages at one per 10 ms: \
             {rss_before} KiB before, samples {samples:?} KiB, peak growth {grown} KiB \
             (window 64 x 64 KiB = 4096 KiB)"
        );
        // Unbounded, the server would have queued ~2.5 GiB.
        assert!(
            grown < 48 * 1024,
            "the server grew by {grown} KiB while its reader was slow"
        );
        assert_eq!(client.add(2, 2).await.unwrap(), 4);
    })
    .await;
}
