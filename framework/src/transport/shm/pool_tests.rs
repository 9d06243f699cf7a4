//! The pool over a real shared-memory link in one process: bodies through
//! reused segments, a sender that scribbles after sending, a receiver that
//! never copies out, a body larger than the pool, and the accounting.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::link::{Accepted, ShmLink, ShmRx, ShmTx, accept, connect};
use crate::protocol::frame::{Decoded, Frame, Header, Kind};
use crate::transport::bulk::BulkCounters;
use crate::transport::unix::UnixListener;
use crate::transport::{Link, LinkRx, LinkTx, Listener};

const MIB: usize = 1 << 20;

/// A client and a server link; the client's pool holds at most `limit`.
async fn pair(limit: usize) -> ((ShmTx, ShmRx), (ShmTx, ShmRx), tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let mut listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let link = listener.accept().await.unwrap();
        let (stream, peer) = link.into_parts();
        match accept(stream, peer).await.unwrap() {
            Accepted::Shm(link) => link,
            Accepted::Stream(..) => panic!("expected shared memory"),
        }
    });
    let client: ShmLink = connect(&path, 64 * 1024).await.unwrap();
    assert!(client.has_pool(), "both sides speak pools");
    let client = client.with_pool_limit(limit);
    let server = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    (
        client.split(64 * MIB as u32),
        server.split(64 * MIB as u32),
        dir,
    )
}

/// A request frame whose payload is `len` bytes of `seed`-derived data.
fn frame(call_id: u64, len: usize, seed: u8) -> Vec<u8> {
    let payload: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let frame = Frame::new(
        Header::new(Kind::Request, call_id),
        Bytes::new(),
        Bytes::from(payload),
    );
    let mut out = Vec::new();
    frame.encode_into(&mut out);
    out
}

fn intact(frame: &Decoded, len: usize, seed: u8) -> bool {
    let Decoded::Frame(frame) = frame else {
        return false;
    };
    frame.payload.len() == len
        && frame
            .payload
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u8).wrapping_mul(31) ^ seed)
}

async fn recv_n(rx: &mut ShmRx, n: usize) -> Vec<Decoded> {
    let mut got = Vec::new();
    while got.len() < n {
        let more = tokio::time::timeout(Duration::from_secs(10), rx.recv(&mut got))
            .await
            .expect("frames arrive")
            .unwrap();
        assert!(more, "the link stays open");
    }
    got
}

fn counters(tx: &ShmTx) -> Arc<BulkCounters> {
    crate::transport::bulk::BulkTx::counters(tx)
}

#[tokio::test]
async fn large_bodies_go_through_the_pool_and_its_room_is_reused() {
    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(super::DEFAULT_POOL_LIMIT).await;
    for i in 0..50u8 {
        ctx.send(&frame(u64::from(i), MIB, i)).await.unwrap();
        let got = recv_n(&mut srx, 1).await;
        assert!(intact(&got[0], MIB, i), "body {i} intact");
    }
    let moved = counters(&ctx);
    assert_eq!(moved.pool_sent.load(Ordering::Relaxed), 50);
    assert_eq!(moved.pool_fallbacks.load(Ordering::Relaxed), 0);
    let capacity = moved.pool_capacity.load(Ordering::Relaxed);
    assert!(
        capacity <= 8 * MIB as u64,
        "one released body at a time needs one small segment, not {capacity} bytes"
    );
    // The pool goes with the sending half, and says so.
    drop(ctx);
    assert_eq!(moved.pool_in_use.load(Ordering::Relaxed), 0);
    assert_eq!(moved.pool_capacity.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_sender_scribbling_after_sending_changes_nothing_the_receiver_copied() {
    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(super::DEFAULT_POOL_LIMIT).await;
    ctx.send(&frame(1, 2 * MIB, 7)).await.unwrap();
    let got = recv_n(&mut srx, 1).await;
    crate::transport::bulk::BulkTx::pool(&ctx)
        .expect("a pool")
        .scribble(0xAA);
    assert!(
        intact(&got[0], 2 * MIB, 7),
        "the receiver's copy is its own"
    );
    // And a body sent after the scribbling is what was sent.
    ctx.send(&frame(2, 2 * MIB, 9)).await.unwrap();
    let got = recv_n(&mut srx, 1).await;
    assert!(intact(&got[0], 2 * MIB, 9));
}

#[tokio::test]
async fn a_receiver_that_never_copies_out_holds_the_sender_at_the_pool_limit() {
    let limit = 8 * MIB;
    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(limit).await;
    let moved = counters(&ctx);
    let sending = tokio::spawn(async move {
        for i in 0..20u8 {
            ctx.send(&frame(u64::from(i), MIB, i)).await.unwrap();
        }
        ctx
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sending.is_finished(), "the sender waits for room");
    let in_use = moved.pool_in_use.load(Ordering::Relaxed);
    let capacity = moved.pool_capacity.load(Ordering::Relaxed);
    println!("receiver not reading: pool {in_use} bytes in use of {capacity} held (limit {limit})");
    assert!(capacity <= limit as u64 && in_use <= capacity);
    assert!(
        in_use >= 3 * MIB as u64,
        "the pool filled before the sender waited"
    );
    // The receiver reads: every body arrives intact, in order.
    let got = recv_n(&mut srx, 20).await;
    for (i, frame) in got.iter().enumerate() {
        assert!(intact(frame, MIB, i as u8), "body {i} intact");
    }
    let ctx = tokio::time::timeout(Duration::from_secs(10), sending)
        .await
        .expect("the sender finishes once the receiver reads")
        .unwrap();
    assert_eq!(moved.pool_sent.load(Ordering::Relaxed), 20);
    drop(ctx);
}

#[tokio::test]
async fn a_loan_kept_for_ever_holds_its_room_and_nothing_more() {
    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(super::DEFAULT_POOL_LIMIT).await;
    let pool = crate::transport::bulk::BulkTx::pool(&ctx).expect("a pool");
    let mut kept = pool.loan(MIB).expect("a loan");
    kept.as_mut_slice().fill(5);
    // Many bodies go and are released after the loan, which stays.
    for i in 0..300u16 {
        let seed = i as u8;
        ctx.send(&frame(u64::from(i), 512 * 1024, seed))
            .await
            .unwrap();
        let got = recv_n(&mut srx, 1).await;
        assert!(intact(&got[0], 512 * 1024, seed), "body {i} intact");
    }
    let moved = counters(&ctx);
    assert_eq!(moved.pool_sent.load(Ordering::Relaxed), 300);
    // The loan, and at most the last body not yet known to be released:
    // not the 300 bodies allocated after the loan.
    pool.note_releases();
    let tracked = pool.chunks_tracked();
    assert!(tracked <= 2, "{tracked} chunks tracked");
    assert!(
        kept.as_ref().iter().all(|&b| b == 5),
        "the loan is untouched"
    );
    drop(kept);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.chunks_tracked() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        pool.note_releases();
    }
    assert_eq!(
        pool.chunks_tracked(),
        0,
        "everything freed once the loan goes"
    );
    assert_eq!(moved.pool_in_use.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_body_larger_than_the_pool_travels_as_a_region_of_its_own() {
    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(MIB).await;
    ctx.send(&frame(1, 2 * MIB, 3)).await.unwrap();
    let got = recv_n(&mut srx, 1).await;
    assert!(intact(&got[0], 2 * MIB, 3));
    let moved = counters(&ctx);
    assert_eq!(moved.pool_fallbacks.load(Ordering::Relaxed), 1, "counted");
    assert_eq!(moved.pool_sent.load(Ordering::Relaxed), 0);
    assert_eq!(moved.sent.load(Ordering::Relaxed), 1, "as a bulk region");
    // A body the pool can take still goes there.
    ctx.send(&frame(2, MIB / 2, 4)).await.unwrap();
    let got = recv_n(&mut srx, 1).await;
    assert!(intact(&got[0], MIB / 2, 4));
    assert_eq!(moved.pool_sent.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_pool_limit_of_zero_turns_the_pool_off() {
    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(0).await;
    ctx.send(&frame(1, MIB, 5)).await.unwrap();
    let got = recv_n(&mut srx, 1).await;
    assert!(intact(&got[0], MIB, 5));
    let moved = counters(&ctx);
    assert_eq!(moved.pool_sent.load(Ordering::Relaxed), 0);
    assert_eq!(moved.sent.load(Ordering::Relaxed), 1);
}

/// A frame standing for a pooled body, as a hostile sender could write it
/// into the ring.
fn forged_stand_in(seq: u64, segment: u32, offset: u64, len: u32) -> Vec<u8> {
    use crate::protocol::frame::{HEADER_LEN, PoolDescriptor};
    let header = Header::new(Kind::Request, 9);
    let descriptor = PoolDescriptor {
        seq,
        offset,
        segment,
        oldest: 0,
        metadata_len: 0,
        payload_len: len,
    };
    let mut out = vec![0u8; HEADER_LEN + PoolDescriptor::LEN];
    let mut head = [0u8; HEADER_LEN];
    PoolDescriptor::stand_in(&header).write_to(&mut head);
    out[..HEADER_LEN].copy_from_slice(&head);
    out[HEADER_LEN..].copy_from_slice(&descriptor.to_bytes());
    out
}

async fn refused(rx: &mut ShmRx) -> String {
    let mut got = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(10), rx.recv(&mut got))
        .await
        .expect("the receiver answers");
    match result {
        Err(err) => err.to_string(),
        Ok(more) => panic!(
            "a forged descriptor was taken (more: {more}, {} frames)",
            got.len()
        ),
    }
}

#[tokio::test]
async fn a_descriptor_without_its_segment_closes_the_link_with_a_reason() {
    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(super::DEFAULT_POOL_LIMIT).await;
    ctx.send(&forged_stand_in(0, 0, 0, 1 << 20)).await.unwrap();
    let why = refused(&mut srx).await;
    assert!(why.contains("without its segment"), "{why}");
}

#[tokio::test]
async fn a_descriptor_outside_its_segment_or_out_of_order_is_refused() {
    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(super::DEFAULT_POOL_LIMIT).await;
    // A real body first: segment 0 is mapped on the receiver.
    ctx.send(&frame(1, MIB, 1)).await.unwrap();
    let got = recv_n(&mut srx, 1).await;
    assert!(intact(&got[0], MIB, 1));
    ctx.send(&forged_stand_in(1, 0, u64::MAX - 10, 1 << 20))
        .await
        .unwrap();
    let why = refused(&mut srx).await;
    assert!(why.contains("outside its segment"), "{why}");

    let ((mut ctx, _crx), (_stx, mut srx), _dir) = pair(super::DEFAULT_POOL_LIMIT).await;
    ctx.send(&frame(1, MIB, 1)).await.unwrap();
    let _ = recv_n(&mut srx, 1).await;
    ctx.send(&forged_stand_in(7, 0, 0, 1 << 20)).await.unwrap();
    let why = refused(&mut srx).await;
    assert!(why.contains("arrived where 1 was due"), "{why}");
}
