//! Bad input and failures, each answered with a typed status and no panic,
//! no hang, and a server that keeps accepting.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard::protocol::frame::{
    Decoded, FrameDecoder, HEADER_LEN, Header, Kind, finish_frame, start_frame,
};
use switchyard::protocol::hello::Hello;
use switchyard::{Channel, Code};
use switchyard_integration_tests::skewed::TestingSkewedClient;
use switchyard_integration_tests::{ServerProcess, TestingClient, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const LIMIT: Duration = Duration::from_secs(30);

/// A raw connection that has done the handshake by hand.
async fn raw(server: &ServerProcess) -> (UnixStream, Hello) {
    let path = server.endpoint("unix")["unix://".len()..].to_owned();
    let mut stream = UnixStream::connect(path).await.unwrap();
    let buf = switchyard_integration_tests::raw::client_hello("raw");
    stream.write_all(&buf).await.unwrap();
    let Decoded::Frame(frame) = read_frame(&mut stream).await.expect("server hello") else {
        panic!("oversized hello")
    };
    (stream, Hello::decode(&frame.payload).unwrap())
}

async fn read_frame(stream: &mut UnixStream) -> Option<Decoded> {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    loop {
        if let Some(decoded) = decoder.decode(&mut buf).unwrap() {
            return Some(decoded);
        }
        if stream.read_buf(&mut buf).await.unwrap() == 0 {
            return None;
        }
    }
}

/// The id of the served method `name` in the server's hello.
fn method_id(hello: &Hello, name: &str) -> u32 {
    hello.services[0]
        .methods
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("the server serves no {name}"))
        .id
}

fn request(call_id: u64, method_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut header = Header::new(Kind::Request, call_id);
    header.method_id = method_id;
    let mut buf = Vec::new();
    let start = start_frame(&mut buf);
    buf.extend_from_slice(payload);
    finish_frame(&mut buf, start, header, 0, u32::MAX).unwrap();
    buf
}

fn response_status(decoded: Option<Decoded>) -> (u64, Code, String) {
    match decoded {
        Some(Decoded::Frame(frame)) => (
            frame.header.call_id,
            Code::from_u16(frame.header.status),
            String::from_utf8_lossy(&frame.payload).into_owned(),
        ),
        other => panic!("expected a response, got {other:?}"),
    }
}

async fn still_serves(server: &ServerProcess) {
    let client = TestingClient::new(server.channel().await);
    assert_eq!(client.add(20, 22).await.unwrap(), 42);
}

#[tokio::test]
async fn a_malformed_frame_gets_goaway_and_the_server_keeps_accepting() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let (mut stream, _) = raw(&server).await;
        stream.write_all(&[0xde; 64]).await.unwrap();
        let Some(Decoded::Frame(goaway)) = read_frame(&mut stream).await else {
            panic!("expected goaway");
        };
        assert_eq!(goaway.header.kind, Kind::GoAway);
        assert_eq!(Code::from_u16(goaway.header.status), Code::InvalidArgument);
        let message = String::from_utf8_lossy(&goaway.payload);
        assert!(message.contains("bad magic"), "{message}");
        assert!(
            read_frame(&mut stream).await.is_none(),
            "then the server closes"
        );
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn a_garbage_handshake_is_refused_without_harm() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let path = server.endpoint("unix")["unix://".len()..].to_owned();
        for _ in 0..20 {
            let mut stream = UnixStream::connect(&path).await.unwrap();
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        }
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn a_length_of_u32_max_is_refused_without_allocating_and_the_connection_lives() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let (mut stream, hello) = raw(&server).await;
        let add = method_id(&hello, "add");
        let mut header = Header::new(Kind::Request, 7);
        header.method_id = add;
        header.payload_len = u32::MAX;
        let mut head = vec![0u8; HEADER_LEN];
        header.write_to(&mut head);
        stream.write_all(&head).await.unwrap();
        let (call_id, code, message) = response_status(read_frame(&mut stream).await);
        assert_eq!((call_id, code), (7, Code::ResourceExhausted));
        assert!(message.contains("exceeds this server's limit"), "{message}");
        // The server skips the claimed body as it arrives; closing instead
        // of sending 4 GiB leaves the server unharmed.
        drop(stream);
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn an_oversized_request_from_a_client_fails_before_sending() {
    let server = ServerProcess::start(&["--max-frame", "1024"]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let err = client.echo(vec![0; 4096]).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(
            err.message().contains("over the server's limit of 1024"),
            "{err}"
        );
        assert_eq!(client.echo(vec![1; 500]).await.unwrap(), vec![1; 500]);
        assert_eq!(
            client.requests_seen().await.unwrap(),
            1,
            "the big one never arrived"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unknown_method_id_is_unimplemented_and_named() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let (mut stream, _) = raw(&server).await;
        stream
            .write_all(&request(3, 0x0bad_cafe, b""))
            .await
            .unwrap();
        let (call_id, code, message) = response_status(read_frame(&mut stream).await);
        assert_eq!((call_id, code), (3, Code::Unimplemented));
        assert!(message.contains("0x0badcafe"), "{message}");
        assert!(message.contains("Testing (echo, add"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn skewed_signatures_and_missing_methods_are_named_before_sending() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let skewed = TestingSkewedClient::new(server.channel().await);
        let err = skewed.add(1, 2).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("Testing.add"), "{err}");
        assert!(err.message().contains("add(i32,i32) -> i32"), "{err}");
        assert!(err.message().contains("add(i64,i64) -> i64"), "{err}");
        let err = skewed.brand_new().await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("Testing.brand_new"), "{err}");
        let client = TestingClient::new(server.channel().await);
        assert_eq!(client.requests_seen().await.unwrap(), 0, "nothing was sent");
    })
    .await;
}

#[tokio::test]
async fn a_deadline_already_past_fails_without_sending() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let err = client
            .with_timeout(Duration::ZERO)
            .add(1, 1)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(err.message().contains("nothing was sent"), "{err}");
        assert_eq!(client.requests_seen().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_missed_deadline_is_deadline_exceeded_and_cancels_the_handler() {
    let server = ServerProcess::start(&[]);
    let marker = server.dir().join("deadline-marker");
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let start = Instant::now();
        let err = client
            .with_timeout(Duration::from_millis(100))
            .sleep_or_mark(5_000, marker.display().to_string())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(start.elapsed() >= Duration::from_millis(100));
        while !marker.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn dropping_a_call_cancels_its_handler_on_the_server() {
    let server = ServerProcess::start(&[]);
    let marker = server.dir().join("cancel-marker");
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let call = client.sleep_or_mark(10_000, marker.display().to_string());
        // Start the call, give it time to reach the server, then drop it.
        let _ = tokio::time::timeout(Duration::from_millis(100), call).await;
        while !marker.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn a_killed_server_fails_calls_in_flight_with_unavailable() {
    let mut server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.sleep(20_000).await }
        });
        while client.requests_seen().await.unwrap() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill();
        let err = pending.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("closed the connection"), "{err}");
        // The next call tries to reconnect and finds nobody.
        let err = client.add(1, 1).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::NotFound | Code::Unavailable),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn beyond_the_per_connection_limit_calls_get_resource_exhausted() {
    let server = ServerProcess::start(&["--max-in-flight", "2"]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let mut calls = Vec::new();
        for _ in 0..3 {
            let client = client.clone();
            calls.push(tokio::spawn(async move { client.sleep(300).await }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut exhausted = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => {}
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                    assert!(status.message().contains("max_in_flight"), "{status}");
                    exhausted += 1;
                }
            }
        }
        assert_eq!(exhausted, 1);
        assert_eq!(client.add(1, 1).await.unwrap(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_panicking_handler_is_internal_and_the_server_lives() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let err = client.panic().await.unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("panicked"), "{err}");
        assert_eq!(
            client.add(1, 1).await.unwrap(),
            2,
            "same connection still works"
        );
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let mut server = ServerProcess::start(&["--grace-ms", "5000"]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.sleep(300).await }
        });
        while client.requests_seen().await.unwrap() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = tokio::task::spawn_blocking(move || {
            let status = server.terminate(Duration::from_secs(10));
            (status, server)
        });
        let slept = pending
            .await
            .unwrap()
            .expect("the call in flight completes");
        assert!(slept >= 300);
        let (exit, server) = status.await.unwrap();
        assert!(exit.expect("the server exits").success());
        assert!(
            std::fs::read_dir(server.dir().join("registry"))
                .unwrap()
                .next()
                .is_none(),
            "the registry entry is removed"
        );
    })
    .await;
}

#[tokio::test]
async fn connecting_to_nothing_fails_fast_with_a_reason() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let err = Channel::connect(&format!("unix://{}/none.sock", dir.path().display()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("could not connect"), "{err}");
        let err = Channel::connect("tcp://127.0.0.1:1").await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    })
    .await;
}

/// `frame` with its payload compressed as a peer that compresses would send it.
fn compressed(frame: &[u8]) -> Vec<u8> {
    let compressor =
        switchyard::protocol::compress::FrameCompressor::new(64, 1, std::sync::Arc::default());
    compressor.compress(frame).expect("the payload compresses")
}

#[tokio::test]
async fn a_compression_bomb_is_resource_exhausted_and_the_server_stays_small() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let (mut stream, hello) = raw(&server).await;
        let echo = method_id(&hello, "echo");
        // 24 MiB of zeros in under 1 KiB, past the server's 16 MiB limit.
        let bomb = compressed(&request(1, echo, &vec![0u8; 24 << 20]));
        assert!(bomb.len() <= 1024, "{} bytes", bomb.len());
        let rss_before = switchyard_integration_tests::measure::rss_kib(server.pid());
        for call_id in 1..=100u64 {
            let mut bomb = bomb.clone();
            bomb[8..16].copy_from_slice(&call_id.to_le_bytes());
            stream.write_all(&bomb).await.unwrap();
            let (id, code, message) = response_status(read_frame(&mut stream).await);
            assert_eq!((id, code), (call_id, Code::ResourceExhausted), "{message}");
            assert!(message.contains("exceeds this server's limit"), "{message}");
        }
        let rss_after = switchyard_integration_tests::measure::rss_kib(server.pid());
        println!(
            "100 bombs of {} bytes each declaring 24 MiB: server RSS {rss_before} KiB -> \
             {rss_after} KiB",
            bomb.len()
        );
        assert!(
            rss_after < rss_before + 16 * 1024,
            "the server grew from {rss_before} KiB to {rss_after} KiB"
        );
        // The connection lives on, and a payload compressed honestly is
        // served: the reply is the echo of what was compressed.
        let text = b"the same line again and again; ".repeat(4096);
        let mut plain = Vec::new();
        <switchyard::Bincode as switchyard::Codec>::encode(&text.to_vec(), &mut plain).unwrap();
        stream
            .write_all(&compressed(&request(500, echo, &plain)))
            .await
            .unwrap();
        let Some(Decoded::Frame(reply)) = read_frame(&mut stream).await else {
            panic!("expected the echo");
        };
        assert_eq!(reply.header.call_id, 500);
        assert_eq!(Code::from_u16(reply.header.status), Code::Ok);
        assert_eq!(&reply.payload[..], &plain[..]);
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_compressed_payload_gets_goaway_naming_it() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let (mut stream, hello) = raw(&server).await;
        let echo = method_id(&hello, "echo");
        let mut frame = compressed(&request(3, echo, &b"abcd".repeat(4096)));
        // Scribble over the compressed blocks, past the zstd frame header.
        let len = frame.len();
        for byte in &mut frame[HEADER_LEN + 12..len - 4] {
            *byte ^= 0x5a;
        }
        stream.write_all(&frame).await.unwrap();
        let Some(Decoded::Frame(goaway)) = read_frame(&mut stream).await else {
            panic!("expected goaway");
        };
        assert_eq!(goaway.header.kind, Kind::GoAway);
        assert_eq!(Code::from_u16(goaway.header.status), Code::InvalidArgument);
        let message = String::from_utf8_lossy(&goaway.payload);
        assert!(
            message.contains("compressed payload is corrupt"),
            "{message}"
        );
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn a_server_with_compression_off_lists_no_codec_and_refuses_compressed_frames() {
    let server = ServerProcess::start(&["--compression", "off"]);
    within(LIMIT, async {
        let (mut stream, hello) = raw(&server).await;
        assert_eq!(hello.codecs, 0, "its hello lists no codec");
        let echo = method_id(&hello, "echo");
        stream
            .write_all(&compressed(&request(4, echo, &b"abcd".repeat(4096))))
            .await
            .unwrap();
        let Some(Decoded::Frame(goaway)) = read_frame(&mut stream).await else {
            panic!("expected goaway");
        };
        assert_eq!(goaway.header.kind, Kind::GoAway);
        assert_eq!(Code::from_u16(goaway.header.status), Code::InvalidArgument);
        let message = String::from_utf8_lossy(&goaway.payload);
        assert!(message.contains("reads no codec"), "{message}");
        still_serves(&server).await;
    })
    .await;
}
