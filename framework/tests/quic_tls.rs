//! QUIC beyond the conformance suite: certificate pinning, identities from
//! PEM files, calls that do not wait for each other, and the bound on
//! concurrent streams.

#![cfg(feature = "quic")]

use std::time::Duration;

use switchyard::protocol::frame::{Decoded, Frame, Header, Kind};
use switchyard::transport::quic::{
    self, ConnectError, Fingerprint, Identity, QuicConfig, QuicLink, QuicListener,
};
use switchyard::transport::{Link, LinkRx, LinkTx, Listener};
use tokio::time::timeout;

/// How long any one test may take.
const TIME_LIMIT: Duration = Duration::from_secs(30);
const LIMIT: u32 = 16 << 20;

fn frame(kind: Kind, call_id: u64, payload_len: usize) -> Frame {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
    Frame::new(
        Header::new(kind, call_id),
        Default::default(),
        payload.into(),
    )
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        frame.encode_into(&mut out);
    }
    out
}

/// A connected `(client, server)` pair.
async fn pair(listener: &mut QuicListener, config: &QuicConfig) -> (QuicLink, QuicLink) {
    let addr = listener.local_addr().to_string();
    let pin = listener.fingerprint();
    let (server, client) = tokio::join!(listener.accept(), quic::connect_with(&addr, &pin, config));
    (client.expect("connect"), server.expect("accept"))
}

/// Receives until `n` items arrived.
async fn recv_n<R: LinkRx>(rx: &mut R, n: usize) -> Vec<Decoded> {
    let mut out = Vec::new();
    while out.len() < n {
        assert!(rx.recv(&mut out).await.expect("recv"), "link ended early");
    }
    out
}

fn call_ids(got: &[Decoded]) -> Vec<(Kind, u64)> {
    got.iter()
        .map(|d| match d {
            Decoded::Frame(f) => (f.header.kind, f.header.call_id),
            Decoded::Oversized(h) => (h.kind, h.call_id),
        })
        .collect()
}

async fn bounded(test: impl Future<Output = ()>) {
    timeout(TIME_LIMIT, test)
        .await
        .expect("did not finish in time (deadlock?)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_fails_naming_both_fingerprints() {
    bounded(async {
        let mut listener = QuicListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().to_string();
        let pin = listener.fingerprint();
        // The listener goes on accepting: a failed handshake is not even
        // an error of `accept`, which returns the next good link.
        let accepting = tokio::spawn(async move { listener.accept().await });
        let wrong = Fingerprint::from_bytes([0xab; 32]);
        let err = match quic::connect(&addr, &wrong).await {
            Ok(_) => panic!("a wrong pin connected"),
            Err(err) => err,
        };
        match &err {
            ConnectError::FingerprintMismatch { expected, seen, .. } => {
                assert_eq!(*expected, wrong);
                assert_eq!(*seen, pin);
            }
            other => panic!("expected a fingerprint mismatch, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("did not match"), "{message}");
        assert!(message.contains(&wrong.to_string()), "{message}");
        assert!(message.contains(&pin.to_string()), "{message}");
        let io = std::io::Error::from(err);
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);

        // The right pin gets through.
        let client = quic::connect(&addr, &pin).await.expect("right pin");
        let server = accepting
            .await
            .unwrap()
            .expect("the refused handshake does not end accept");
        let (mut ctx, _crx) = client.split(LIMIT);
        let (_stx, mut srx) = server.split(LIMIT);
        let ping = frame(Kind::Ping, 1, 3);
        ctx.send(&encode(std::slice::from_ref(&ping)))
            .await
            .unwrap();
        assert_eq!(recv_n(&mut srx, 1).await, [Decoded::Frame(ping)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_presents_an_identity_loaded_from_pem_files() {
    bounded(async {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let identity = Identity::from_pem_files(&cert, &key).unwrap();
        let mut listener =
            QuicListener::bind_with("127.0.0.1:0", &identity, &QuicConfig::default())
                .await
                .unwrap();
        assert_eq!(
            listener.fingerprint(),
            Fingerprint::of(generated.cert.der())
        );
        let (client, server) = pair(&mut listener, &QuicConfig::default()).await;
        let (mut ctx, _crx) = client.split(LIMIT);
        let (_stx, mut srx) = server.split(LIMIT);
        let hello = frame(Kind::Hello, 0, 10);
        ctx.send(&encode(std::slice::from_ref(&hello)))
            .await
            .unwrap();
        assert_eq!(recv_n(&mut srx, 1).await, [Decoded::Frame(hello)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_frame_overtakes_a_large_one_of_another_call() {
    bounded(async {
        let mut listener = QuicListener::bind("127.0.0.1:0").await.unwrap();
        let (client, server) = pair(&mut listener, &QuicConfig::default()).await;
        let (mut ctx, _crx) = client.split(LIMIT);
        let (_stx, mut srx) = server.split(LIMIT);
        // On a byte stream the small request would wait for all 12 MiB.
        let large = frame(Kind::Request, 1, 12 << 20);
        let small = frame(Kind::Request, 2, 100);
        let bytes = encode(&[large.clone(), small.clone()]);
        let sending = tokio::spawn(async move {
            ctx.send(&bytes).await.unwrap();
            ctx
        });
        let got = recv_n(&mut srx, 2).await;
        assert_eq!(
            call_ids(&got),
            [(Kind::Request, 2), (Kind::Request, 1)],
            "the small call's frame should arrive first"
        );
        assert_eq!(got, [Decoded::Frame(small), Decoded::Frame(large)]);
        let _ctx = sending.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_one_call_keep_their_order() {
    bounded(async {
        let mut listener = QuicListener::bind("127.0.0.1:0").await.unwrap();
        let (client, server) = pair(&mut listener, &QuicConfig::default()).await;
        let (mut ctx, _crx) = client.split(LIMIT);
        let (_stx, mut srx) = server.split(LIMIT);
        // A large request, and its cancel right behind it on its stream.
        let request = frame(Kind::Request, 7, 4 << 20);
        let cancel = frame(Kind::Cancel, 7, 0);
        let bytes = encode(&[request.clone(), cancel.clone()]);
        let sending = tokio::spawn(async move {
            ctx.send(&bytes).await.unwrap();
            ctx
        });
        let got = recv_n(&mut srx, 2).await;
        assert_eq!(got, [Decoded::Frame(request), Decoded::Frame(cancel)]);
        let _ctx = sending.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_bounded_and_streams_are_retired() {
    bounded(async {
        let mut config = QuicConfig::default();
        config.max_streams = 2;
        let identity = Identity::self_signed(&["localhost"]).unwrap();
        let mut listener = QuicListener::bind_with("127.0.0.1:0", &identity, &config)
            .await
            .unwrap();
        let (client, server) = pair(&mut listener, &config).await;
        let (mut ctx, mut crx) = client.split(LIMIT);
        let (mut stx, mut srx) = server.split(LIMIT);

        // Three requests; the server lets two streams be open at a time.
        let requests: Vec<Frame> = (1..=3).map(|id| frame(Kind::Request, id, 10)).collect();
        let bytes = encode(&requests);
        let sending = tokio::spawn(async move {
            ctx.send(&bytes).await.unwrap();
            ctx
        });
        let mut got = recv_n(&mut srx, 2).await;
        let mut more = Vec::new();
        let third = timeout(Duration::from_millis(300), srx.recv(&mut more)).await;
        assert!(third.is_err(), "a third stream opened: {more:?}");
        // Answering one call retires its stream (once the client has read
        // the response), and the third comes in.
        let first = call_ids(&got)[0].1;
        stx.send(&encode(&[frame(Kind::Response, first, 5)]))
            .await
            .unwrap();
        let responses = recv_n(&mut crx, 1).await;
        assert_eq!(call_ids(&responses), [(Kind::Response, first)]);
        got.extend(recv_n(&mut srx, 1).await);
        let mut ids: Vec<u64> = call_ids(&got).into_iter().map(|(_, id)| id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
        let mut ctx = sending.await.unwrap();
        for id in (1..=3).filter(|id| *id != first) {
            stx.send(&encode(&[frame(Kind::Response, id, 5)]))
                .await
                .unwrap();
        }
        recv_n(&mut crx, 2).await;

        // A server that answers every request and counts one-way calls,
        // until the client is done.
        let serving = tokio::spawn(async move {
            let mut oneways = 0;
            let mut got = Vec::new();
            while srx.recv(&mut got).await.expect("server recv") {
                for decoded in got.drain(..) {
                    match call_ids(std::slice::from_ref(&decoded))[0] {
                        (Kind::Request, id) => stx
                            .send(&encode(&[frame(Kind::Response, id, 1)]))
                            .await
                            .expect("respond"),
                        (Kind::OneWay, _) => oneways += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            stx.close().await.unwrap();
            oneways
        });
        // Many more calls than streams, one after another: each stream is
        // given back when its call ends.
        for id in 100..160 {
            ctx.send(&encode(&[frame(Kind::Request, id, 1)]))
                .await
                .unwrap();
            assert_eq!(call_ids(&recv_n(&mut crx, 1).await), [(Kind::Response, id)]);
        }
        // And one-way calls, which take no answer, all at once.
        let oneways: Vec<Frame> = (200..260).map(|id| frame(Kind::OneWay, id, 1)).collect();
        ctx.send(&encode(&oneways)).await.unwrap();

        // The client closes; both ends see a clean end.
        ctx.close().await.unwrap();
        assert_eq!(serving.await.unwrap(), 60);
        let mut rest = Vec::new();
        assert!(!crx.recv(&mut rest).await.unwrap(), "{rest:?}");
    })
    .await;
}

/// A service for calls end to end.
#[switchyard::service]
pub trait Echo {
    /// Returns `body`.
    async fn echo(&self, body: Vec<u8>) -> Vec<u8>;
    /// The transport the call came over.
    async fn transport(&self) -> String;
}

struct Echoer;

impl Echo for Echoer {
    async fn echo(&self, body: Vec<u8>) -> Vec<u8> {
        body
    }

    async fn transport(&self) -> String {
        switchyard::Context::current()
            .map(|ctx| ctx.transport().to_string())
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_end_to_end_over_quic() {
    bounded(async {
        let server = switchyard::Server::builder()
            .add_service(EchoServer::new(Echoer))
            .no_unix()
            .unpublished()
            .start()
            .await
            .unwrap();
        let mut listener = QuicListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, pin) = (listener.local_addr().to_string(), listener.fingerprint());
        let (accepted, link) = tokio::join!(listener.accept(), quic::connect(&addr, &pin));
        server.serve_link(accepted.unwrap());
        let channel = switchyard::Channel::builder()
            .connect_link(link.unwrap())
            .await
            .unwrap();
        assert_eq!(channel.selection().transport, switchyard::Transport::Quic);
        let client = EchoClient::new(channel);
        assert_eq!(client.transport().await.unwrap(), "quic");

        // Many calls at once, small and large, each on its own stream.
        let calls = (0..200usize).map(|i| {
            let client = client.clone();
            async move {
                let len = if i % 50 == 0 { 2 << 20 } else { i * 37 };
                let body: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                assert_eq!(client.echo(body.clone()).await.unwrap(), body, "call {i}");
            }
        });
        futures_join_all(calls).await;

        timeout(Duration::from_secs(10), server.shutdown())
            .await
            .expect("shutdown completes");
        let err = client.echo(vec![1]).await.unwrap_err();
        assert_eq!(err.code(), switchyard::Code::Unavailable, "{err}");
    })
    .await;
}

/// Awaits every future (the test crate has no futures dependency).
async fn futures_join_all<F: Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    for task in tasks {
        task.await.expect("call task");
    }
}
