//! gRPC's streaming interop cases, ported to switchyard and written once
//! for every connection transport (docs/reliability.md maps them).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchyard::client::with_response_metadata;
use switchyard::transport::shm::bulk_transfers;
use switchyard::{Bytes, Code, Metadata, Streaming, Transport};
use switchyard_integration_tests::acceptance::{MMAP_THRESHOLD, Options};
use switchyard_integration_tests::{
    DuplexRequest, ECHO_METADATA_KEYS, FNV_OFFSET, fnv1a64_from, payload_pattern,
};
use tokio::sync::mpsc;

use super::cases::start;

/// gRPC's sizes for `server_streaming`, and one message over the mmap
/// threshold's reach many times over.
const OUTPUT_SIZES: [u64; 5] = [31_415, 9, 2_653, 58_979, 1 << 20];
/// gRPC's sizes for `client_streaming`, and a large one.
const INPUT_SIZES: [usize; 5] = [27_182, 8, 1_828, 45_904, 1 << 20];

/// A stream of requests the test feeds one at a time, and its feeder.
fn fed<T: Send + 'static>() -> (mpsc::Sender<T>, impl futures_util::Stream<Item = T> + Send) {
    let (tx, rx) = mpsc::channel(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, stream)
}

/// Reads every message of `stream`, then its end: the messages and how
/// it ended.
async fn drain(
    mut stream: Streaming<Bytes>,
) -> (Vec<Bytes>, Result<(), switchyard::Status>, Streaming<Bytes>) {
    let mut got = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => got.push(message),
            Ok(None) => return (got, Ok(()), stream),
            Err(status) => return (got, Err(status), stream),
        }
    }
}

pub(crate) async fn server_streaming(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    let before = bulk_transfers();
    let stream = client
        .streaming_output_call(OUTPUT_SIZES.to_vec(), 0, None)
        .await
        .unwrap();
    let (got, end, _) = drain(stream).await;
    end.unwrap();
    assert_eq!(got.len(), OUTPUT_SIZES.len());
    for (index, (message, size)) in got.iter().zip(OUTPUT_SIZES).enumerate() {
        assert_eq!(message.len() as u64, size, "message {index}");
        assert!(
            **message == payload_pattern(size as usize, index as u8),
            "message {index} arrived changed"
        );
    }
    if harness.expects_bulk() {
        assert!(
            bulk_transfers().received > before.received,
            "the 1 MiB message came as a mapped region"
        );
    }
    harness.stop().await;
}

pub(crate) async fn client_streaming(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    let before = bulk_transfers();
    let payloads: Vec<Vec<u8>> = INPUT_SIZES
        .iter()
        .enumerate()
        .map(|(index, size)| payload_pattern(*size, index as u8))
        .collect();
    let digest = payloads
        .iter()
        .fold(FNV_OFFSET, |hash, payload| fnv1a64_from(hash, payload));
    let total: usize = INPUT_SIZES.iter().sum();
    let stream = futures_util::stream::iter(payloads.into_iter().map(Bytes::from));
    let (len, count, seen) = client.streaming_input_call(stream).await.unwrap();
    assert_eq!(
        (len, count, seen),
        (total as u64, INPUT_SIZES.len() as u64, digest)
    );
    if harness.expects_bulk() {
        assert!(
            bulk_transfers().sent > before.sent,
            "the 1 MiB message went as a mapped region"
        );
    }
    harness.stop().await;
}

pub(crate) async fn ping_pong(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    let (feed, requests) = fed();
    let mut responses = client.full_duplex_call(requests).await.unwrap();
    // Each response comes before the next request goes: the stream is
    // not buffered to its end anywhere.
    for size in [31_415_u64, 9, 2_653, 58_979] {
        feed.send(DuplexRequest {
            response_size: size,
            end_with: None,
        })
        .await
        .unwrap();
        let message = responses.message().await.unwrap().expect("a response");
        assert_eq!(message.len() as u64, size);
        assert!(*message == payload_pattern(size as usize, 0));
    }
    drop(feed);
    assert!(responses.message().await.unwrap().is_none());
    harness.stop().await;
}

pub(crate) async fn empty_stream(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    let responses = client
        .full_duplex_call(futures_util::stream::empty())
        .await
        .unwrap();
    let (got, end, _) = drain(responses).await;
    assert!(got.is_empty());
    end.unwrap();
    let (got, end, _) = drain(
        client
            .streaming_output_call(Vec::new(), 0, None)
            .await
            .unwrap(),
    )
    .await;
    assert!(got.is_empty());
    end.unwrap();
    let (len, count, digest) = client
        .streaming_input_call(futures_util::stream::empty())
        .await
        .unwrap();
    assert_eq!((len, count, digest), (0, 0, FNV_OFFSET));
    harness.stop().await;
}

pub(crate) async fn cancel_after_first_response(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    let (feed, requests) = fed();
    let mut responses = client.full_duplex_call(requests).await.unwrap();
    feed.send(DuplexRequest {
        response_size: 31_415,
        end_with: None,
    })
    .await
    .unwrap();
    assert_eq!(responses.message().await.unwrap().unwrap().len(), 31_415);
    // Dropping the stream cancels the call: the server's handler stops
    // and its stream with it, so the feeder finds it gone.
    drop(responses);
    until_closed(&feed).await;
    // A server stream that would run for minutes is cancelled as well.
    let mut slow = client
        .streaming_output_call(vec![1; 100], 60_000, None)
        .await
        .unwrap();
    tokio::select! {
        _ = slow.next() => panic!("the first message comes after a minute"),
        () = tokio::time::sleep(Duration::from_millis(50)) => {}
    }
    drop(slow);
    // The connection and its other calls are untouched.
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    harness.stop().await;
}

/// Waits until the request stream's reader is gone (the call ended).
async fn until_closed<T>(feed: &mpsc::Sender<T>) {
    while !feed.is_closed() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn timeout_on_sleeping_server_stream(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    for timeout in [Duration::from_millis(1), Duration::from_millis(200)] {
        let started = Instant::now();
        // The first message would come after a minute; the deadline
        // covers the whole stream.
        let outcome = match client
            .with_timeout(timeout)
            .streaming_output_call(vec![1; 3], 60_000, None)
            .await
        {
            Ok(stream) => drain(stream).await.1,
            Err(status) => Err(status),
        };
        let status = outcome.unwrap_err();
        let took = started.elapsed();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
        assert!(
            took < timeout + Duration::from_secs(2),
            "DeadlineExceeded after {took:?} for a {timeout:?} deadline"
        );
        // A client stream that never ends is bounded by it too.
        let (_feed, requests) = fed::<Bytes>();
        let status = client
            .with_timeout(timeout)
            .streaming_input_call(requests)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    }
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    harness.stop().await;
}

pub(crate) async fn custom_metadata_stream(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let ascii = (ECHO_METADATA_KEYS[0], "test_initial_metadata_value");
    let binary = (ECHO_METADATA_KEYS[1], vec![0xab_u8, 0xab, 0xab]);
    let client = harness
        .client()
        .with_metadata(ascii.0, ascii.1)
        .with_metadata(binary.0, binary.1.clone());
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
    };
    // Server streaming: the trailers come after the last message.
    let stream = client
        .streaming_output_call(vec![10, 20], 0, None)
        .await
        .unwrap();
    let (got, end, stream) = drain(stream).await;
    end.unwrap();
    assert_eq!(got.len(), 2);
    echoed(
        stream.trailers().expect("trailers after the end"),
        "server stream",
    );
    // Failed, the status carries them too.
    let stream = client
        .streaming_output_call(vec![10], 0, Some((Code::Aborted.as_u16(), "no".into())))
        .await
        .unwrap();
    let (_, end, stream) = drain(stream).await;
    assert_eq!(end.unwrap_err().code(), Code::Aborted);
    echoed(
        stream.trailers().expect("trailers after the end"),
        "failed stream",
    );
    // Client streaming: as a unary call's response metadata.
    let (result, metadata) = with_response_metadata(
        client.streaming_input_call(futures_util::stream::iter([Bytes::from(vec![1; 5])])),
    )
    .await;
    assert_eq!(result.unwrap().0, 5);
    echoed(&metadata, "client stream");
    harness.stop().await;
}

pub(crate) async fn status_code_and_message_stream(transport: Transport) {
    let Some(harness) = start(transport, Options::default()).await else {
        return;
    };
    let client = harness.client();
    for code in [2_u16, 3, 8, 13] {
        let message = format!("test status message {code} ☺");
        // After two messages, the server's stream ends with the status.
        let stream = client
            .streaming_output_call(vec![7, 8], 0, Some((code, message.clone())))
            .await
            .unwrap();
        let (got, end, _) = drain(stream).await;
        assert_eq!(got.len(), 2, "the messages before the status arrive");
        let status = end.unwrap_err();
        assert_eq!(status.code().as_u16(), code, "{status}");
        assert!(status.message().ends_with(&message), "{status}");
        // A bidirectional stream ends with the request's status.
        let requests = futures_util::stream::iter([
            DuplexRequest {
                response_size: 3,
                end_with: None,
            },
            DuplexRequest {
                response_size: 0,
                end_with: Some((code, message.clone())),
            },
        ]);
        let (got, end, _) = drain(client.full_duplex_call(requests).await.unwrap()).await;
        assert_eq!(got.len(), 1);
        let status = end.unwrap_err();
        assert_eq!(status.code().as_u16(), code, "{status}");
        assert!(status.message().ends_with(&message), "{status}");
    }
    // A stream's failure ends that stream only.
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    harness.stop().await;
}

/// Keeps `MMAP_THRESHOLD` in view: the large messages above pass it.
const _: () = assert!(MMAP_THRESHOLD < (1 << 20));
