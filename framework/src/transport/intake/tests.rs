//! The frame deadline and the partial-frame budget, on a paused clock.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::*;
use crate::protocol::frame::{HEADER_LEN, Header, Kind};
use crate::transport::LinkRx;
use crate::transport::stream::StreamRx;

/// The wire form of a request header announcing `body` bytes.
fn header(body: u32) -> Vec<u8> {
    let mut header = Header::new(Kind::Request, 7);
    header.payload_len = body;
    let mut wire = vec![0u8; HEADER_LEN];
    header.write_to(&mut wire);
    wire
}

fn deadline() -> FrameDeadline {
    FrameDeadline {
        base: Duration::from_secs(2),
        min_rate: 1 << 20,
    }
}

/// A budget of `limit` bytes, limits with it and [`deadline`], and the
/// first bytes of a 4 MiB frame.
fn started_frame(limit: usize) -> (Arc<PartialBudget>, IntakeLimits, FrameDecoder, BytesMut) {
    let budget = PartialBudget::new(limit);
    let limits = IntakeLimits {
        deadline: Some(deadline()),
        budget: Some(Arc::clone(&budget)),
    };
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&header(4 << 20)[..8]);
    (budget, limits, FrameDecoder::new(16 << 20), buf)
}

#[test]
fn a_frame_gets_the_base_time_plus_a_second_per_min_rate_bytes() {
    let rule = deadline();
    assert_eq!(rule.allowed(0), Duration::from_secs(2));
    assert_eq!(rule.allowed(16 << 20), Duration::from_secs(18));
    assert_eq!(rule.allowed(512 << 10), Duration::from_millis(2500));
    assert_eq!(rule.to_string(), "2s plus 1 s per 1024 KiB");
}

#[test]
fn the_clock_starts_with_a_frame_and_counts_its_announced_length() {
    let mut intake = Intake::new(
        IntakeLimits {
            deadline: Some(deadline()),
            budget: None,
        },
        FREE_PER_RECEIVER,
    );
    let mut decoder = FrameDecoder::new(16 << 20);
    let mut buf = BytesMut::new();
    intake.settle(false, &decoder, &buf);
    assert!(intake.due().is_none(), "nothing under way between frames");
    // Half a header: the base time.
    buf.extend_from_slice(&header(4 << 20)[..10]);
    intake.settle(false, &decoder, &buf);
    let due = intake.due().expect("a frame is under way");
    assert_eq!(due.by - due.since, Duration::from_secs(2));
    // The whole header: its length counts.
    buf.clear();
    buf.extend_from_slice(&header(4 << 20));
    assert!(decoder.decode(&mut buf).unwrap().is_none());
    intake.settle(false, &decoder, &buf);
    let sized = intake.due().unwrap();
    assert_eq!(sized.since, due.since, "the same frame, the same start");
    assert!(sized.by - sized.since >= Duration::from_secs(6));
    // A frame taken off the buffer ends its clock.
    let mut whole = BytesMut::from(&header(0)[..]);
    let mut fresh = FrameDecoder::new(16 << 20);
    assert!(fresh.decode(&mut whole).unwrap().is_some());
    intake.settle(true, &fresh, &whole);
    assert!(intake.due().is_none());
}

#[test]
fn buffers_beyond_the_free_part_are_charged_and_dropping_frees_them() {
    let budget = PartialBudget::new(8 << 20);
    let limits = IntakeLimits {
        deadline: None,
        budget: Some(Arc::clone(&budget)),
    };
    let decoder = FrameDecoder::new(16 << 20);
    let mut intake = Intake::new(limits, 64 << 10);
    let mut buf = BytesMut::with_capacity(32 << 10);
    buf.extend_from_slice(&header(1 << 20));
    intake.settle(false, &decoder, &buf);
    assert_eq!(budget.used(), 0, "within the free part");
    buf.reserve(1 << 20);
    intake.settle(false, &decoder, &buf);
    assert_eq!(budget.used(), buf.capacity() - (64 << 10));
    drop(intake);
    assert_eq!(budget.used(), 0);
}

#[tokio::test(start_paused = true)]
async fn past_the_budget_one_receiver_grows_and_the_others_wait_for_it() {
    let (budget, limits, decoder, buf) = started_frame(1 << 20);
    // The first takes the whole budget.
    let mut first = Intake::new(limits.clone(), 0);
    first.settle(false, &decoder, &buf);
    first.room(&buf, 512 << 10).await.unwrap();
    assert!(budget.used() > 512 << 10 && budget.used() <= 1 << 20);
    // The second may still grow past the budget: it is the one allowed to.
    let mut second = Intake::new(limits.clone(), 0);
    second.settle(false, &decoder, &buf);
    second.room(&buf, 1 << 20).await.unwrap();
    assert!(budget.used() > 3 << 19, "{}", budget.used());
    // The third waits until the first lets go of its bytes.
    let mut third = Intake::new(limits.clone(), 0);
    third.settle(false, &decoder, &buf);
    let waiting = tokio::spawn(async move {
        third
            .room(&BytesMut::new(), 512 << 10)
            .await
            .map(|()| third)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the budget is spent");
    drop(first);
    drop(second);
    let third = waiting.await.unwrap().expect("room once freed");
    assert_eq!(budget.used(), 512 << 10);
    drop(third);
    assert_eq!(budget.used(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_receiver_waiting_for_room_fails_at_its_frames_deadline() {
    let (_budget, limits, decoder, buf) = started_frame(0);
    let mut holder = Intake::new(limits.clone(), 0);
    holder.settle(false, &decoder, &buf);
    holder.room(&buf, 1 << 20).await.unwrap();
    let mut waiter = Intake::new(limits, 0);
    waiter.settle(false, &decoder, &buf);
    let started = tokio::time::Instant::now();
    let err = Due::run(waiter.due(), waiter.room(&buf, 1 << 20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LinkError::FrameTimeout { allowed, .. } if allowed == Duration::from_secs(2)),
        "{err}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(2100),
        "{waited:?}"
    );
    assert!(
        err.to_string().contains("ServerBuilder::frame_timeout"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stops_in_a_frame_fails_at_its_deadline_and_frees_the_bytes() {
    let budget = PartialBudget::new(64 << 20);
    let limits = IntakeLimits {
        deadline: Some(deadline()),
        budget: Some(Arc::clone(&budget)),
    };
    let (mut peer, ours) = tokio::io::duplex(8 << 20);
    let mut rx = StreamRx::new(ours, 16 << 20).with_limits(limits);
    // 4 MiB announced, 3 MiB sent, then nothing (the peer stays).
    let body = 4u32 << 20;
    peer.write_all(&header(body)).await.unwrap();
    peer.write_all(&vec![0u8; 3 << 20]).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let err = rx.recv(&mut out).await.unwrap_err();
    assert!(out.is_empty());
    let allowed = deadline().allowed(u64::from(body) + HEADER_LEN as u64);
    assert!(
        matches!(err, LinkError::FrameTimeout { allowed: a, .. } if a == allowed),
        "{err}"
    );
    assert!(
        started.elapsed() <= allowed + Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(budget.used(), 0, "the partial frame was freed");
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_whole_frames_never_meets_the_deadline() {
    let limits = IntakeLimits {
        deadline: Some(deadline()),
        budget: Some(PartialBudget::new(0)),
    };
    let (mut peer, ours) = tokio::io::duplex(1 << 20);
    let mut rx = StreamRx::new(ours, 16 << 20).with_limits(limits);
    for _ in 0..3 {
        let mut wire = header(100);
        wire.extend_from_slice(&[1u8; 100]);
        peer.write_all(&wire).await.unwrap();
        let mut out = Vec::new();
        assert!(rx.recv(&mut out).await.unwrap());
        assert_eq!(out.len(), 1);
        // Quiet between frames for longer than any frame's deadline.
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}
