//! Streams between two real [`Session`]s on a virtual clock: credit, the
//! half-close, trailers, and every way a peer can break a stream's rules.

use bytes::Bytes;

use super::encode::{RequestHead, credit_frame, data_header, end_frame, seal_batch};
use super::tests::{Pair, Stop, Tag};
use super::*;
use crate::protocol::frame::{BatchMessages, FLAG_CLIENT_STREAM, FLAG_SERVER_STREAM, start_frame};

/// `a` starts a streaming call with `flags` and a receive window of
/// `window`, and sends its request to `b`; `b` admits it. The call id.
fn open(pair: &mut Pair, flags: u16, window: u32) -> u64 {
    let started = pair
        .a
        .session
        .start_stream_call(pair.now, None, "Files.chat", 1 as Tag, flags, window)
        .map_err(|(status, _)| status)
        .unwrap();
    let mut wire = Vec::new();
    start_frame(&mut wire);
    let head = RequestHead {
        kind: Kind::Request,
        call_id: started.call_id,
        method_id: 7,
        deadline_us: 0,
        flags,
        credit: if flags & FLAG_SERVER_STREAM != 0 {
            window
        } else {
            0
        },
    };
    pair.a
        .session
        .limits()
        .seal_request(&mut wire, head, 0, "Files.chat")
        .unwrap();
    pair.b.inbox.extend_from_slice(&wire);
    let events = pair.b_reads();
    let [Event::Request(frame)] = &events[..] else {
        panic!("one request: {events:?}");
    };
    assert_eq!(frame.header.flags, flags);
    assert_eq!(frame.header.credit, head.credit);
    pair.b
        .session
        .admit(pair.now, &frame.header, started.call_id as Stop)
        .unwrap();
    started.call_id
}

/// A Data frame of `payload` on `call_id`.
fn data(call_id: u64, from_callee: bool, payload: &[u8]) -> Vec<u8> {
    let mut wire = vec![0; HEADER_LEN];
    data_header(call_id, from_callee, payload.len()).write_to(&mut wire);
    wire.extend_from_slice(payload);
    wire
}

#[test]
fn a_client_stream_waits_for_the_callees_grant_and_ends_with_a_half_close() {
    let mut pair = Pair::client_server();
    let id = open(&mut pair, FLAG_CLIENT_STREAM, 0);
    assert!(pair.b.session.grant(false, id, 2));
    pair.flush();
    let events = pair.a_reads();
    assert!(
        matches!(events[..], [Event::StreamCredit { call_id, ours: true, credit: 2 }] if call_id == id),
        "{events:?}"
    );
    pair.b.inbox.extend_from_slice(&data(id, false, b"one"));
    pair.b.inbox.extend_from_slice(&data(id, false, b"two"));
    pair.b.inbox.extend_from_slice(&end_frame(id));
    let events = pair.b_reads();
    let chunks: Vec<StreamChunk> = events
        .iter()
        .filter_map(|event| match event {
            Event::StreamData {
                messages,
                ours: false,
                ..
            } => Some(messages.chunks.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        chunks,
        [
            StreamChunk::One(Bytes::from("one")),
            StreamChunk::One(Bytes::from("two"))
        ]
    );
    assert!(matches!(events.last(), Some(Event::StreamEnd { call_id }) if *call_id == id));
    assert_eq!(pair.b.session.open_streams(), (0, 1));
    // The reply ends the call and its stream.
    assert_eq!(pair.b.session.finish(pair.now, id), Some(id));
    assert_eq!(pair.b.session.open_streams(), (0, 0));
}

#[test]
fn a_message_beyond_the_credit_closes_the_connection_with_a_goaway_naming_it() {
    let mut pair = Pair::client_server();
    let id = open(&mut pair, FLAG_CLIENT_STREAM, 0);
    assert!(pair.b.session.grant(false, id, 1));
    pair.flush();
    pair.a_reads();
    pair.b.inbox.extend_from_slice(&data(id, false, b"ok"));
    pair.b
        .inbox
        .extend_from_slice(&data(id, false, b"one too many"));
    let events = pair.b_reads();
    assert!(
        matches!(events[..], [Event::StreamData { .. }]),
        "{events:?}"
    );
    assert!(!pair.b.session.is_reading(), "a violator is read no more");
    pair.flush();
    let events = pair.a_reads();
    let Some(Event::PeerGoingAway(status)) = events.first() else {
        panic!("a GoAway: {events:?}");
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("flow-control violation"),
        "{status}"
    );
    assert!(status.message().contains(&format!("call {id}")), "{status}");
}

/// A batch of `messages` on `call_id` whose header counts `count`.
fn batch(call_id: u64, messages: &[&[u8]], count: u32) -> Vec<u8> {
    let mut wire = vec![0; HEADER_LEN];
    for message in messages {
        wire.extend_from_slice(&(message.len() as u32).to_le_bytes());
        wire.extend_from_slice(message);
    }
    seal_batch(&mut wire, call_id, false, 0, count);
    wire
}

#[test]
fn a_batch_is_the_bytes_wire_protocol_md_shows() {
    // docs/wire-protocol.md §6.7.1a: `hi` and `abc` of call 3 from the callee.
    let mut wire = vec![0; HEADER_LEN];
    wire.extend_from_slice(b"\x02\0\0\0hi\x03\0\0\0abc");
    seal_batch(&mut wire, 3, true, 0, 2);
    let doc = "53 59 01 09 84 00 00 00 03 00 00 00 00 00 00 00 \
               00 00 00 00 00 00 00 00 0d 00 00 00 02 00 00 00 \
               00 00 00 00 00 00 00 00 \
               02 00 00 00 68 69 03 00 00 00 61 62 63";
    let doc: Vec<u8> = doc
        .split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).unwrap())
        .collect();
    assert_eq!(wire, doc);
}

#[test]
fn a_batch_spends_one_credit_and_arrives_as_one_chunk() {
    let mut pair = Pair::client_server();
    let id = open(&mut pair, FLAG_CLIENT_STREAM, 0);
    // Credit counts frames: a batch of three and a message are two.
    assert!(pair.b.session.grant(false, id, 2));
    pair.b
        .inbox
        .extend_from_slice(&batch(id, &[b"one", b"", b"three"], 3));
    pair.b.inbox.extend_from_slice(&data(id, false, b"four"));
    let events = pair.b_reads();
    let [
        Event::StreamData {
            messages,
            ours: false,
            ..
        },
    ] = &events[..]
    else {
        panic!("one run: {events:?}");
    };
    assert_eq!(messages.len(), 4);
    let [StreamChunk::Batch(first), StreamChunk::One(last)] = &messages.chunks[..] else {
        panic!("a batch, then a message: {messages:?}");
    };
    let read: Vec<&[u8]> = BatchMessages::new(first, 0)
        .map(|range| &first[range])
        .collect();
    assert_eq!(read, [&b"one"[..], b"", b"three"]);
    assert_eq!(last, &Bytes::from("four"));
    // The credit is spent: one more batch is a frame too many.
    pair.b.inbox.extend_from_slice(&batch(id, &[b"5", b"6"], 2));
    assert!(pair.b_reads().is_empty());
    assert!(!pair.b.session.is_reading(), "a violator is read no more");
}

#[test]
fn a_malformed_batch_closes_the_connection_with_a_goaway_naming_it() {
    for (messages, count) in [
        (&[&b"one"[..], b"two"][..], 3),
        (&[&b"one"[..], b"two"][..], 1),
        (&[][..], 0),
    ] {
        let mut pair = Pair::client_server();
        let id = open(&mut pair, FLAG_CLIENT_STREAM, 0);
        assert!(pair.b.session.grant(false, id, 8));
        pair.b.inbox.extend_from_slice(&batch(id, messages, count));
        assert!(pair.b_reads().is_empty());
        assert!(!pair.b.session.is_reading());
        pair.flush();
        let events = pair.a_reads();
        let Some(Event::PeerGoingAway(status)) = events
            .iter()
            .find(|event| matches!(event, Event::PeerGoingAway(_)))
        else {
            panic!("a GoAway: {events:?}");
        };
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("malformed batch"), "{status}");
        assert!(status.message().contains(&format!("call {id}")), "{status}");
    }
}

#[test]
fn a_message_after_the_half_close_ends_that_call_only() {
    let mut pair = Pair::client_server();
    let id = open(&mut pair, FLAG_CLIENT_STREAM, 0);
    let other = open(&mut pair, FLAG_CLIENT_STREAM, 0);
    assert!(pair.b.session.grant(false, id, 4));
    pair.b.inbox.extend_from_slice(&end_frame(id));
    pair.b.inbox.extend_from_slice(&data(id, false, b"late"));
    let events = pair.b_reads();
    let failed = events.iter().find_map(|event| match event {
        Event::StreamFailed {
            call_id,
            handle,
            status,
        } => Some((*call_id, *handle, status.clone())),
        _ => None,
    });
    let (call_id, handle, status) = failed.expect("the stream failed");
    assert_eq!((call_id, handle), (id, id as Stop));
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("half-closed"), "{status}");
    assert!(pair.b.session.is_reading(), "the connection goes on");
    assert_eq!(pair.b.session.serving_calls(), 1, "the other call runs on");
    assert!(pair.b.session.handler(other).is_some());
    pair.flush();
    let responses = pair.a_responses();
    assert_eq!(responses.len(), 1);
    assert_eq!((responses[0].0, responses[0].1), (1, Code::InvalidArgument));
}

#[test]
fn stream_frames_for_unknown_or_finished_calls_are_dropped_as_strays() {
    let mut pair = Pair::client_server();
    let id = open(&mut pair, FLAG_CLIENT_STREAM | FLAG_SERVER_STREAM, 4);
    assert_eq!(pair.b.session.finish(pair.now, id), Some(id));
    for wire in [
        data(id, false, b"after the end"),
        data(9_999, false, b"never opened"),
        end_frame(9_999),
        credit_frame(9_999, false, 5),
    ] {
        pair.b.inbox.extend_from_slice(&wire);
    }
    let events = pair.b_reads();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events
            .iter()
            .all(|event| matches!(event, Event::Stray { .. })),
        "{events:?}"
    );
    assert!(pair.b.session.is_reading());
    // The caller side drops the callee's strays too.
    pair.a.inbox.extend_from_slice(&data(4_242, true, b"?"));
    pair.a
        .inbox
        .extend_from_slice(&credit_frame(4_242, true, 1));
    let events = pair.a_reads();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|event| matches!(event, Event::Stray { .. })),
        "{events:?}"
    );
}

#[test]
fn a_server_stream_spends_the_callers_window_and_ends_with_trailers() {
    let mut pair = Pair::client_server();
    let id = open(&mut pair, FLAG_SERVER_STREAM, 2);
    pair.a.inbox.extend_from_slice(&data(id, true, b"1"));
    pair.a.inbox.extend_from_slice(&data(id, true, b"2"));
    let events = pair.a_reads();
    // Both messages, as one run.
    let messages: u64 = events
        .iter()
        .map(|event| match event {
            Event::StreamData { messages, .. } => messages.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(messages, 2, "{events:?}");
    // A third before the caller grants more is a violation.
    pair.a.inbox.extend_from_slice(&data(id, true, b"3"));
    let decoded = pair.a.decoded();
    let violation = pair
        .a
        .session
        .handle_frame(pair.now, decoded.into_iter().next().unwrap());
    assert_eq!(violation.unwrap_err().code(), Code::ResourceExhausted);
    // Granting lets more through; the caller's grant names the callee.
    let mut pair = Pair::client_server();
    let id = open(&mut pair, FLAG_SERVER_STREAM, 1);
    assert!(pair.a.session.grant(true, id, 3));
    pair.flush();
    let events = pair.b_reads();
    assert!(
        matches!(events[..], [Event::StreamCredit { call_id, ours: false, credit: 3 }] if call_id == id),
        "{events:?}"
    );
    // The Response with metadata is the end: it closes the stream.
    let mut trailers = Metadata::new();
    trailers.insert("done", "yes").unwrap();
    assert_eq!(pair.b.session.finish(pair.now, id), Some(id));
    let sealed = pair
        .b
        .session
        .reply(id, Err(Status::aborted("stopped early")), &trailers);
    pair.a.inbox.extend_from_slice(&sealed.bytes);
    let events = pair.a_reads();
    let [Event::Response { frame, .. }] = &events[..] else {
        panic!("{events:?}");
    };
    assert_eq!(Code::from_u16(frame.header.status), Code::Aborted);
    assert_eq!(
        Metadata::decode(&frame.metadata).unwrap().get_str("done"),
        Some("yes")
    );
    assert_eq!(pair.a.session.open_streams(), (0, 0));
}

#[test]
fn a_stream_beyond_the_concurrent_limit_is_refused_with_resource_exhausted() {
    let mut pair = Pair::client_server();
    // The test server takes 8 calls at once; streams are calls.
    for _ in 0..8 {
        open(&mut pair, FLAG_SERVER_STREAM, 4);
    }
    let started = pair
        .a
        .session
        .start_stream_call(pair.now, None, "Files.tail", 9, FLAG_SERVER_STREAM, 4)
        .map_err(|(status, _)| status)
        .unwrap();
    let mut header = Header::new(Kind::Request, started.call_id);
    header.flags = FLAG_SERVER_STREAM;
    let refused = pair
        .b
        .session
        .admit(pair.now, &header, started.call_id as Stop)
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("max_in_flight"), "{refused}");
    assert_eq!(pair.b.session.open_streams(), (0, 8));
}
