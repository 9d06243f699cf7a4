//! Compression in one process, as the connections' debug views show it:
//! off where bytes move through memory (shared memory, TCP on loopback)
//! with the reason; each side decides for what it sends; set to always, a
//! compressible payload shrinks on the wire both ways and comes back
//! intact, stream messages too, while small and incompressible ones and
//! those of a `compress = false` method go as they are. (On across
//! network namespaces: `integration-tests/tests/netns_compression.rs`.)

use futures_util::StreamExt;
#[path = "common/views.rs"]
mod views;

use switchyard::{Channel, Compression, Server, ServerHandle, Streaming, Transport};
use views::client_view;

/// A service that hands back what it is given.
#[switchyard::service]
pub trait Archive {
    /// `data`, back.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// `data`, back, never compressed (as if it were an archive already).
    #[switchyard(compress = false)]
    async fn store(&self, data: Vec<u8>) -> Vec<u8>;
    /// `count` copies of `data`, as a stream.
    async fn repeat(&self, data: Vec<u8>, count: u32) -> Streaming<Vec<u8>>;
}

struct Impl;

impl Archive for Impl {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn store(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn repeat(&self, data: Vec<u8>, count: u32) -> Streaming<Vec<u8>> {
        Streaming::from_iter(std::iter::repeat_n(data, count as usize))
    }
}

/// A server of `Archive` published as `name` in `dir`, on Unix (and so
/// shared memory) and TCP on loopback.
async fn server(dir: &std::path::Path, name: &str, compression: Compression) -> ServerHandle {
    Server::builder()
        .add_service(ArchiveServer::new(Impl))
        .publish(name)
        .runtime_dir(dir)
        .tcp("127.0.0.1:0")
        .compression(compression)
        .start()
        .await
        .expect("server starts")
}

async fn channel(
    dir: &std::path::Path,
    name: &str,
    transport: Transport,
    compression: Compression,
) -> Channel {
    let channel = Channel::builder()
        .runtime_dir(dir)
        .prefer(transport)
        .compression(compression)
        .connect(name)
        .await
        .expect("connects");
    assert_eq!(channel.selection().transport, transport);
    channel
}

/// Text that compresses well: `len` bytes of repeated lines.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut line = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("item {} in stock: {}\n", line % 97, line % 13).as_bytes());
        line += 1;
    }
    out.truncate(len);
    out
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn shared_memory_and_loopback_send_plain_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let _server = server(dir.path(), "archive-auto", Compression::auto()).await;
    let payload = text(200 * 1024);
    for (transport, why) in [
        (
            Transport::Shm,
            "compression off: shm moves bytes through memory",
        ),
        (
            Transport::Tcp,
            "compression off: tcp on loopback (same host and network namespace)",
        ),
    ] {
        let channel = channel(dir.path(), "archive-auto", transport, Compression::auto()).await;
        let client = ArchiveClient::new(channel.clone());
        assert_eq!(client.echo(payload.clone()).await.unwrap(), payload);
        let view = client_view(&channel);
        assert!(!view.compression.on, "{:?}", view.compression);
        assert_eq!(channel.compression().on, None);
        assert_eq!(channel.compression().reason, view.compression.reason);
        assert!(
            view.events
                .iter()
                .any(|e| e.kind == "compression" && e.detail == view.compression.reason),
            "{:?}",
            view.events
        );
        assert!(
            view.compression.reason.starts_with(why),
            "{transport}: {}",
            view.compression.reason
        );
        assert_eq!(
            view.compression.moved,
            Default::default(),
            "{transport}: nothing compressed either way"
        );
    }
}

#[tokio::test]
async fn each_side_decides_for_what_it_sends() {
    let dir = tempfile::tempdir().unwrap();
    let _server = server(dir.path(), "archive-replies", Compression::always()).await;
    let channel = channel(
        dir.path(),
        "archive-replies",
        Transport::Tcp,
        Compression::auto(),
    )
    .await;
    let client = ArchiveClient::new(channel.clone());
    let payload = text(64 * 1024);
    for _ in 0..4 {
        assert_eq!(client.echo(payload.clone()).await.unwrap(), payload);
    }
    let moved = client_view(&channel).compression.moved;
    assert_eq!(moved.payloads_sent, 0, "the client sends plain: {moved:?}");
    assert_eq!(
        moved.payloads_received, 4,
        "the server compresses its replies: {moved:?}"
    );
    assert!(
        moved.raw_bytes_received >= 4 * payload.len() as u64,
        "{moved:?}"
    );
    assert!(
        moved.wire_bytes_received * 5 < moved.raw_bytes_received,
        "{moved:?}"
    );
}

#[tokio::test]
async fn set_to_always_a_compressible_payload_shrinks_both_ways_and_comes_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let _server = server(dir.path(), "archive-always", Compression::always()).await;
    let channel = channel(
        dir.path(),
        "archive-always",
        Transport::Tcp,
        Compression::always(),
    )
    .await;
    let view = client_view(&channel);
    assert!(view.compression.on);
    assert_eq!(channel.compression().on, Some((1024, 1)));
    assert!(
        view.compression
            .reason
            .contains("compression is set to always"),
        "{}",
        view.compression.reason
    );
    let client = ArchiveClient::new(channel.clone());
    let payload = text(256 * 1024);
    for _ in 0..3 {
        assert_eq!(client.echo(payload.clone()).await.unwrap(), payload);
    }
    // Too small to be worth it, and noise: both sent as they are.
    assert_eq!(client.echo(b"tiny".to_vec()).await.unwrap(), b"tiny");
    let random = noise(100 * 1024);
    assert_eq!(client.echo(random.clone()).await.unwrap(), random);
    let view = client_view(&channel);
    let moved = &view.compression.moved;
    println!(
        "3 echoes of 256 KiB of text: {} payload bytes sent as {} ({:.1}x), {} saved both ways",
        moved.raw_bytes_sent,
        moved.wire_bytes_sent,
        moved.ratio_sent(),
        moved.saved()
    );
    assert_eq!(moved.payloads_sent, 3, "{moved:?}");
    assert_eq!(moved.payloads_received, 3, "{moved:?}");
    assert_eq!(
        moved.incompressible, 1,
        "the noise went plain, counted: {moved:?}"
    );
    assert!(
        moved.raw_bytes_sent >= 3 * payload.len() as u64,
        "{moved:?}"
    );
    assert!(
        moved.wire_bytes_sent * 10 < moved.raw_bytes_sent,
        "{moved:?}"
    );
    assert!(moved.saved() > 5 * payload.len() as u64, "{moved:?}");

    // A method marked `compress = false` goes as it is, both ways.
    assert_eq!(client.store(payload.clone()).await.unwrap(), payload);
    let after_store = client_view(&channel).compression.moved;
    assert_eq!(
        (after_store.payloads_sent, after_store.payloads_received),
        (3, 3),
        "{after_store:?}"
    );
    assert_eq!(
        after_store.incompressible, 1,
        "not even tried: {after_store:?}"
    );

    // Stream messages are compressed too: each batch of them (messages
    // that were ready together go as one frame) as one payload.
    let before_stream = after_store;
    let mut stream = client.repeat(text(32 * 1024), 5).await.unwrap();
    let mut messages = 0;
    while let Some(message) = stream.next().await {
        assert_eq!(message.unwrap(), text(32 * 1024));
        messages += 1;
    }
    assert_eq!(messages, 5);
    let after_stream = client_view(&channel).compression.moved;
    let batches = after_stream.payloads_received - before_stream.payloads_received;
    assert!(
        (1..=5).contains(&batches),
        "the messages came compressed, in 1 to 5 frames: {after_stream:?}"
    );
    let raw = after_stream.raw_bytes_received - before_stream.raw_bytes_received;
    let wire = after_stream.wire_bytes_received - before_stream.wire_bytes_received;
    assert!(raw >= 5 * 32 * 1024, "{after_stream:?}");
    assert!(wire * 10 < raw, "{after_stream:?}");
    // Prometheus shows the process totals.
    let metrics = switchyard::debug::render_prometheus(&switchyard::debug::snapshot());
    assert!(
        metrics.contains("switchyard_compressed_bytes_total{direction=\"sent\",form=\"raw\"}"),
        "{metrics}"
    );
}
