//! The shared-memory link end to end in one process: set-up over a Unix
//! socket, frames both ways, end-of-file when a side goes.

#![cfg(target_os = "linux")]

use std::time::Duration;

use switchyard::protocol::frame::{Decoded, Frame, Header, Kind};
use switchyard::transport::shm::{Accepted, accept, connect};
use switchyard::transport::unix::UnixListener;
use switchyard::transport::{Link, LinkRx, LinkTx, Listener, Transport};

fn frame(call_id: u64, payload: Vec<u8>) -> Vec<u8> {
    let frame = Frame::new(
        Header::new(Kind::Request, call_id),
        bytes::Bytes::new(),
        bytes::Bytes::from(payload),
    );
    let mut out = Vec::new();
    frame.encode_into(&mut out);
    out
}

#[tokio::test]
async fn a_shm_link_carries_frames_both_ways_and_sees_its_peer_go() {
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
    let client = connect(&path, 64 * 1024).await.unwrap();
    let server = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.transport(), Transport::Shm);
    assert_eq!(client.peer().pid, Some(std::process::id()));
    let (mut ctx, mut crx) = client.split(1 << 20);
    let (mut stx, mut srx) = server.split(1 << 20);
    // Bigger than the ring: it wraps and waits for the reader.
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    let sending = tokio::spawn(async move {
        ctx.send(&frame(1, big.clone())).await.unwrap();
        ctx.send(&frame(2, b"small".to_vec())).await.unwrap();
        ctx
    });
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(srx.recv(&mut got).await.unwrap());
    }
    let Decoded::Frame(first) = &got[0] else {
        panic!()
    };
    assert_eq!(first.payload.len(), 300_000);
    assert!(first.payload.iter().enumerate().all(|(i, b)| *b == i as u8));
    let mut ctx = sending.await.unwrap();
    stx.send(&frame(3, b"back".to_vec())).await.unwrap();
    let mut back = Vec::new();
    assert!(crx.recv(&mut back).await.unwrap());
    assert_eq!(back.len(), 1);
    // The client goes: the server sees a clean end.
    ctx.close().await.unwrap();
    drop((ctx, crx));
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), srx.recv(&mut rest))
        .await
        .expect("end-of-file is noticed");
    assert!(!ended.unwrap(), "a clean close between frames");
}
