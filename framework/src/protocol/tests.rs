//! Two protocol ends driven in memory on a virtual clock: a client with a
//! [`ClientCalls`] table and a server with a [`ServerCalls`] table exchange
//! encoded bytes through [`FrameDecoder`]s, as the runtime does over a link.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::call::{ClientCalls, ServerCalls};
use super::frame::{
    DEFAULT_FRAME_LIMIT, Decoded, FrameDecoder, Header, Kind, finish_frame, start_frame,
};
use super::hello::{Hello, HostIdentity, Role};
use super::metadata::Metadata;
use super::status::{Code, Status};

/// One end: bytes it has received and not decoded yet, and its decoder.
struct End {
    inbox: BytesMut,
    decoder: FrameDecoder,
}

impl End {
    fn new(limit: u32) -> Self {
        Self {
            inbox: BytesMut::new(),
            decoder: FrameDecoder::new(limit),
        }
    }

    fn frames(&mut self) -> Vec<Decoded> {
        let mut out = Vec::new();
        while let Some(decoded) = self.decoder.decode(&mut self.inbox).unwrap() {
            out.push(decoded);
        }
        out
    }
}

/// A client and a server joined in memory, with a virtual clock.
struct Pair {
    now: Instant,
    client: End,
    server: End,
    calls: ClientCalls<u32>,
    in_flight: ServerCalls<()>,
}

impl Pair {
    fn new(server_limit: usize, frame_limit: u32) -> Self {
        Self {
            now: Instant::now(),
            client: End::new(DEFAULT_FRAME_LIMIT),
            server: End::new(frame_limit),
            calls: ClientCalls::new(1024),
            in_flight: ServerCalls::new(server_limit),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The client encodes a request and "sends" it to the server.
    fn send_request(
        &mut self,
        tag: u32,
        deadline: Option<Instant>,
        payload: &[u8],
    ) -> Result<u64, Status> {
        let started = self
            .calls
            .start(self.now, deadline, "Calc.add", tag)
            .map_err(|(status, _)| status)?;
        let mut header = Header::new(Kind::Request, started.call_id);
        header.method_id = 7;
        header.deadline_us = started.deadline_us;
        let mut metadata = Metadata::new();
        metadata.insert("who", "test").unwrap();
        let mut wire = Vec::new();
        let start = start_frame(&mut wire);
        metadata.encode_into(&mut wire);
        wire.extend_from_slice(payload);
        finish_frame(&mut wire, start, header, metadata.encoded_len(), u32::MAX).unwrap();
        self.server.inbox.extend_from_slice(&wire);
        Ok(started.call_id)
    }

    /// The server admits every request it has received and answers each at
    /// once (OK with the payload echoed, or the admission error).
    fn serve(&mut self) -> Vec<Option<Instant>> {
        let mut deadlines = Vec::new();
        for decoded in self.server.frames() {
            let (header, reply) = match decoded {
                Decoded::Frame(frame) => {
                    assert_eq!(
                        Metadata::decode(&frame.metadata).unwrap().get_str("who"),
                        Some("test")
                    );
                    match self.in_flight.admit(self.now, &frame.header, ()) {
                        Ok(admitted) => {
                            deadlines.push(admitted.deadline);
                            (frame.header, Ok(frame.payload))
                        }
                        Err(status) => (frame.header, Err(status)),
                    }
                }
                Decoded::Oversized(header) => (
                    header,
                    Err(Status::resource_exhausted(
                        "request exceeds the frame limit",
                    )),
                ),
            };
            let mut response = Header::new(Kind::Response, header.call_id);
            let body = match reply {
                Ok(payload) => {
                    self.in_flight.finish(header.call_id);
                    payload
                }
                Err(status) => {
                    response.status = status.code().as_u16();
                    Bytes::from(status.message().to_owned())
                }
            };
            let mut wire = Vec::new();
            let start = start_frame(&mut wire);
            wire.extend_from_slice(&body);
            finish_frame(&mut wire, start, response, 0, u32::MAX).unwrap();
            self.client.inbox.extend_from_slice(&wire);
        }
        deadlines
    }

    /// The client matches responses to waiters: (tag, code, payload).
    fn receive(&mut self) -> Vec<(u32, Code, Bytes)> {
        self.client
            .frames()
            .into_iter()
            .filter_map(|decoded| match decoded {
                Decoded::Frame(frame) => self
                    .calls
                    .complete(frame.header.call_id)
                    .map(|tag| (tag, Code::from_u16(frame.header.status), frame.payload)),
                Decoded::Oversized(_) => panic!("client limit is generous"),
            })
            .collect()
    }
}

#[test]
fn a_request_and_its_response_pair_up() {
    let mut pair = Pair::new(8, DEFAULT_FRAME_LIMIT);
    pair.send_request(1, None, b"abc").unwrap();
    pair.send_request(2, None, b"de").unwrap();
    assert_eq!(pair.serve(), vec![None, None]);
    let got = pair.receive();
    assert_eq!(
        got,
        vec![
            (1, Code::Ok, Bytes::from_static(b"abc")),
            (2, Code::Ok, Bytes::from_static(b"de"))
        ]
    );
    assert!(pair.calls.is_empty());
    assert!(pair.in_flight.is_empty());
}

#[test]
fn the_deadline_budget_travels_and_counts_from_receipt() {
    let mut pair = Pair::new(8, DEFAULT_FRAME_LIMIT);
    let deadline = pair.now + Duration::from_millis(30);
    pair.advance(Duration::from_millis(10));
    pair.send_request(1, Some(deadline), b"").unwrap();
    pair.advance(Duration::from_millis(5)); // in transit
    let deadlines = pair.serve();
    assert_eq!(deadlines, vec![Some(pair.now + Duration::from_millis(20))]);
}

#[test]
fn a_past_deadline_sends_nothing() {
    let mut pair = Pair::new(8, DEFAULT_FRAME_LIMIT);
    let deadline = pair.now;
    pair.advance(Duration::from_millis(1));
    let err = pair.send_request(1, Some(deadline), b"x").unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(pair.server.inbox.is_empty());
    assert!(pair.calls.is_empty());
}

#[test]
fn beyond_the_server_limit_calls_get_resource_exhausted() {
    let mut pair = Pair::new(0, DEFAULT_FRAME_LIMIT);
    pair.send_request(1, None, b"x").unwrap();
    pair.serve();
    let got = pair.receive();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Code::ResourceExhausted);
    assert!(std::str::from_utf8(&got[0].2).unwrap().contains("limit"));
}

#[test]
fn an_oversized_request_is_answered_and_the_next_one_still_works() {
    let mut pair = Pair::new(8, 16);
    pair.send_request(1, None, &[7u8; 64]).unwrap();
    pair.send_request(2, None, b"ok").unwrap();
    pair.serve();
    let got = pair.receive();
    assert_eq!(got[0].0, 1);
    assert_eq!(got[0].1, Code::ResourceExhausted);
    assert_eq!(got[1], (2, Code::Ok, Bytes::from_static(b"ok")));
}

#[test]
fn a_cancelled_call_ignores_its_late_response() {
    let mut pair = Pair::new(8, DEFAULT_FRAME_LIMIT);
    let id = pair.send_request(1, None, b"slow").unwrap();
    assert!(pair.calls.abandon(id));
    pair.serve();
    assert!(pair.receive().is_empty(), "late responses are dropped");
}

#[test]
fn no_call_starts_on_a_closed_table() {
    let mut pair = Pair::new(8, DEFAULT_FRAME_LIMIT);
    pair.send_request(1, None, b"in flight").unwrap();
    let gone = Status::unavailable("the link ended");
    let drained: Vec<u32> = pair.calls.close(gone.clone()).collect();
    assert_eq!(drained, vec![1], "the call in flight is handed back");
    // A call that got hold of the connection before it closed must not
    // register: nothing would ever answer it.
    let (status, waiter) = pair
        .calls
        .start(pair.now, None, "Svc.method", 2)
        .unwrap_err();
    assert_eq!((status.code(), waiter), (Code::Unavailable, 2));
    assert!(pair.calls.is_empty());
    // The first reason stays.
    let _ = pair.calls.close(Status::internal("later")).count();
    assert_eq!(pair.calls.closed(), Some(&gone));
}

#[test]
fn hellos_cross_and_reveal_locality() {
    let host = HostIdentity {
        boot_id: "boot".into(),
        ipc_ns: 1,
        ..HostIdentity::default()
    };
    let hello = |role| Hello {
        role,
        host: host.clone(),
        pid: 1,
        uid: 0,
        process_name: "p".into(),
        max_frame: DEFAULT_FRAME_LIMIT,
        max_in_flight: 8,
        services: Vec::new(),
        queues: Vec::new(),
        endpoints: Vec::new(),
    };
    let mut pair = Pair::new(8, DEFAULT_FRAME_LIMIT);
    for (role, inbox) in [(Role::Client, 0), (Role::Server, 1)] {
        let mut wire = Vec::new();
        let start = start_frame(&mut wire);
        hello(role).encode_into(&mut wire);
        finish_frame(&mut wire, start, Header::new(Kind::Hello, 0), 0, u32::MAX).unwrap();
        if inbox == 0 {
            pair.server.inbox.extend_from_slice(&wire);
        } else {
            pair.client.inbox.extend_from_slice(&wire);
        }
    }
    for end in [&mut pair.client, &mut pair.server] {
        let frames = end.frames();
        let [Decoded::Frame(frame)] = frames.as_slice() else {
            panic!("one hello expected, got {frames:?}");
        };
        let peer = Hello::decode(&frame.payload).unwrap();
        assert_eq!(host.locality(&peer.host), super::Locality::SameHostSameIpc);
    }
}
