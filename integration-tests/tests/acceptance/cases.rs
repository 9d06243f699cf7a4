//! Each acceptance case, written once against [`Harness`]. gRPC's unary
//! interop cases (docs/reliability.md lists them and how they map).

use std::path::Path;
use std::time::{Duration, Instant};

use switchyard::client::with_response_metadata;
use switchyard::trace::TRACEPARENT;
use switchyard::transport::shm::bulk_transfers;
use switchyard::{Bincode, Bytes, Code, Codec, Metadata, Transport};
use switchyard_integration_tests::absent::AbsentClient;
use switchyard_integration_tests::acceptance::{Harness, MMAP_THRESHOLD, Options};
use switchyard_integration_tests::skewed::TestingSkewedClient;
use switchyard_integration_tests::{TestError, TestingClient, fnv1a64, payload_pattern};

/// gRPC's `special_status_message`.
const SPECIAL: &str = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

/// The frame limit of the size cases (where the transport lets it be set).
const SIZE_LIMIT: u32 = 1 << 20;

/// A valid trace context of fixed length: the size cases send it so that
/// they know the request's metadata byte for byte.
const FIXED_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Starts a harness, or prints why this transport is skipped here.
pub(crate) async fn start(transport: Transport, options: Options) -> Option<Harness> {
    match Harness::start(transport, options).await {
        Ok(harness) => Some(harness),
        Err(reason) => {
            println!("skipping on {transport}: {reason}");
            None
        }
    }
}

/// One `unary_call` with a `request`-byte payload and a `response`-byte
/// answer, checked byte for byte (and, on mmap, that the bodies over the
/// threshold crossed as mapped regions).
async fn large_call(harness: &Harness, client: &TestingClient, request: usize, response: usize) {
    let seed = (request % 251) as u8;
    let payload = payload_pattern(request, seed);
    let digest = fnv1a64(&payload);
    let before = bulk_transfers();
    let (len, seen, body) = client
        .unary_call(payload.into(), response as u64)
        .await
        .unwrap_or_else(|status| panic!("{request} B -> {response} B: {status}"));
    assert_eq!(len, request as u64, "the server saw another request length");
    assert_eq!(seen, digest, "the {request}-byte request arrived changed");
    assert_eq!(body.len(), response);
    assert!(
        *body == payload_pattern(response, 0x5a),
        "the {response}-byte response arrived changed"
    );
    if harness.expects_bulk() {
        // Other tests of this process may also make the counters grow;
        // these only must have grown.
        let after = bulk_transfers();
        if request > MMAP_THRESHOLD {
            assert!(after.sent > before.sent, "the request went as a region");
        }
        if response > MMAP_THRESHOLD {
            assert!(
                after.received > before.received,
                "the response came as a region"
            );
        }
    }
}

/// Polls `done` every 10 ms until it holds (the watchdog bounds it).
async fn until(mut done: impl AsyncFnMut() -> bool) {
    while !done().await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the server has started handling more than `before` calls.
async fn until_handling(client: &TestingClient, before: u64) {
    until(async || client.requests_seen().await.unwrap() > before).await;
}

/// The lines of `path` once it has `n`.
pub(crate) async fn lines(path: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    until(async || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        got.len() >= n
    })
    .await;
    got
}

pub(crate) async fn empty_unary(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    assert_eq!(client.echo(Vec::new()).await.unwrap(), Vec::<u8>::new());
    let (len, digest, body) = client.unary_call(Bytes::new(), 0).await.unwrap();
    assert_eq!((len, digest, body.len()), (0, fnv1a64(&[]), 0));
    harness.stop().await;
}

pub(crate) async fn large_unary(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    large_call(&harness, &harness.client(), 271_828, 314_159).await;
    harness.stop().await;
}

pub(crate) async fn concurrent_large_unary(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    // gRPC runs 1000; 100 keep a debug build's memory and time in bounds.
    let harness = std::sync::Arc::new(harness);
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let harness = std::sync::Arc::clone(&harness);
            tokio::spawn(async move {
                large_call(&harness, &harness.client(), 271_828, 314_159).await;
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let harness = std::sync::Arc::into_inner(harness).expect("every call ended");
    harness.stop().await;
}

pub(crate) async fn very_large_request(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    large_call(&harness, &harness.client(), 10 << 20, 10).await;
    harness.stop().await;
}

pub(crate) async fn very_large_response(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    large_call(&harness, &harness.client(), 10, 10 << 20).await;
    harness.stop().await;
}

pub(crate) async fn status_code_and_message(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    // gRPC's case: code 2 and a message; then every other code.
    for code in 1..=16u16 {
        let message = format!("test status message {code}");
        let status = client.status(code, message.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::from_u16(code), "{status}");
        assert_eq!(status.code().as_u16(), code, "{status}");
        assert_eq!(status.message(), message);
    }
    // The typed error of a handler (`Result<_, TestError>`) crosses too.
    let message = "test typed error".to_owned();
    assert_eq!(
        client.fail(message.clone()).await.unwrap(),
        Err(TestError { message })
    );
    harness.stop().await;
}

pub(crate) async fn special_status_message(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    let status = client.status(2, SPECIAL.to_owned()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(status.message(), SPECIAL);
    assert_eq!(
        client.fail(SPECIAL.to_owned()).await.unwrap(),
        Err(TestError {
            message: SPECIAL.to_owned()
        })
    );
    harness.stop().await;
}

pub(crate) async fn unimplemented_method(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let skewed = TestingSkewedClient::new(harness.channel());
    let status = skewed.brand_new().await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status}");
    assert!(status.message().contains("brand_new"), "{status}");
    // It says what happened and what to do (never that one side is "older").
    assert!(
        status
            .message()
            .contains("built from different versions of the trait; rebuild both"),
        "{status}"
    );
    assert!(!status.message().contains("older"), "{status}");
    // Version skew on a method both have: a different signature.
    let status = skewed.add(1, 2).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    assert!(status.message().contains("add"), "{status}");
    // The connection goes on.
    assert_eq!(harness.client().add(1, 2).await.unwrap(), 3);
    harness.stop().await;
}

pub(crate) async fn unimplemented_service(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let status = AbsentClient::new(harness.channel())
        .ping()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status}");
    // It names what was asked for, what is there, and what to check.
    let message = status.message();
    assert!(message.contains("Absent"), "{status}");
    assert!(message.contains("Testing"), "{status}");
    assert!(message.contains('?'), "{status}");
    assert_eq!(harness.client().add(1, 2).await.unwrap(), 3);
    harness.stop().await;
}

pub(crate) async fn custom_metadata(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    // gRPC's keys and values: the handler sees both entries, and echoes
    // them back as response metadata (gRPC: the first in the initial
    // metadata, the second in the trailers), on a small call, a large one
    // (a bulk region each way on shm) and a failing one.
    let ascii = ("x-grpc-test-echo-initial", "test_initial_metadata_value");
    let binary = ("x-grpc-test-echo-trailing-bin", vec![0xab_u8, 0xab, 0xab]);
    let client = harness
        .client()
        .with_metadata(ascii.0, ascii.1)
        .with_metadata(binary.0, binary.1.clone());
    assert_eq!(
        client.metadata(ascii.0.into()).await.unwrap().as_deref(),
        Some(ascii.1)
    );
    assert_eq!(
        client.metadata_bin(binary.0.into()).await.unwrap(),
        Some(binary.1.clone())
    );
    let echoed = |metadata: &Metadata, what: &str| {
        assert_eq!(
            metadata.get_str(ascii.0),
            Some(ascii.1),
            "{what}: {metadata:?}"
        );
        assert_eq!(
            metadata.get(binary.0),
            Some(&binary.1[..]),
            "{what}: {metadata:?}"
        );
        assert_eq!(metadata.len(), 2, "{what}: {metadata:?}");
    };
    let ((), metadata) = with_response_metadata(async {
        let (len, _, body) = client.unary_call(vec![7; 10].into(), 10).await.unwrap();
        assert_eq!((len, body.len()), (10, 10));
    })
    .await;
    echoed(&metadata, "small call");
    let ((), metadata) =
        with_response_metadata(large_call(&harness, &client, 271_828, 314_159)).await;
    echoed(&metadata, "large call");
    let (failed, metadata) =
        with_response_metadata(client.status(Code::Aborted.as_u16(), "no".into())).await;
    assert_eq!(failed.unwrap_err().code(), Code::Aborted);
    echoed(&metadata, "failed call");
    // Without the keys nothing comes back.
    let (_, metadata) =
        with_response_metadata(harness.client().unary_call(vec![1].into(), 1)).await;
    assert!(metadata.is_empty(), "{metadata:?}");
    assert_eq!(client.metadata_bin("absent".into()).await.unwrap(), None);
    harness.stop().await;
}

pub(crate) async fn cancel_after_begin(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("cancelled");
    let client = harness.client();
    let before = client.requests_seen().await.unwrap();
    let call = tokio::spawn({
        let client = client.clone();
        let marker = marker.display().to_string();
        async move { client.sleep_or_mark(60_000, marker).await }
    });
    until_handling(&client, before).await;
    // Dropping the call's future is how a caller cancels.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    until(async || marker.exists()).await;
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    harness.stop().await;
}

pub(crate) async fn timeout_on_sleeping_server(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("dropped");
    let client = harness.client();
    for timeout in [Duration::from_millis(1), Duration::from_millis(200)] {
        let _ = std::fs::remove_file(&marker);
        let started = Instant::now();
        let status = client
            .with_timeout(timeout)
            .sleep_or_mark(60_000, marker.display().to_string())
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
        assert!(
            took < timeout + Duration::from_secs(2),
            "DeadlineExceeded after {took:?} for a {timeout:?} deadline"
        );
        if timeout >= Duration::from_millis(200) {
            // The handler had started; the server drops it at the deadline.
            until(async || marker.exists()).await;
        }
    }
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    harness.stop().await;
}

pub(crate) async fn deadline_not_exceeded(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client().with_timeout(Duration::from_secs(20));
    assert!(client.sleep(10).await.unwrap() >= 10);
    // The deadline travels with the call: the handler sees what is left.
    let left = client.deadline_left().await.unwrap().expect("a deadline");
    assert!(left > 10_000 && left <= 20_000, "{left} ms left");
    harness.stop().await;
}

pub(crate) async fn deadline_in_past(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    let seen = client.requests_seen().await.unwrap();
    let status = client
        .with_timeout(Duration::ZERO)
        .add(1, 2)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("nothing was sent"), "{status}");
    assert_eq!(
        client.requests_seen().await.unwrap(),
        seen,
        "it reached the server"
    );
    harness.stop().await;
}

/// The payload length whose encoding, plus `fixed` bytes, is `body`
/// bytes, given how a payload of `n` bytes encodes.
fn fill(body: usize, fixed: usize, encoded: impl Fn(usize) -> usize) -> usize {
    let probe = body - fixed - 64;
    let overhead = encoded(probe) - probe;
    let n = body - fixed - overhead;
    assert_eq!(encoded(n) + fixed, body, "the length prefix changed size");
    n
}

/// A request to `unary_call` of exactly `body` bytes (metadata included),
/// and the client that sends it.
fn request_of(harness: &Harness, body: usize) -> (TestingClient, usize) {
    let client = harness.client().with_metadata(TRACEPARENT, FIXED_TRACE);
    let mut metadata = Metadata::new();
    metadata.insert(TRACEPARENT, FIXED_TRACE).unwrap();
    let n = fill(body, metadata.encoded_len(), |n| {
        let mut out = Vec::new();
        Bincode::encode(&(Bytes::from(vec![0u8; n]), 0u64), &mut out).unwrap();
        out.len()
    });
    (client, n)
}

pub(crate) async fn max_request_size_at_limit(transport: Transport) {
    let options = Options {
        server_max_frame: Some(SIZE_LIMIT),
        ..Options::default()
    };
    let Some(harness) = start(transport, options).await else {
        return;
    };
    let limit = harness.server_frame_limit() as usize;
    let (client, n) = request_of(&harness, limit);
    let (len, _, _) = client
        .unary_call(vec![7u8; n].into(), 0)
        .await
        .unwrap_or_else(|status| panic!("a body of exactly {limit} bytes: {status}"));
    assert_eq!(len, n as u64);
    harness.stop().await;
}

pub(crate) async fn max_request_size_over_limit(transport: Transport) {
    let options = Options {
        server_max_frame: Some(SIZE_LIMIT),
        ..Options::default()
    };
    let Some(harness) = start(transport, options).await else {
        return;
    };
    let limit = harness.server_frame_limit() as usize;
    let (client, n) = request_of(&harness, limit);
    let status = client
        .unary_call(vec![7u8; n + 1].into(), 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains(&limit.to_string()), "{status}");
    // The connection keeps working, at the limit too.
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    let (len, _, _) = client.unary_call(vec![7u8; n].into(), 0).await.unwrap();
    assert_eq!(len, n as u64);
    harness.stop().await;
}

/// The `response_size` whose `unary_call` result body is exactly `body`.
fn response_of(body: usize) -> usize {
    fill(body, 0, |n| {
        let mut out = Vec::new();
        let result = (0u64, fnv1a64(&[]), Bytes::from(vec![0u8; n]));
        Bincode::encode(&result, &mut out).unwrap();
        out.len()
    })
}

pub(crate) async fn max_response_size_at_limit(transport: Transport) {
    let options = Options {
        client_max_frame: Some(SIZE_LIMIT),
        ..Options::default()
    };
    let Some(harness) = start(transport, options).await else {
        return;
    };
    let n = response_of(SIZE_LIMIT as usize);
    let (_, _, body) = harness
        .client()
        .unary_call(Bytes::new(), n as u64)
        .await
        .unwrap_or_else(|status| panic!("a result of exactly {SIZE_LIMIT} bytes: {status}"));
    assert_eq!(body.len(), n);
    harness.stop().await;
}

pub(crate) async fn max_response_size_over_limit(transport: Transport) {
    let options = Options {
        client_max_frame: Some(SIZE_LIMIT),
        ..Options::default()
    };
    let Some(harness) = start(transport, options).await else {
        return;
    };
    let n = response_of(SIZE_LIMIT as usize);
    let client = harness.client();
    let status = client
        .unary_call(Bytes::new(), n as u64 + 1)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains(&SIZE_LIMIT.to_string()),
        "{status}"
    );
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    let (_, _, body) = client.unary_call(Bytes::new(), n as u64).await.unwrap();
    assert_eq!(body.len(), n);
    harness.stop().await;
}

pub(crate) async fn graceful_shutdown(transport: Transport) {
    let options = Options {
        grace: Some(Duration::from_secs(20)),
        ..Options::default()
    };
    let Some(mut harness) = start(transport, options).await else {
        return;
    };
    let client = harness.client();
    let before = client.requests_seen().await.unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(1_500).await }
    });
    until_handling(&client, before).await;
    harness.begin_shutdown().expect("a graceful shutdown");
    // New calls are refused once the server has begun draining (a call
    // that raced the signal may still get through).
    let refused = loop {
        match client.add(1, 2).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    let slept = in_flight
        .await
        .unwrap()
        .expect("the call in flight completes");
    assert!(slept >= 1_500, "slept {slept} ms");
    assert!(
        harness.wait_stopped(Duration::from_secs(10)).await,
        "the server exits after draining"
    );
    let status = client.add(1, 2).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
}

pub(crate) async fn rpc_soak(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    let mut slowest = Duration::ZERO;
    for i in 0..1_000usize {
        let started = Instant::now();
        if i % 100 == 0 {
            large_call(&harness, &client, 271_828, 314_159).await;
        } else {
            let payload = payload_pattern(i * 37 % 4096, i as u8);
            let back = client
                .echo(payload.clone())
                .await
                .unwrap_or_else(|status| panic!("call {i}: {status}"));
            assert!(back == payload, "call {i} came back changed");
        }
        slowest = slowest.max(started.elapsed());
    }
    println!("{transport}: 1000 sequential calls, the slowest took {slowest:?}");
    harness.stop().await;
}

pub(crate) async fn channel_soak(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    for i in 0..100i64 {
        let fresh = harness.fresh_channel().await;
        let client = TestingClient::new(fresh.channel.clone());
        assert_eq!(
            client
                .add(i, 1)
                .await
                .unwrap_or_else(|s| panic!("channel {i}: {s}")),
            i + 1
        );
    }
    harness.stop().await;
}

pub(crate) async fn oneway_in_order(transport: Transport) {
    oneway_many(transport, true).await;
}

/// For QUIC, whose one-way calls each take a stream of their own, so
/// that calls need not arrive in the order sent (docs/architecture.md,
/// "QUIC", Order): each arrives exactly once.
pub(crate) async fn oneway_exactly_once(transport: Transport) {
    oneway_many(transport, false).await;
}

/// 200 one-way calls: all arrive, once each, and in order if `ordered`.
async fn oneway_many(transport: Transport, ordered: bool) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("record.txt");
    let path = out.display().to_string();
    let client = harness.client();
    for i in 0..200 {
        client
            .record(path.clone(), format!("line {i}"))
            .await
            .unwrap_or_else(|status| panic!("one-way call {i}: {status}"));
    }
    let mut expected: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
    let mut got = lines(&out, 200).await;
    // A duplicate would show up behind the 200th line.
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    got.extend(lines(&out, 200).await.into_iter().skip(got.len()));
    if !ordered {
        got.sort();
        expected.sort();
    }
    assert_eq!(got, expected);
    harness.stop().await;
}

pub(crate) async fn oneway_special_message(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("record.txt");
    harness
        .client()
        .record(out.display().to_string(), SPECIAL.to_owned())
        .await
        .unwrap();
    let expected = format!("{SPECIAL}\n");
    until(async || std::fs::read_to_string(&out).unwrap_or_default().len() >= expected.len()).await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    harness.stop().await;
}

pub(crate) async fn oneway_large(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("record.txt");
    // Over a queue message (8 KiB by default: it goes over the connection)
    // and over the bulk threshold of mmap.
    let line: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let client = harness.client();
    let path = out.display().to_string();
    client.record(path.clone(), line.clone()).await.unwrap();
    client.record(path, "after".into()).await.unwrap();
    let got = lines(&out, 2).await;
    assert_eq!(got.len(), 2);
    assert!(got.contains(&line), "the large line arrived changed");
    harness.stop().await;
}
