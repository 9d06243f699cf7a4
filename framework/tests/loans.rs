//! Loans (`Channel::loan`, `Context::loan`): a large argument or result
//! written in place in the connection's shared-memory pool is sent from
//! where it lies (counted as loaned, not copied), and arrives intact; what
//! cannot be sent in place (a second send, a frame head too large for the
//! loan's headroom, arguments too long for its tailroom, a connection
//! without a pool) is copied and arrives intact too; the loan's room is
//! held while the caller keeps the bytes and is free once both are done.
#![cfg(target_os = "linux")]

use std::time::Duration;

#[path = "common/views.rs"]
mod views;

use switchyard::debug::model::MmapTrack;
use switchyard::{Bytes, Channel, Context, Server, ServerHandle, Transport};
use views::client_view;

/// A service with large arguments and results.
#[switchyard::service]
pub trait Blobs {
    /// FNV-1a of `data`, and `tag` back.
    async fn digest(&self, data: Bytes, tag: String) -> (u64, String);
    /// `len` bytes of the pattern of `seed`, written into a loan.
    async fn make(&self, len: u64, seed: u8) -> Bytes;
    /// `len` bytes of the pattern of `seed`, from the heap.
    async fn blob(&self, len: u64, seed: u8) -> Bytes;
}

struct Impl;

impl Blobs for Impl {
    async fn digest(&self, data: Bytes, tag: String) -> (u64, String) {
        (fnv(&data), tag)
    }

    async fn make(&self, len: u64, seed: u8) -> Bytes {
        let ctx = Context::current().expect("inside a handler");
        let mut loan = ctx.loan(len as usize);
        fill(&mut loan, seed);
        loan.freeze()
    }

    async fn blob(&self, len: u64, seed: u8) -> Bytes {
        Bytes::from(pattern(len as usize, seed))
    }
}

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(60);

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
    })
}

fn fill(out: &mut [u8], seed: u8) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = ((i % 251) as u8).wrapping_add(seed);
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0; len];
    fill(&mut out, seed);
    out
}

async fn server(dir: &std::path::Path, name: &str) -> ServerHandle {
    server_with(dir, name, Server::builder()).await
}

async fn server_with(
    dir: &std::path::Path,
    name: &str,
    builder: switchyard::ServerBuilder,
) -> ServerHandle {
    builder
        .add_service(BlobsServer::new(Impl))
        .publish(name)
        .runtime_dir(dir)
        .start()
        .await
        .expect("server starts")
}

async fn channel(dir: &std::path::Path, name: &str, transport: Transport) -> Channel {
    let channel = Channel::builder()
        .runtime_dir(dir)
        .prefer(transport)
        .connect(name)
        .await
        .expect("connects");
    assert_eq!(channel.selection().transport, transport);
    channel
}

fn mmap(channel: &Channel) -> MmapTrack {
    client_view(channel)
        .mmap
        .expect("a shm connection's mmap track")
}

/// The server sides (in this process) that sent loaned bodies: only
/// `make`'s handler loans, and only one test calls it.
fn loaning_servers() -> Vec<MmapTrack> {
    switchyard::debug::snapshot()
        .connections
        .into_iter()
        .filter(|c| c.role == "server")
        .filter_map(|c| c.mmap)
        .filter(|m| m.pool_loaned_bodies > 0)
        .collect()
}

#[tokio::test]
async fn a_loaned_argument_is_sent_from_where_it_was_written() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let _server = server(dir.path(), "blobs-loan").await;
        let channel = channel(dir.path(), "blobs-loan", Transport::Shm).await;
        let client = BlobsClient::new(channel.clone());
        let mut loan = channel.loan(4 * MIB);
        assert!(loan.in_shared_memory(), "{loan:?}");
        fill(&mut loan, 7);
        let data = loan.freeze();
        let expected = fnv(&pattern(4 * MIB, 7));

        let got = client.digest(data.clone(), "first".into()).await.unwrap();
        assert_eq!(got, (expected, "first".to_owned()));
        let after_one = mmap(&channel);
        assert_eq!(after_one.pool_loaned_bodies, 1, "{after_one:?}");
        assert_eq!(after_one.pool_bodies_sent, 1, "{after_one:?}");

        // The same bytes again: copied, as the loan may still be read.
        let got = client.digest(data.clone(), "again".into()).await.unwrap();
        assert_eq!(got, (expected, "again".to_owned()));
        let after_two = mmap(&channel);
        assert_eq!(after_two.pool_loaned_bodies, 1, "{after_two:?}");
        assert_eq!(after_two.pool_bodies_sent, 2, "{after_two:?}");

        // The caller still holds the bytes: their room is in use.
        assert!(
            after_two.pool_in_use_bytes >= 4 * MIB as u64,
            "{after_two:?}"
        );
        drop(data);
        // Dropped, and the server released both bodies: nothing in use.
        loop {
            let now = mmap(&channel);
            if now.pool_in_use_bytes == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn what_does_not_fit_around_a_loan_is_copied_and_arrives_intact() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let _server = server(dir.path(), "blobs-fit").await;
        let channel = channel(dir.path(), "blobs-fit", Transport::Shm).await;
        let client = BlobsClient::new(channel.clone());
        let expected = fnv(&pattern(2 * MIB, 3));
        let loaned = || {
            let mut loan = channel.loan(2 * MIB);
            assert!(loan.in_shared_memory());
            fill(&mut loan, 3);
            loan.freeze()
        };

        // Arguments after the loaned bytes longer than its tailroom.
        let long_tag = "t".repeat(5000);
        let got = client.digest(loaned(), long_tag.clone()).await.unwrap();
        assert_eq!(got, (expected, long_tag));
        // Metadata longer than its headroom (the frame head precedes it).
        let heavy = client.with_metadata("padding", vec![b'x'; 8000]);
        let got = heavy.digest(loaned(), "heavy".into()).await.unwrap();
        assert_eq!(got, (expected, "heavy".to_owned()));
        let track = mmap(&channel);
        assert_eq!(track.pool_loaned_bodies, 0, "both copied: {track:?}");
        assert_eq!(track.pool_bodies_sent, 2, "{track:?}");

        // A short tag and light metadata: in place.
        let got = client.digest(loaned(), "light".into()).await.unwrap();
        assert_eq!(got, (expected, "light".to_owned()));
        assert_eq!(mmap(&channel).pool_loaned_bodies, 1);

        // Over a socket a loan is a heap buffer, and works the same.
        let unix = self::channel(dir.path(), "blobs-fit", Transport::Unix).await;
        let mut loan = unix.loan(2 * MIB);
        assert!(!loan.in_shared_memory());
        fill(&mut loan, 3);
        let got = BlobsClient::new(unix)
            .digest(loan.freeze(), "unix".into())
            .await
            .unwrap();
        assert_eq!(got, (expected, "unix".to_owned()));
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn a_handler_returns_a_loaned_result_in_place() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let _server = server(dir.path(), "blobs-reply").await;
        let channel = channel(dir.path(), "blobs-reply", Transport::Shm).await;
        let client = BlobsClient::new(channel.clone());
        for (round, len) in [MIB, 3 * MIB, 300 * 1024, MIB].into_iter().enumerate() {
            let got = client.make(len as u64, round as u8).await.unwrap();
            assert!(got[..] == pattern(len, round as u8)[..], "round {round}");
        }
        let servers = loaning_servers();
        assert_eq!(servers.len(), 1, "{servers:?}");
        assert_eq!(servers[0].pool_loaned_bodies, 4, "{servers:?}");
        assert_eq!(servers[0].pool_bodies_sent, 4, "{servers:?}");
        // The handler dropped its loans once they were sent; the client
        // copied each body out: the server's pool holds none.
        while loaning_servers()[0].pool_in_use_bytes != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Over a socket the handler's loan is a heap buffer.
        let unix = self::channel(dir.path(), "blobs-reply", Transport::Unix).await;
        let got = BlobsClient::new(unix).make(MIB as u64, 9).await.unwrap();
        assert!(got[..] == pattern(MIB, 9)[..]);
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn bodies_read_in_place_hold_the_senders_room_until_dropped() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        // The server's pool holds at most 16 MiB: three 4 MiB results held
        // in place by the client leave no room for an 8 MiB one.
        let builder = Server::builder()
            .shm_pool_limit(16 * MIB)
            .shm_read_in_place(true);
        let _server = server_with(dir.path(), "blobs-in-place", builder).await;
        let channel = Channel::builder()
            .runtime_dir(dir.path())
            .prefer(Transport::Shm)
            .shm_read_in_place(true)
            .connect("blobs-in-place")
            .await
            .expect("connects");
        assert_eq!(channel.selection().transport, Transport::Shm);
        let client = BlobsClient::new(channel.clone());
        let mut held = Vec::new();
        for seed in 0..3u8 {
            let got = client.blob(4 * MIB as u64, seed).await.unwrap();
            assert!(got[..] == pattern(4 * MIB, seed)[..], "result {seed}");
            held.push(got);
        }
        let track = mmap(&channel);
        assert!(track.reads_in_place, "{track:?}");
        assert_eq!(track.bodies_received, 3, "{track:?}");

        // The fourth waits for room: the three are still read in place.
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.blob(8 * MIB as u64, 9).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "the server reused room still lent out"
        );
        // Their contents never changed meanwhile.
        for (seed, got) in held.iter().enumerate() {
            assert!(got[..] == pattern(4 * MIB, seed as u8)[..]);
        }
        drop(held);
        let got = waiting.await.unwrap().unwrap();
        assert!(got[..] == pattern(8 * MIB, 9)[..]);

        // The server reads the client's bodies in place too.
        let data = Bytes::from(pattern(4 * MIB, 5));
        let got = client.digest(data, "in place".into()).await.unwrap();
        assert_eq!(got, (fnv(&pattern(4 * MIB, 5)), "in place".to_owned()));
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn bodies_are_copied_out_unless_asked() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let _server = server(dir.path(), "blobs-copied").await;
        let channel = channel(dir.path(), "blobs-copied", Transport::Shm).await;
        let client = BlobsClient::new(channel.clone());
        let got = client.blob(MIB as u64, 1).await.unwrap();
        assert!(got[..] == pattern(MIB, 1)[..]);
        let track = mmap(&channel);
        assert!(!track.reads_in_place, "{track:?}");
        assert_eq!(track.bodies_received, 1, "{track:?}");
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn a_loan_held_by_the_caller_never_wedges_the_connection() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let _server = server(dir.path(), "blobs-held").await;
        // A pool of 8 MiB: a 5 MiB loan kept by the caller leaves no room
        // for a copy of it, which only dropping the loan would free.
        let channel = Channel::builder()
            .runtime_dir(dir.path())
            .prefer(Transport::Shm)
            .shm_pool_limit(8 * MIB)
            .connect("blobs-held")
            .await
            .expect("connects");
        let client = BlobsClient::new(channel.clone());
        let mut loan = channel.loan(5 * MIB);
        assert!(loan.in_shared_memory());
        fill(&mut loan, 4);
        let data = loan.freeze();
        let expected = fnv(&pattern(5 * MIB, 4));
        for round in 0..3 {
            let got = client.digest(data.clone(), "held".into()).await.unwrap();
            assert_eq!(got.0, expected, "round {round}");
            // Small calls keep going too.
            let small = client.digest(Bytes::from(vec![1u8; 10]), "small".into());
            assert_eq!(small.await.unwrap().1, "small");
        }
        let track = mmap(&channel);
        assert_eq!(track.pool_loaned_bodies, 1, "{track:?}");
        assert!(
            track.pool_fallbacks >= 1,
            "the copies went as regions: {track:?}"
        );
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn a_kept_loan_does_not_keep_emptied_segments_or_block_a_larger_body() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let _server = server(dir.path(), "blobs-kept").await;
        let channel = Channel::builder()
            .runtime_dir(dir.path())
            .prefer(Transport::Shm)
            .shm_pool_limit(16 * MIB)
            .connect("blobs-kept")
            .await
            .expect("connects");
        let client = BlobsClient::new(channel.clone());
        let mut kept = channel.loan(MIB);
        fill(&mut kept, 1);
        let kept = kept.freeze();
        for (len, seed) in [(7 * MIB / 2, 2u8), (10 * MIB, 3), (MIB, 4), (10 * MIB, 5)] {
            let data = Bytes::from(pattern(len, seed));
            let got = client.digest(data, "next".into()).await.unwrap();
            assert_eq!(got.0, fnv(&pattern(len, seed)), "{len} bytes");
        }
        assert!(kept[..] == pattern(MIB, 1)[..], "the kept loan is intact");
        drop(kept);
        // Dropped: the next large body goes through the pool at once.
        let got = client
            .digest(Bytes::from(pattern(10 * MIB, 6)), "after".into())
            .await
            .unwrap();
        assert_eq!(got.0, fnv(&pattern(10 * MIB, 6)));
        let track = mmap(&channel);
        assert!(track.pool_held_bytes <= 16 * MIB as u64, "{track:?}");
    })
    .await
    .expect("within the limit");
}
