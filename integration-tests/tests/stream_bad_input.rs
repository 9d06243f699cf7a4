//! A peer that breaks a stream's rules, played by hand over a Unix socket
//! against a real server: each case ends with a typed status, that call or
//! that connection ended as the protocol says, and a server that keeps
//! serving. Nothing panics, hangs or leaks.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard::protocol::frame::{
    Decoded, FLAG_CLIENT_STREAM, FLAG_SERVER_STREAM, Frame, FrameDecoder, HEADER_LEN, Header, Kind,
    finish_frame, start_frame,
};
use switchyard::protocol::session::encode::{credit_frame, data_header, end_frame};
use switchyard::{Bincode, Code, Codec};
use switchyard_integration_tests::{ServerProcess, TESTING_DESCRIPTOR, TestingClient, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const LIMIT: Duration = Duration::from_secs(30);

/// A raw connection after the handshake, with what it has read so far.
struct Raw {
    stream: UnixStream,
    decoder: FrameDecoder,
    buf: BytesMut,
}

impl Raw {
    async fn connect(server: &ServerProcess) -> Self {
        let path = server.endpoint("unix")["unix://".len()..].to_owned();
        let mut stream = UnixStream::connect(path).await.unwrap();
        let hello = switchyard_integration_tests::raw::client_hello("stream-raw");
        stream.write_all(&hello).await.unwrap();
        let mut raw = Self {
            stream,
            decoder: FrameDecoder::new(1 << 20),
            buf: BytesMut::new(),
        };
        let hello = raw.next().await.expect("the server's hello");
        assert_eq!(hello.header.kind, Kind::Hello);
        raw
    }

    /// The next frame, or `None` once the server closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            match self.decoder.decode(&mut self.buf).unwrap() {
                Some(Decoded::Frame(frame)) => return Some(frame),
                Some(Decoded::Oversized(header)) => panic!("oversized {header:?}"),
                None => {}
            }
            if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// The next frame that is not a Credit or a Data.
    async fn next_control(&mut self) -> Option<Frame> {
        loop {
            let frame = self.next().await?;
            if !matches!(frame.header.kind, Kind::Credit | Kind::Data) {
                return Some(frame);
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // A server that closed may refuse the rest: that is what is tested.
        let _ = self.stream.write_all(bytes).await;
    }
}

/// A request for `Testing.<method>` with `flags`, the caller's window
/// `credit`, a deadline and `args` encoded.
fn request<A: serde::Serialize>(
    call_id: u64,
    method: &str,
    flags: u16,
    credit: u32,
    deadline: Duration,
    args: &A,
) -> Vec<u8> {
    let mut header = Header::new(Kind::Request, call_id);
    header.method_id = TESTING_DESCRIPTOR.method_by_name(method).unwrap().id;
    header.flags = flags;
    header.credit = credit;
    header.deadline_us = deadline.as_micros() as u64;
    let mut buf = Vec::new();
    let start = start_frame(&mut buf);
    Bincode::encode_to(args, &mut buf).unwrap();
    finish_frame(&mut buf, start, header, 0, u32::MAX).unwrap();
    buf
}

/// A caller's stream message on `call_id` carrying `value`.
fn message<A: serde::Serialize>(call_id: u64, value: &A) -> Vec<u8> {
    let mut buf = vec![0; HEADER_LEN];
    Bincode::encode_to(value, &mut buf).unwrap();
    let len = buf.len() - HEADER_LEN;
    data_header(call_id, false, len).write_to(&mut buf);
    buf
}

fn duplex(size: u64) -> switchyard_integration_tests::DuplexRequest {
    switchyard_integration_tests::DuplexRequest {
        response_size: size,
        end_with: None,
    }
}

async fn still_serves(server: &ServerProcess) {
    let client = TestingClient::new(server.channel().await);
    assert_eq!(client.add(20, 22).await.unwrap(), 42);
}

#[tokio::test]
async fn a_window_violation_closes_the_peers_connection_with_a_goaway_naming_it() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let mut raw = Raw::connect(&server).await;
        // The caller grants no credit for replies, so the handler reads
        // nothing more and grants nothing back: 64 messages fill the
        // server's window, the 65th breaks it.
        let flags = FLAG_CLIENT_STREAM | FLAG_SERVER_STREAM;
        raw.send(&request(1, "full_duplex_call", flags, 0, LIMIT, &()))
            .await;
        let grant = raw.next().await.expect("the server's first grant");
        assert_eq!(grant.header.kind, Kind::Credit);
        assert_eq!(grant.header.credit, 64, "the default window");
        let mut flood = Vec::new();
        for _ in 0..80 {
            flood.extend_from_slice(&message(1, &duplex(1)));
        }
        raw.send(&flood).await;
        let goaway = raw.next_control().await.expect("a GoAway");
        assert_eq!(goaway.header.kind, Kind::GoAway);
        assert_eq!(
            Code::from_u16(goaway.header.status),
            Code::ResourceExhausted
        );
        let text = String::from_utf8_lossy(&goaway.payload).into_owned();
        assert!(text.contains("flow-control violation"), "{text}");
        assert!(text.contains("call 1"), "{text}");
        println!("GoAway: {text}");
        // The violator's connection ends; everyone else is served.
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while raw.next().await.is_some() {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server closes the violator's connection"
        );
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn a_peer_that_never_grants_credit_is_bounded_by_the_deadline() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let mut raw = Raw::connect(&server).await;
        // One message's credit, then none: the handler's stream stalls
        // after it, and the call's deadline ends it.
        let started = Instant::now();
        let args = (vec![100_u64; 1_000], 0_u64, None::<(u16, String)>);
        let deadline = Duration::from_millis(500);
        raw.send(&request(
            1,
            "streaming_output_call",
            FLAG_SERVER_STREAM,
            1,
            deadline,
            &args,
        ))
        .await;
        let first = raw.next().await.expect("the one message granted");
        assert_eq!(first.header.kind, Kind::Data);
        assert!(first.header.from_callee());
        // This raw peer's hello lists no features: a message per frame,
        // never a batch.
        assert_eq!(
            first.header.flags & switchyard::protocol::frame::FLAG_BATCH,
            0
        );
        let end = raw.next().await.expect("the end of the call");
        assert_eq!(end.header.kind, Kind::Response, "nothing beyond the credit");
        assert_eq!(Code::from_u16(end.header.status), Code::DeadlineExceeded);
        let took = started.elapsed();
        println!("a stalled stream ended after {took:?} (deadline {deadline:?})");
        assert!(took < deadline + Duration::from_secs(5), "{took:?}");
        // The connection lives on.
        raw.send(&request(2, "add", 0, 0, LIMIT, &(1_i64, 2_i64)))
            .await;
        let answer = raw.next_control().await.expect("an answer");
        assert_eq!((answer.header.call_id, answer.header.status), (2, 0));
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn a_message_after_the_half_close_ends_that_call_with_invalid_argument() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let mut raw = Raw::connect(&server).await;
        raw.send(&request(
            1,
            "streaming_input_call",
            FLAG_CLIENT_STREAM,
            0,
            LIMIT,
            &(),
        ))
        .await;
        let grant = raw.next().await.expect("the server's first grant");
        assert_eq!(grant.header.kind, Kind::Credit);
        let mut wire = message(1, &switchyard::Bytes::from(vec![1, 2, 3]));
        wire.extend_from_slice(&end_frame(1));
        wire.extend_from_slice(&message(1, &switchyard::Bytes::from(vec![4])));
        raw.send(&wire).await;
        let end = raw.next_control().await.expect("the call's end");
        assert_eq!(end.header.kind, Kind::Response);
        let text = String::from_utf8_lossy(&end.payload).into_owned();
        // The call ended one way or the other: with its result if the
        // handler finished before the late message came, else refused.
        if end.header.status != 0 {
            assert_eq!(
                Code::from_u16(end.header.status),
                Code::InvalidArgument,
                "{text}"
            );
            assert!(text.contains("half-closed"), "{text}");
        }
        raw.send(&request(2, "add", 0, 0, LIMIT, &(1_i64, 2_i64)))
            .await;
        let answer = raw.next_control().await.expect("the connection lives");
        assert_eq!((answer.header.call_id, answer.header.status), (2, 0));
    })
    .await;
}

#[tokio::test]
async fn stream_frames_for_unknown_or_finished_calls_are_dropped_and_harm_nothing() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let mut raw = Raw::connect(&server).await;
        let mut wire = message(777, &duplex(1));
        wire.extend_from_slice(&end_frame(778));
        wire.extend_from_slice(&credit_frame(779, false, 1_000));
        raw.send(&wire).await;
        // A finished stream: one call runs to its end, then gets more.
        let args = (vec![1_u64], 0_u64, None::<(u16, String)>);
        raw.send(&request(
            1,
            "streaming_output_call",
            FLAG_SERVER_STREAM,
            8,
            LIMIT,
            &args,
        ))
        .await;
        let end = raw.next_control().await.expect("the call's end");
        assert_eq!((end.header.kind, end.header.status), (Kind::Response, 0));
        let mut late = credit_frame(1, false, 5);
        late.extend_from_slice(&message(1, &duplex(1)));
        late.extend_from_slice(&end_frame(1));
        raw.send(&late).await;
        raw.send(&request(2, "add", 0, 0, LIMIT, &(40_i64, 2_i64)))
            .await;
        let answer = raw.next_control().await.expect("the connection lives");
        assert_eq!((answer.header.call_id, answer.header.status), (2, 0));
        still_serves(&server).await;
    })
    .await;
}

#[tokio::test]
async fn a_stream_beyond_the_servers_concurrent_limit_is_resource_exhausted() {
    let server = ServerProcess::start(&["--max-in-flight", "2"]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        // Two streams whose messages are a minute apart hold both places.
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(
                client
                    .streaming_output_call(vec![1; 2], 60_000, None)
                    .await
                    .unwrap(),
            );
        }
        // The third is refused, by the server, naming the knob.
        let mut third = client
            .streaming_output_call(vec![1], 0, None)
            .await
            .unwrap();
        let status = third.message().await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.message().contains("max_in_flight"), "{status}");
        // Once one ends, a new stream gets its place.
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut next = client
                .streaming_output_call(vec![5], 0, None)
                .await
                .unwrap();
            match next.message().await {
                Ok(Some(message)) => {
                    assert_eq!(message.len(), 5);
                    break;
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    assert!(Instant::now() < deadline, "the place never came free");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
}
