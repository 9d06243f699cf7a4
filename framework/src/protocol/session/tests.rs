//! Two real [`Session`]s driven against each other on a virtual clock:
//! what one transmits is decoded by the other's [`FrameDecoder`], as the
//! runtime does over a link. No runtime, no sockets.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::cancel_budget::CancelRate;
use super::encode::{RequestHead, bare_frame, frame_status, hello_frame, status_frame};
use super::handshake::{check_hello, expected_peer_role};
use super::*;
use crate::protocol::frame::{
    DEFAULT_FRAME_LIMIT, FLAG_NOT_STARTED, FrameDecoder, finish_frame, start_frame,
};
use crate::protocol::hello::{Hello, HostIdentity, Locality};

/// What a test caller waits on: a tag.
pub(super) type Tag = u32;
/// What stops a test handler: its call id.
pub(super) type Stop = u64;

/// One end: a session and the bytes it has received and not decoded yet.
pub(super) struct End {
    pub(super) session: Session<Tag, Stop>,
    pub(super) inbox: BytesMut,
    decoder: FrameDecoder,
}

impl End {
    fn new(now: Instant, config: SessionConfig) -> Self {
        Self {
            inbox: BytesMut::new(),
            decoder: FrameDecoder::new(config.limits.own),
            session: Session::new(now, config),
        }
    }

    pub(super) fn decoded(&mut self) -> Vec<Decoded> {
        let mut out = Vec::new();
        while let Some(decoded) = self.decoder.decode(&mut self.inbox).unwrap() {
            out.push(decoded);
        }
        out
    }
}

fn config(role: Role, own: u32, peer: u32) -> SessionConfig {
    SessionConfig {
        role,
        sides: Sides::of(role),
        limits: FrameLimits {
            own,
            peer,
            knobs: match role {
                Role::Server => LimitKnobs::SERVER,
                _ => LimitKnobs::CLIENT,
            },
        },
        max_pending: 1024,
        max_in_flight: 8,
        cancel_rate: CancelRate::default(),
        timers: Timers::default(),
    }
}

/// Two ends joined in memory, with a virtual clock.
pub(super) struct Pair {
    pub(super) now: Instant,
    pub(super) a: End,
    pub(super) b: End,
}

impl Pair {
    pub(super) fn client_server() -> Self {
        Self::with(
            config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
            config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
        )
    }

    /// A client and a server whose clocks run as `timers` say.
    fn with_server_timers(timers: Timers) -> Self {
        Self::with(
            config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
            with_timers(
                config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
                timers,
            ),
        )
    }

    fn with(a: SessionConfig, b: SessionConfig) -> Self {
        let now = Instant::now();
        Self {
            now,
            a: End::new(now, a),
            b: End::new(now, b),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Moves every frame each side transmits to the other (`may_drop`
    /// frames too: the link is not backed up).
    pub(super) fn flush(&mut self) {
        while let Some(t) = self.a.session.poll_transmit() {
            self.b.inbox.extend_from_slice(&t.bytes);
        }
        while let Some(t) = self.b.session.poll_transmit() {
            self.a.inbox.extend_from_slice(&t.bytes);
        }
    }

    /// `a` starts a call to method 7 and sends its request to `b`.
    fn call(&mut self, tag: Tag, deadline: Option<Instant>, payload: &[u8]) -> Result<u64, Status> {
        let started = self
            .a
            .session
            .start_call(self.now, deadline, "Calc.add", tag)
            .map_err(|(status, _)| status)?;
        let wire = request(
            &self.a.session,
            started.call_id,
            started.deadline_us,
            payload,
        )?;
        self.b.inbox.extend_from_slice(&wire);
        Ok(started.call_id)
    }

    /// `b` reads everything and returns its events; protocol errors are
    /// given to `protocol_error`, as the runtime does.
    pub(super) fn b_reads(&mut self) -> Vec<Event<Tag, Stop>> {
        let now = self.now;
        for decoded in self.b.decoded() {
            if let Err(status) = self.b.session.handle_frame(now, decoded) {
                self.b.session.protocol_error(&status);
                break;
            }
        }
        std::iter::from_fn(|| self.b.session.poll_event()).collect()
    }

    /// `a` reads everything and returns its events.
    pub(super) fn a_reads(&mut self) -> Vec<Event<Tag, Stop>> {
        let now = self.now;
        for decoded in self.a.decoded() {
            self.a.session.handle_frame(now, decoded).unwrap();
        }
        std::iter::from_fn(|| self.a.session.poll_event()).collect()
    }

    /// `b` admits every request it has and answers each at once with the
    /// payload echoed (or refuses it); returns the deadlines it admitted.
    fn b_serves(&mut self) -> Vec<Option<Instant>> {
        let mut deadlines = Vec::new();
        for event in self.b_reads() {
            let Event::Request(frame) = event else {
                continue;
            };
            let id = frame.header.call_id;
            let oneway = frame.header.kind == Kind::OneWay;
            match self.b.session.admit(self.now, &frame.header, id) {
                Ok(admitted) => {
                    deadlines.push(admitted.deadline);
                    assert_eq!(self.b.session.finish(self.now, id), Some(id));
                    if !oneway {
                        // What the session queued before goes first.
                        self.flush();
                        let sealed =
                            self.b
                                .session
                                .reply(id, Ok(echo(&frame.payload)), &Metadata::new());
                        self.a.inbox.extend_from_slice(&sealed.bytes);
                    }
                }
                Err(status) => {
                    self.b.session.refuse(id, oneway, &status);
                }
            }
        }
        self.flush();
        deadlines
    }

    /// `a`'s responses: (tag, code, payload or message).
    pub(super) fn a_responses(&mut self) -> Vec<(Tag, Code, Bytes)> {
        self.a_reads()
            .into_iter()
            .filter_map(|event| match event {
                Event::Response { waiter, frame } => {
                    Some((waiter, Code::from_u16(frame.header.status), frame.payload))
                }
                Event::CallFailed { waiter, status } => Some((
                    waiter,
                    status.code(),
                    Bytes::from(status.message().to_owned()),
                )),
                _ => None,
            })
            .collect()
    }
}

/// Encodes a request to method 7 from `session`, with one metadata entry.
fn request(
    session: &Session<Tag, Stop>,
    call_id: u64,
    deadline_us: u64,
    payload: &[u8],
) -> Result<Vec<u8>, Status> {
    let mut metadata = Metadata::new();
    metadata.insert("who", "test").unwrap();
    let mut wire = Vec::new();
    start_frame(&mut wire);
    metadata.encode_into(&mut wire);
    wire.extend_from_slice(payload);
    let head = RequestHead {
        flags: 0,
        credit: 0,
        kind: Kind::Request,
        call_id,
        method_id: 7,
        deadline_us,
    };
    session
        .limits()
        .seal_request(&mut wire, head, metadata.encoded_len(), "Calc.add")?;
    Ok(wire)
}

/// A reply body echoing `payload`.
fn echo(payload: &[u8]) -> ReplyBody {
    let mut buf = vec![0; HEADER_LEN];
    buf.extend_from_slice(payload);
    ReplyBody {
        buf,
        metadata_len: 0,
        bulk_len: None,
        flags: 0,
    }
}

fn text(bytes: &Bytes) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn hello(role: Role) -> Hello {
    Hello {
        role,
        host: HostIdentity {
            boot_id: "boot".into(),
            ipc_ns: 1,
            ..HostIdentity::default()
        },
        pid: 1,
        uid: 0,
        process_name: "p".into(),
        max_frame: DEFAULT_FRAME_LIMIT,
        max_in_flight: 8,
        services: Vec::new(),
        queues: Vec::new(),
        endpoints: Vec::new(),
        codecs: 0,
        features: 0,
    }
}

fn decode_one(wire: &[u8]) -> Decoded {
    let mut decoder = FrameDecoder::new(DEFAULT_FRAME_LIMIT);
    let mut buf = BytesMut::from(wire);
    decoder.decode(&mut buf).unwrap().unwrap()
}

// ----- the hello exchange -----

#[test]
fn hellos_cross_and_reveal_locality() {
    for role in [Role::Client, Role::Server, Role::Peer] {
        let theirs = expected_peer_role(role);
        let got = check_hello(decode_one(&hello_frame(&hello(theirs))), theirs).unwrap();
        assert_eq!(got, hello(theirs));
        assert_eq!(
            hello(role).host.locality(&got.host),
            Locality::SameHostSameIpc
        );
    }
}

#[test]
fn the_first_frame_must_be_the_hello_of_the_expected_role() {
    let wrong_role = check_hello(decode_one(&hello_frame(&hello(Role::Client))), Role::Server);
    let err = wrong_role.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("introduced itself as Client"),
        "{err}"
    );

    let ping = check_hello(decode_one(&bare_frame(Kind::Ping, 1)), Role::Server);
    assert!(ping.unwrap_err().message().contains("is Ping, not Hello"));

    // A peer that refuses this side says why with a GoAway instead.
    let refused = Status::permission_denied("not you");
    let goaway = check_hello(
        decode_one(&status_frame(Kind::GoAway, 0, &refused)),
        Role::Server,
    );
    assert_eq!(goaway.unwrap_err(), refused);

    let mut garbage = Vec::new();
    start_frame(&mut garbage);
    garbage.extend_from_slice(b"not a hello");
    finish_frame(&mut garbage, 0, Header::new(Kind::Hello, 0), 0, u32::MAX).unwrap();
    let malformed = check_hello(decode_one(&garbage), Role::Server).unwrap_err();
    assert!(malformed.message().contains("malformed"), "{malformed}");

    let oversized = check_hello(
        Decoded::Oversized(Header::new(Kind::Hello, 0)),
        Role::Server,
    );
    assert!(oversized.unwrap_err().message().contains("oversized"));
}

#[test]
fn a_second_hello_breaks_the_protocol_and_ends_reading_with_a_goaway() {
    let mut pair = Pair::client_server();
    pair.b
        .inbox
        .extend_from_slice(&hello_frame(&hello(Role::Client)));
    assert!(pair.b_reads().is_empty());
    assert!(!pair.b.session.is_reading());
    assert!(pair.b.session.is_draining());
    pair.flush();
    let events = pair.a_reads();
    let [Event::PeerGoingAway(status)] = events.as_slice() else {
        panic!("a GoAway expected, got {events:?}");
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("second hello"));
    assert_eq!(pair.a.session.peer_going_away(), Some(status));
}

// ----- calls and their responses -----

#[test]
fn a_request_and_its_response_pair_up() {
    let mut pair = Pair::client_server();
    pair.call(1, None, b"abc").unwrap();
    pair.call(2, None, b"de").unwrap();
    assert_eq!(pair.b_serves(), vec![None, None]);
    assert_eq!(
        pair.a_responses(),
        vec![
            (1, Code::Ok, Bytes::from_static(b"abc")),
            (2, Code::Ok, Bytes::from_static(b"de"))
        ]
    );
    assert_eq!(pair.a.session.waiting_calls(), 0);
    assert_eq!(pair.b.session.serving_calls(), 0);
}

#[test]
fn request_metadata_arrives_with_the_request() {
    let mut pair = Pair::client_server();
    pair.call(1, None, b"x").unwrap();
    let events = pair.b_reads();
    let [Event::Request(frame)] = events.as_slice() else {
        panic!("one request expected, got {events:?}");
    };
    assert_eq!(frame.header.method_id, 7);
    assert_eq!(
        Metadata::decode(&frame.metadata).unwrap().get_str("who"),
        Some("test")
    );
}

#[test]
fn the_deadline_budget_travels_and_counts_from_receipt() {
    let mut pair = Pair::client_server();
    let deadline = pair.now + Duration::from_millis(30);
    pair.advance(Duration::from_millis(10));
    pair.call(1, Some(deadline), b"").unwrap();
    pair.advance(Duration::from_millis(5)); // in transit
    let deadlines = pair.b_serves();
    assert_eq!(deadlines, vec![Some(pair.now + Duration::from_millis(20))]);
}

#[test]
fn a_past_deadline_sends_nothing() {
    let mut pair = Pair::client_server();
    let deadline = pair.now;
    pair.advance(Duration::from_millis(1));
    let err = pair.call(1, Some(deadline), b"x").unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(pair.b.inbox.is_empty());
    assert_eq!(pair.a.session.waiting_calls(), 0);
}

#[test]
fn too_many_waiting_calls_are_refused_before_sending() {
    let mut caller = config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT);
    caller.max_pending = 1;
    let mut pair = Pair::with(
        caller,
        config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
    );
    pair.call(1, None, b"x").unwrap();
    let err = pair.call(2, None, b"y").unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("client's limit"), "{err}");
}

#[test]
fn beyond_the_server_limit_calls_get_resource_exhausted() {
    let mut server = config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT);
    server.max_in_flight = 0;
    let mut pair = Pair::with(
        config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
        server,
    );
    pair.call(1, None, b"x").unwrap();
    pair.b_serves();
    let got = pair.a_responses();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Code::ResourceExhausted);
    assert!(text(&got[0].2).contains("ServerBuilder::max_in_flight"));
}

#[test]
fn a_reused_call_id_is_refused() {
    let mut pair = Pair::client_server();
    let header = Header::new(Kind::Request, 9);
    pair.b.session.admit(pair.now, &header, 9).unwrap();
    let err = pair.b.session.admit(pair.now, &header, 9).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("already in flight"));
}

#[test]
fn a_one_way_call_gets_no_answer_even_when_refused() {
    let mut pair = Pair::client_server();
    let id = pair.a.session.allocate_id();
    let mut wire = Vec::new();
    start_frame(&mut wire);
    let head = RequestHead {
        flags: 0,
        credit: 0,
        kind: Kind::OneWay,
        call_id: id,
        method_id: 7,
        deadline_us: 0,
    };
    pair.a
        .session
        .limits()
        .seal_request(&mut wire, head, 0, "Log.put")
        .unwrap();
    pair.b.inbox.extend_from_slice(&wire);
    let events = pair.b_reads();
    let [Event::Request(frame)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(frame.header.kind, Kind::OneWay);
    assert_eq!(pair.b.session.refuse(id, true, &Status::internal("no")), 0);
    assert!(pair.b.session.poll_transmit().is_none());
}

// ----- frame limits -----

#[test]
fn an_oversized_request_is_answered_and_the_next_one_still_works() {
    let mut pair = Pair::with(
        config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
        config(Role::Server, 16, DEFAULT_FRAME_LIMIT),
    );
    pair.call(1, None, &[7u8; 64]).unwrap();
    pair.call(2, None, b"ok").unwrap();
    pair.b_serves();
    let got = pair.a_responses();
    assert_eq!(got[0].0, 1);
    assert_eq!(got[0].1, Code::ResourceExhausted);
    assert!(text(&got[0].2).contains("this server's limit of 16 bytes"));
    assert!(text(&got[0].2).contains("ServerBuilder::max_frame"));
    assert_eq!(got[1], (2, Code::Ok, Bytes::from_static(b"ok")));
}

#[test]
fn a_request_over_the_peers_limit_is_not_sent() {
    let mut pair = Pair::with(
        config(Role::Client, DEFAULT_FRAME_LIMIT, 16),
        config(Role::Server, 16, DEFAULT_FRAME_LIMIT),
    );
    let err = pair.call(1, None, &[0; 64]).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message()
            .contains("over the server's limit of 16 bytes"),
        "{err}"
    );
    assert!(
        err.message()
            .contains("the server's ServerBuilder::max_frame"),
        "{err}"
    );
    assert!(pair.b.inbox.is_empty());
}

#[test]
fn an_oversized_response_fails_only_its_call() {
    let mut pair = Pair::with(
        config(Role::Client, 16, DEFAULT_FRAME_LIMIT),
        config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
    );
    pair.call(1, None, &[1; 64]).unwrap();
    pair.call(2, None, b"ok").unwrap();
    pair.b_serves();
    let got = pair.a_responses();
    assert_eq!(got[0].1, Code::ResourceExhausted);
    assert!(text(&got[0].2).contains("this client's limit of 16 bytes"));
    assert!(text(&got[0].2).contains("ChannelBuilder::max_frame"));
    assert_eq!(got[1], (2, Code::Ok, Bytes::from_static(b"ok")));
}

#[test]
fn a_reply_over_the_callers_limit_becomes_resource_exhausted() {
    let session: Session<Tag, Stop> =
        Session::new(Instant::now(), config(Role::Server, DEFAULT_FRAME_LIMIT, 8));
    let sealed = session.reply(3, Ok(echo(&[0; 9])), &Metadata::new());
    assert_eq!(sealed.code, Code::ResourceExhausted);
    let Decoded::Frame(frame) = decode_one(&sealed.bytes) else {
        panic!("a status frame fits");
    };
    assert_eq!(frame.header.call_id, 3);
    let status = frame_status(&frame);
    assert!(
        status
            .message()
            .contains("over the client's limit of 8 bytes"),
        "{status}"
    );
    assert!(
        status
            .message()
            .contains("the client's ChannelBuilder::max_frame")
    );
    // Bulk bodies count too.
    let bulk = ReplyBody {
        buf: vec![0; HEADER_LEN],
        metadata_len: 0,
        bulk_len: Some(9),
        flags: 0,
    };
    let sealed = session.reply(4, Ok(bulk), &Metadata::new());
    assert_eq!((sealed.code, sealed.bulk), (Code::ResourceExhausted, false));
    let fits = ReplyBody {
        buf: vec![0; HEADER_LEN],
        metadata_len: 0,
        bulk_len: Some(8),
        flags: 0,
    };
    let sealed = session.reply(5, Ok(fits), &Metadata::new());
    assert_eq!((sealed.code, sealed.bulk), (Code::Ok, true));
}

#[test]
fn an_error_carries_its_metadata_unless_that_passes_the_limit() {
    let session: Session<Tag, Stop> = Session::new(
        Instant::now(),
        config(Role::Server, DEFAULT_FRAME_LIMIT, 64),
    );
    let mut metadata = Metadata::new();
    metadata.insert("retry-after", "5").unwrap();
    let failed = Status::unavailable("busy");
    let sealed = session.reply(1, Err(failed.clone()), &metadata);
    let Decoded::Frame(frame) = decode_one(&sealed.bytes) else {
        panic!()
    };
    assert_eq!(frame_status(&frame), failed);
    assert_eq!(
        Metadata::decode(&frame.metadata)
            .unwrap()
            .get_str("retry-after"),
        Some("5")
    );
    assert!(!sealed.metadata_dropped);

    metadata.insert("big", vec![b'x'; 100]).unwrap();
    let sealed = session.reply(1, Err(failed.clone()), &metadata);
    assert!(sealed.metadata_dropped);
    let Decoded::Frame(frame) = decode_one(&sealed.bytes) else {
        panic!()
    };
    assert!(frame.metadata.is_empty());
    assert_eq!(frame_status(&frame), failed);
}

#[test]
fn a_handler_error_with_code_ok_becomes_unknown() {
    let session: Session<Tag, Stop> = Session::new(
        Instant::now(),
        config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
    );
    let sealed = session.reply(1, Err(Status::new(Code::Ok, "odd")), &Metadata::new());
    assert_eq!(sealed.code, Code::Unknown);
}

// ----- cancellation -----

#[test]
fn a_cancel_stops_the_handler_and_the_late_response_is_ignored() {
    let mut pair = Pair::client_server();
    let id = pair.call(1, None, b"slow").unwrap();
    let events = pair.b_reads();
    let [Event::Request(frame)] = events.as_slice() else {
        panic!("{events:?}");
    };
    pair.b.session.admit(pair.now, &frame.header, id).unwrap();
    let cancel = pair.a.session.abandon(id, true).expect("a cancel to send");
    pair.b.inbox.extend_from_slice(&cancel);
    let events = pair.b_reads();
    let [Event::Cancelled { call_id, handle }] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!((*call_id, *handle), (id, id));
    // The handler's result, if it comes anyway, is not sent.
    assert_eq!(pair.b.session.finish(pair.now, id), None);
    // A response that crossed the cancel is ignored.
    let sealed = pair
        .b
        .session
        .reply(id, Ok(echo(b"late")), &Metadata::new());
    pair.a.inbox.extend_from_slice(&sealed.bytes);
    assert!(pair.a_responses().is_empty());
}

#[test]
fn a_call_ended_by_its_deadline_sends_no_cancel() {
    let mut pair = Pair::client_server();
    let id = pair.call(1, None, b"x").unwrap();
    assert_eq!(pair.a.session.abandon(id, false), None);
    assert_eq!(pair.a.session.waiting_calls(), 0);
    // Abandoning twice (or an answered call) sends nothing either.
    assert_eq!(pair.a.session.abandon(id, true), None);
}

#[test]
fn a_cancel_flood_closes_the_connection() {
    let mut server = config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT);
    server.cancel_rate = CancelRate {
        per_second: 10,
        burst: 2,
    };
    server.max_in_flight = 100;
    let mut pair = Pair::with(
        config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
        server,
    );
    let mut cancelled = 0;
    for tag in 0..5 {
        let id = pair.call(tag, None, b"x").unwrap();
        for event in pair.b_reads() {
            if let Event::Request(frame) = event {
                pair.b.session.admit(pair.now, &frame.header, id).unwrap();
            }
        }
        let cancel = pair.a.session.abandon(id, true).unwrap();
        pair.b.inbox.extend_from_slice(&cancel);
        cancelled += pair
            .b_reads()
            .iter()
            .filter(|e| matches!(e, Event::Cancelled { .. }))
            .count();
        if !pair.b.session.is_reading() {
            break;
        }
    }
    assert_eq!(cancelled, 2, "the burst passes");
    assert!(!pair.b.session.is_reading(), "the flood ends reading");
    pair.flush();
    let events = pair.a_reads();
    let [Event::PeerGoingAway(status)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("Rapid Reset"), "{status}");
}

#[test]
fn a_cancel_for_a_call_already_ended_costs_nothing() {
    let mut server = config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT);
    server.cancel_rate = CancelRate {
        per_second: 1,
        burst: 1,
    };
    let mut pair = Pair::with(
        config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
        server,
    );
    for call_id in 100..200 {
        let status = Status::cancelled("late");
        pair.b
            .inbox
            .extend_from_slice(&status_frame(Kind::Cancel, call_id, &status));
    }
    assert!(pair.b_reads().is_empty());
    assert!(pair.b.session.is_reading());
}

// ----- ping, roles -----

#[test]
fn a_ping_is_answered_with_a_pong_of_the_same_id() {
    let mut pair = Pair::client_server();
    pair.b.inbox.extend_from_slice(&bare_frame(Kind::Ping, 42));
    assert!(pair.b_reads().is_empty());
    let pong = pair.b.session.poll_transmit().unwrap();
    assert!(!pong.may_drop, "a server waits to answer");
    let Decoded::Frame(frame) = decode_one(&pong.bytes) else {
        panic!()
    };
    assert_eq!((frame.header.kind, frame.header.call_id), (Kind::Pong, 42));
    // A caller-only side answers too, but never waits to.
    pair.a.inbox.extend_from_slice(&bare_frame(Kind::Ping, 43));
    assert!(pair.a_reads().is_empty());
    assert!(pair.a.session.poll_transmit().unwrap().may_drop);
}

#[test]
fn a_side_that_serves_nothing_answers_requests_unimplemented() {
    let mut pair = Pair::client_server();
    // The server calls its client.
    pair.b.session = Session::new(
        pair.now,
        config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
    );
    let started = pair.b.session.start_call(pair.now, None, "X.y", 5).unwrap();
    let wire = request(&pair.b.session, started.call_id, 0, b"").unwrap();
    pair.a.inbox.extend_from_slice(&wire);
    assert!(pair.a_reads().is_empty());
    let answer = pair.a.session.poll_transmit().unwrap();
    pair.b.inbox.extend_from_slice(&answer.bytes);
    let events = pair.b_reads();
    let [Event::Response { waiter: 5, frame }] = events.as_slice() else {
        panic!("{events:?}");
    };
    let status = frame_status(frame);
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("serves nothing"));
}

#[test]
fn peers_call_each_other_over_one_link() {
    let peer = config(Role::Peer, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT);
    let mut pair = Pair::with(peer, peer);
    pair.call(1, None, b"from a").unwrap();
    // b calls a at the same time.
    let started = pair
        .b
        .session
        .start_call(pair.now, None, "Calc.add", 2)
        .unwrap();
    let wire = request(&pair.b.session, started.call_id, 0, b"from b").unwrap();
    pair.a.inbox.extend_from_slice(&wire);
    // a serves b's call while waiting for its own.
    let events = pair.a_reads();
    let [Event::Request(frame)] = events.as_slice() else {
        panic!("{events:?}");
    };
    let id = frame.header.call_id;
    pair.a.session.admit(pair.now, &frame.header, id).unwrap();
    pair.a.session.finish(pair.now, id);
    let sealed = pair
        .a
        .session
        .reply(id, Ok(echo(&frame.payload)), &Metadata::new());
    pair.b.inbox.extend_from_slice(&sealed.bytes);
    // b serves a's call and gets its own response.
    let mut b_got = None;
    for event in pair.b_reads() {
        match event {
            Event::Request(frame) => {
                let id = frame.header.call_id;
                pair.b.session.admit(pair.now, &frame.header, id).unwrap();
                pair.b.session.finish(pair.now, id);
                let sealed = pair
                    .b
                    .session
                    .reply(id, Ok(echo(&frame.payload)), &Metadata::new());
                pair.a.inbox.extend_from_slice(&sealed.bytes);
            }
            Event::Response { waiter, frame } => b_got = Some((waiter, frame.payload)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(b_got, Some((2, Bytes::from_static(b"from b"))));
    assert_eq!(
        pair.a_responses(),
        vec![(1, Code::Ok, Bytes::from_static(b"from a"))]
    );
}

#[test]
fn a_serving_side_forwards_responses_to_the_caller_on_its_link() {
    let mut server = config(Role::Peer, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT);
    server.sides = Sides {
        calls: false,
        serves: true,
        forwards_to_caller: true,
    };
    let mut pair = Pair::with(
        config(Role::Peer, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
        server,
    );
    let response = status_frame(Kind::Response, 1, &Status::internal("x"));
    let goaway = status_frame(Kind::GoAway, 0, &Status::unavailable("bye"));
    pair.b.inbox.extend_from_slice(&response);
    pair.b.inbox.extend_from_slice(&goaway);
    let events = pair.b_reads();
    let kinds: Vec<Kind> = events
        .iter()
        .flat_map(|e| match e {
            Event::ForCaller(frames) => frames.iter().map(|decoded| match decoded {
                Decoded::Frame(frame) => frame.header.kind,
                other => panic!("{other:?}"),
            }),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, vec![Kind::Response, Kind::GoAway]);
    assert!(
        pair.b.session.peer_going_away().is_none(),
        "not this session's"
    );
    // An oversized response too: the caller fails that call.
    pair.b
        .session
        .handle_frame(pair.now, Decoded::Oversized(Header::new(Kind::Response, 2)))
        .unwrap();
    assert!(matches!(
        pair.b.session.poll_event(),
        Some(Event::ForCaller(frames)) if matches!(frames[..], [Decoded::Oversized(_)])
    ));
    // An oversized one-way call cannot be answered: dropped, and said so.
    pair.b
        .session
        .handle_frame(pair.now, Decoded::Oversized(Header::new(Kind::OneWay, 3)))
        .unwrap();
    assert!(matches!(
        pair.b.session.poll_event(),
        Some(Event::Dropped {
            kind: Kind::OneWay,
            ..
        })
    ));
}

// ----- the end of a connection -----

#[test]
fn draining_says_goaway_once_refuses_new_calls_and_ends_when_calls_finish() {
    let mut pair = Pair::client_server();
    let id = pair.call(1, None, b"x").unwrap();
    for event in pair.b_reads() {
        if let Event::Request(frame) = event {
            pair.b.session.admit(pair.now, &frame.header, id).unwrap();
        }
    }
    let going = Status::unavailable("the server is shutting down");
    assert!(pair.b.session.drain(&going));
    assert!(!pair.b.session.drain(&going), "once");
    assert!(pair.b.session.is_draining());
    assert!(!pair.b.session.is_done(pair.now), "a call is still running");
    let refused = pair.b.session.admission_closed().unwrap();
    assert_eq!(refused.code(), Code::Unavailable);
    let goaway = pair.b.session.poll_transmit().unwrap();
    assert!(goaway.may_drop);
    assert!(pair.b.session.poll_transmit().is_none());
    pair.a.inbox.extend_from_slice(&goaway.bytes);
    let events = pair.a_reads();
    assert!(matches!(events.as_slice(), [Event::PeerGoingAway(s)] if *s == going));
    // The call in flight still finishes.
    pair.b.session.finish(pair.now, id);
    assert!(pair.b.session.is_done(pair.now));
    let sealed = pair
        .b
        .session
        .reply(id, Ok(echo(b"done")), &Metadata::new());
    pair.a.inbox.extend_from_slice(&sealed.bytes);
    assert_eq!(
        pair.a_responses(),
        vec![(1, Code::Ok, Bytes::from_static(b"done"))]
    );
}

#[test]
fn closing_hands_back_every_waiting_call_and_no_call_starts_after() {
    let mut pair = Pair::client_server();
    pair.call(1, None, b"in flight").unwrap();
    let gone = Status::unavailable("the link ended");
    let drained: Vec<Tag> = pair.a.session.close(gone.clone()).collect();
    assert_eq!(drained, vec![1], "the call in flight is handed back");
    // A call that got hold of the connection before it closed must not
    // register: nothing would ever answer it.
    let (status, waiter) = pair
        .a
        .session
        .start_call(pair.now, None, "Svc.method", 2)
        .unwrap_err();
    assert_eq!((status.code(), waiter), (Code::Unavailable, 2));
    assert_eq!(pair.a.session.waiting_calls(), 0);
    // The first reason stays.
    let _ = pair.a.session.close(Status::internal("later")).count();
    assert_eq!(pair.a.session.closed(), Some(&gone));
}

// ----- clocks: keepalive and idle -----

fn with_timers(mut config: SessionConfig, timers: Timers) -> SessionConfig {
    config.timers = timers;
    config
}

const MS: Duration = Duration::from_millis(1);

/// Ping after 100 ms of quiet; give up 50 ms later.
const KEEPALIVE: Timers = Timers {
    keepalive_interval: Some(Duration::from_millis(100)),
    keepalive_timeout: Duration::from_millis(50),
    idle_timeout: None,
    drain_grace: Duration::from_secs(1),
};

#[test]
fn no_timer_runs_unless_set() {
    let pair = Pair::client_server();
    assert_eq!(pair.a.session.poll_timeout(), None);
    assert_eq!(pair.b.session.poll_timeout(), None);
}

#[test]
fn a_quiet_peer_is_pinged_and_a_live_one_answers() {
    let mut pair = Pair::with_server_timers(KEEPALIVE);
    let start = pair.now;
    assert_eq!(pair.b.session.poll_timeout(), Some(start + 100 * MS));
    // Too early: nothing.
    pair.advance(99 * MS);
    pair.b.session.handle_timeout(pair.now);
    assert!(pair.b.session.poll_transmit().is_none());
    pair.advance(MS);
    pair.b.session.handle_timeout(pair.now);
    let ping = pair.b.session.poll_transmit().expect("a ping");
    let Decoded::Frame(frame) = decode_one(&ping.bytes) else {
        panic!()
    };
    assert_eq!(frame.header.kind, Kind::Ping);
    // The deadline is now the ping's timeout.
    assert_eq!(pair.b.session.poll_timeout(), Some(pair.now + 50 * MS));
    // The client answers; its Pong (any frame) proves it alive.
    pair.a.inbox.extend_from_slice(&ping.bytes);
    assert!(pair.a_reads().is_empty());
    pair.flush();
    pair.advance(10 * MS);
    assert!(pair.b_reads().is_empty());
    assert_eq!(pair.b.session.poll_timeout(), Some(pair.now + 100 * MS));
    pair.advance(60 * MS);
    pair.b.session.handle_timeout(pair.now);
    assert!(pair.b.session.poll_event().is_none(), "not declared dead");
    assert!(pair.b.session.is_reading());
}

#[test]
fn a_peer_that_does_not_answer_a_ping_is_declared_gone_once() {
    let mut pair = Pair::with_server_timers(KEEPALIVE);
    pair.advance(100 * MS);
    pair.b.session.handle_timeout(pair.now);
    assert!(pair.b.session.poll_transmit().is_some(), "the ping");
    pair.advance(49 * MS);
    pair.b.session.handle_timeout(pair.now);
    assert!(pair.b.session.poll_event().is_none());
    pair.advance(MS);
    pair.b.session.handle_timeout(pair.now);
    let Some(Event::PeerSilent(status)) = pair.b.session.poll_event() else {
        panic!("the peer is declared gone");
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("keepalive ping within 50ms"),
        "{status}"
    );
    assert!(!pair.b.session.is_reading());
    // Said once: the clock stops.
    assert_eq!(pair.b.session.poll_timeout(), None);
    pair.advance(Duration::from_secs(10));
    pair.b.session.handle_timeout(pair.now);
    assert!(pair.b.session.poll_event().is_none());
}

#[test]
fn steady_traffic_never_pings() {
    let mut pair = Pair::with_server_timers(KEEPALIVE);
    for tag in 0..100 {
        pair.advance(60 * MS);
        pair.call(tag, None, b"x").unwrap();
        pair.b_serves();
        pair.b.session.handle_timeout(pair.now);
        assert!(
            pair.b.session.poll_transmit().is_none(),
            "no ping at call {tag}"
        );
        assert_eq!(pair.a_responses().len(), 1);
    }
}

#[test]
fn an_idle_connection_drains_after_the_timeout_and_refuses_crossing_calls_as_not_started() {
    let timers = Timers {
        idle_timeout: Some(300 * MS),
        drain_grace: 100 * MS,
        ..Timers::default()
    };
    let mut pair = Pair::with_server_timers(timers);
    // A call in flight holds the idle clock.
    let id = pair.call(1, None, b"long").unwrap();
    for event in pair.b_reads() {
        if let Event::Request(frame) = event {
            pair.b.session.admit(pair.now, &frame.header, id).unwrap();
        }
    }
    assert_eq!(pair.b.session.poll_timeout(), None, "busy: no idle clock");
    pair.advance(Duration::from_secs(5));
    pair.b.session.finish(pair.now, id);
    let idle_at = pair.now + 300 * MS;
    assert_eq!(pair.b.session.poll_timeout(), Some(idle_at));
    pair.advance(300 * MS);
    pair.b.session.handle_timeout(pair.now);
    let Some(Event::Idle(status)) = pair.b.session.poll_event() else {
        panic!("idle expected");
    };
    assert!(status.message().contains("no calls for 300ms"), "{status}");
    assert!(pair.b.session.is_draining());
    assert!(
        !pair.b.session.is_done(pair.now),
        "it lingers for the grace"
    );
    let goaway = pair.b.session.poll_transmit().unwrap();
    // A call that crossed the GoAway is refused, marked as never started.
    let crossing = pair.call(2, None, b"crossed").unwrap();
    let events = pair.b_reads();
    let [Event::Request(frame)] = events.as_slice() else {
        panic!("{events:?}");
    };
    let refused = pair.b.session.admission_closed().unwrap();
    assert!(refused.message().contains("not started"), "{refused}");
    pair.b
        .session
        .refuse_admission(frame.header.call_id, false, &refused);
    pair.a.inbox.extend_from_slice(&goaway.bytes);
    pair.flush();
    let events = pair.a_reads();
    assert!(matches!(events[0], Event::PeerGoingAway(_)));
    let Event::Response { waiter: 2, frame } = &events[1] else {
        panic!("{events:?}");
    };
    assert_eq!(frame.header.call_id, crossing);
    assert_ne!(frame.header.flags & FLAG_NOT_STARTED, 0);
    // The grace ends it.
    assert_eq!(pair.b.session.poll_timeout(), Some(pair.now + 100 * MS));
    pair.advance(100 * MS);
    assert!(pair.b.session.is_done(pair.now));
}

#[test]
fn a_drain_goaway_names_the_last_call_seen_so_calls_above_it_are_made_again() {
    let mut pair = Pair::client_server();
    let seen = pair.call(1, None, b"seen").unwrap();
    let events = pair.b_reads();
    assert!(
        matches!(events.as_slice(), [Event::Request(_)]),
        "{events:?}"
    );
    pair.b.session.drain(&Status::unavailable("stopping"));
    let goaway = pair.b.session.poll_transmit().unwrap();
    // Sent after the GoAway left; the server closes without reading it.
    let unseen = pair.call(2, None, b"unseen").unwrap();
    pair.a.inbox.extend_from_slice(&goaway.bytes);
    let events = pair.a_reads();
    assert_eq!(events.len(), 2, "call {seen} still waits: {events:?}");
    assert!(matches!(events[0], Event::PeerGoingAway(_)));
    let Event::Response { waiter: 2, frame } = &events[1] else {
        panic!("{events:?}");
    };
    assert_eq!(frame.header.call_id, unseen);
    assert_ne!(frame.header.flags & FLAG_NOT_STARTED, 0);
    assert_eq!(frame.header.status, Code::Unavailable.as_u16());
    let message = String::from_utf8_lossy(&frame.payload);
    assert!(
        message.contains("never started") && message.contains("stopping"),
        "{message}"
    );
}

#[test]
fn a_server_shutdown_does_not_mark_refusals_as_not_started() {
    let mut pair = Pair::client_server();
    pair.b.session.drain(&Status::unavailable("stopping"));
    let refused = pair.b.session.admission_closed().unwrap();
    assert!(refused.message().contains("shutting down"), "{refused}");
    pair.b.session.refuse_admission(7, false, &refused);
    let mut frames = Vec::new();
    while let Some(t) = pair.b.session.poll_transmit() {
        frames.push(t);
    }
    let Decoded::Frame(frame) = decode_one(&frames[1].bytes) else {
        panic!()
    };
    assert_eq!(frame.header.call_id, 7);
    assert_eq!(frame.header.flags & FLAG_NOT_STARTED, 0);
}

#[test]
fn a_caller_only_side_never_goes_idle() {
    let timers = Timers {
        idle_timeout: Some(10 * MS),
        ..Timers::default()
    };
    let mut pair = Pair::with(
        with_timers(
            config(Role::Client, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
            timers,
        ),
        config(Role::Server, DEFAULT_FRAME_LIMIT, DEFAULT_FRAME_LIMIT),
    );
    assert_eq!(pair.a.session.poll_timeout(), None);
    pair.advance(Duration::from_secs(1));
    pair.a.session.handle_timeout(pair.now);
    assert!(pair.a.session.poll_event().is_none());
}

#[test]
fn only_an_idle_connection_is_shed_and_crossing_calls_are_refused_as_not_started() {
    let mut pair = Pair::with_server_timers(Timers {
        drain_grace: 100 * MS,
        ..Timers::default()
    });
    let opened = pair.now;
    assert_eq!(
        pair.b.session.idle_since(),
        Some(opened),
        "idle from the start"
    );
    let id = pair.call(1, None, b"long").unwrap();
    for event in pair.b_reads() {
        if let Event::Request(frame) = event {
            pair.b.session.admit(pair.now, &frame.header, id).unwrap();
        }
    }
    let status = Status::unavailable("making room; the call was not started — make it again");
    assert_eq!(pair.b.session.idle_since(), None, "a call in flight");
    assert!(!pair.b.session.shed(pair.now, &status), "busy: kept");
    assert!(!pair.b.session.is_draining());
    pair.advance(Duration::from_secs(2));
    pair.b.session.finish(pair.now, id);
    assert_eq!(pair.b.session.idle_since(), Some(pair.now));
    assert!(pair.b.session.shed(pair.now, &status));
    assert!(pair.b.session.is_draining());
    assert_eq!(
        pair.b.session.idle_since(),
        None,
        "draining: not idle any more"
    );
    let refused = pair.b.session.admission_closed().unwrap();
    assert_eq!(refused.message(), status.message());
    pair.b.session.refuse_admission(9, false, &refused);
    let mut frames = Vec::new();
    while let Some(t) = pair.b.session.poll_transmit() {
        frames.push(t);
    }
    let Decoded::Frame(goaway) = decode_one(&frames[frames.len() - 2].bytes) else {
        panic!()
    };
    assert_eq!(goaway.header.kind, Kind::GoAway);
    let Decoded::Frame(answer) = decode_one(&frames[frames.len() - 1].bytes) else {
        panic!()
    };
    assert_ne!(answer.header.flags & FLAG_NOT_STARTED, 0);
    assert!(
        !pair.b.session.is_done(pair.now),
        "it lingers for the grace"
    );
    pair.advance(100 * MS);
    assert!(pair.b.session.is_done(pair.now));
}
