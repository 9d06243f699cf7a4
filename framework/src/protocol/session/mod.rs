//! The rules of one connection, sans-IO, for every role: a [`Session`]
//! holds the calls this side made and the calls it serves, and decides what
//! every frame from the peer means and what to send back. It does no I/O
//! and knows no runtime (as quinn-proto's `Connection` knows nothing of
//! quinn's sockets): the runtime driver feeds it decoded frames and the
//! current time, and carries out what it says.
//!
//! # Call order
//!
//! 1. Before a session exists, each side sends its hello
//!    ([`encode::hello_frame`]) and checks the first frame it reads with
//!    [`handshake::check_hello`]; the peer's hello gives the
//!    [`FrameLimits::peer`] a session is made with ([`Session::new`]).
//! 2. For every frame read: [`Session::handle_frame`]. An `Err` is a
//!    protocol violation: give it to [`Session::protocol_error`], which says
//!    GoAway to the peer and stops reading.
//! 3. After anything that changes the session (a frame handled, a call
//!    started, cancelled, answered or refused, a drain), take what it asks
//!    for: [`Session::poll_event`] until `None` (responses for this side's
//!    callers, requests for its handlers, cancels, the peer going away), and
//!    [`Session::poll_transmit`] until `None` (frames to write, in order).
//!    One exception makes streams of small messages cheap: Data frames
//!    (see [`Decoded::is_stream_data`]) may be handled one after another
//!    before the events are taken, and the messages of one stream among
//!    them then come as one [`Event::StreamData`]; take the events before
//!    handling a frame of any other kind.
//! 4. Calls this side makes: [`Session::start_call`] (or
//!    [`Session::allocate_id`] for one-way calls), then
//!    [`FrameLimits::seal_request`] (of [`Session::limits`]); a caller that gives up:
//!    [`Session::abandon`]. Calls it serves: [`Session::admit`] after
//!    routing, then [`Session::finish`] and [`Session::reply`], or
//!    [`Session::refuse`].
//! 5. The end: [`Session::drain`] (no new calls, GoAway sent; done when
//!    [`Session::is_done`]), or [`Session::close`] when the link ended
//!    (every waiting call is handed back to be failed).

pub mod cancel_budget;
pub mod encode;
pub mod handshake;
pub mod limits;
pub mod streams;
pub mod timers;

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use self::cancel_budget::{CancelBudget, CancelRate};
use self::encode::{bare_frame, credit_frame, frame_status, status_frame, status_frame_with};
pub use self::limits::{FrameLimits, LimitKnobs};
use self::streams::{Arrival, Streams, Whose};
pub use self::timers::Timers;
use self::timers::{Clock, Due};
use super::call::{AdmittedCall, ClientCalls, ServerCalls, StartedCall};
use super::compress::{self, CompressionCounters};
use super::frame::{
    BatchMessages, Decoded, FLAG_BATCH, FLAG_CLIENT_STREAM, FLAG_COMPRESSED, FLAG_NOT_STARTED,
    FLAG_SERVER_STREAM, Frame, HEADER_LEN, Header, Kind,
};
use super::hello::Role;
use super::metadata::Metadata;
use super::status::{Code, Status};

/// Which halves of a connection a session plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sides {
    /// This side makes calls: Responses and GoAways from the peer are its.
    pub calls: bool,
    /// This side serves calls: Requests, OneWays and Cancels are its.
    pub serves: bool,
    /// This side serves, and another session on the same link makes this
    /// side's calls: Responses and GoAways are handed out as
    /// [`Event::ForCaller`] for it.
    pub forwards_to_caller: bool,
}

impl Sides {
    /// The sides of a session in `role` that plays every part of it.
    pub fn of(role: Role) -> Self {
        Self {
            calls: role != Role::Server,
            serves: role != Role::Client,
            forwards_to_caller: false,
        }
    }
}

/// What a session is made with.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// This side's role in the hello exchange.
    pub role: Role,
    /// Which halves of the connection this session plays.
    pub sides: Sides,
    /// The frame limits of both ends.
    pub limits: FrameLimits,
    /// Calls this side may have waiting at once.
    pub max_pending: usize,
    /// Calls the peer may have this side handle at once.
    pub max_in_flight: usize,
    /// How fast the peer may cancel calls.
    pub cancel_rate: CancelRate,
    /// Keepalive and idle timers.
    pub timers: Timers,
}

/// What the session tells the runtime to do, in order.
#[derive(Debug)]
pub enum Event<W, H> {
    /// The response to one of this side's calls.
    Response {
        /// What the caller waits on.
        waiter: W,
        /// The Response frame (its status is in the header).
        frame: Frame,
    },
    /// One of this side's calls ended without a usable response (its
    /// response was over this side's frame limit).
    CallFailed {
        /// What the caller waits on.
        waiter: W,
        /// Why.
        status: Status,
    },
    /// The peer is going away: it takes no new calls; calls in flight
    /// finish.
    PeerGoingAway(Status),
    /// A call to serve (Request or OneWay, by `frame.header.kind`): route
    /// it, then [`Session::admit`] it or [`Session::refuse`] it.
    Request(Frame),
    /// The peer cancelled a call being served: stop its handler.
    Cancelled {
        /// The call.
        call_id: u64,
        /// What [`Session::admit`] was given for it.
        handle: H,
    },
    /// Frames for the session that makes this side's calls on the same
    /// link (see [`Sides::forwards_to_caller`]), in order: frames that
    /// arrive one after another, with no other event between them, come
    /// as one event.
    ForCaller(Vec<Decoded>),
    /// The peer did not answer a keepalive Ping in time: it is gone (a cut
    /// cable sends nothing). End the connection; calls in flight fail with
    /// this status.
    PeerSilent(Status),
    /// The connection had no calls for the idle timeout: it drains (a
    /// GoAway went out) and ends once the drain grace has passed.
    Idle(Status),
    /// Messages on a stream: to the reader of this side's call `call_id`
    /// (`ours`) or of the peer's call this side serves. Messages of one
    /// stream that arrive one after another, with no event between them,
    /// come as one event (see [`Session::handle_frame`]).
    StreamData {
        /// The call.
        call_id: u64,
        /// Whose call it is: this side's (`true`) or the peer's.
        ours: bool,
        /// The messages, in order.
        messages: StreamMessages,
    },
    /// The caller of a call this side serves sends no more messages.
    StreamEnd {
        /// The call.
        call_id: u64,
    },
    /// The peer grants `credit` more messages on a stream this side sends
    /// on: this side's call (`ours`) or the peer's call it serves.
    StreamCredit {
        /// The call.
        call_id: u64,
        /// Whose call it is: this side's (`true`) or the peer's.
        ours: bool,
        /// Messages granted.
        credit: u32,
    },
    /// A call this side serves broke its stream's rules (a message after
    /// its half-close, a message over this side's frame limit): its
    /// handler must stop; the caller was sent `status`. Other calls go on.
    StreamFailed {
        /// The call.
        call_id: u64,
        /// What [`Session::admit`] was given for it.
        handle: H,
        /// What the caller was told.
        status: Status,
    },
    /// A stream frame for a call that has no stream (never opened, or
    /// already ended: a frame that crossed the end of its call), dropped.
    Stray {
        /// Its kind.
        kind: Kind,
        /// The call it named.
        call_id: u64,
    },
    /// A frame the session has no use for and dropped (an oversized frame
    /// of a kind that cannot be answered), for the runtime's logs.
    Dropped {
        /// Its kind.
        kind: Kind,
        /// Its body's length.
        len: u64,
    },
}

/// Messages of a stream as they arrived: one Data frame's payload, or a
/// batch of them ([`FLAG_BATCH`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamChunk {
    /// One message.
    One(Bytes),
    /// A checked batch: each message's `u32` length, then its bytes (walk
    /// it with [`BatchMessages`]).
    Batch(Bytes),
}

/// Consecutive messages of one stream, as they arrived, and the bytes
/// their frames took on the wire (for counters).
#[derive(Debug, Default)]
pub struct StreamMessages {
    /// The messages, in order.
    pub chunks: Vec<StreamChunk>,
    /// How many messages the chunks hold.
    pub count: u64,
    /// Bytes of the frames they came in: headers, metadata and payloads.
    pub wire_bytes: u64,
}

impl StreamMessages {
    /// Adds the `count` messages of `frame`.
    fn push(&mut self, frame: Frame, count: u32) {
        self.wire_bytes += (HEADER_LEN + frame.metadata.len() + frame.payload.len()) as u64;
        self.count += u64::from(count);
        self.chunks.push(if frame.header.flags & FLAG_BATCH != 0 {
            StreamChunk::Batch(frame.payload)
        } else {
            StreamChunk::One(frame.payload)
        });
    }

    /// How many messages.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Sets [`FLAG_NOT_STARTED`] in an encoded Response frame.
fn mark_not_started(frame: &mut [u8]) {
    let flags = u16::from_le_bytes([frame[4], frame[5]]) | FLAG_NOT_STARTED;
    frame[4..6].copy_from_slice(&flags.to_le_bytes());
}

/// A frame to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// One whole encoded frame.
    pub bytes: Vec<u8>,
    /// A control frame that may be dropped rather than waited for when the
    /// link is backed up: a peer that reads nothing would not read it
    /// either, and waiting for it must not hold up a drain or a close.
    pub may_drop: bool,
}

/// A successful reply's encoded body, as the runtime built it: `buf` holds
/// [`HEADER_LEN`] reserved bytes and then the body (`metadata_len` bytes of
/// response metadata first), unless the body went into a bulk region of
/// `bulk_len` bytes.
#[derive(Debug)]
pub struct ReplyBody {
    /// Header room, then the body (unless it is bulk).
    pub buf: Vec<u8>,
    /// Bytes of response metadata at the start of the body.
    pub metadata_len: usize,
    /// The body's length when it went into a bulk region.
    pub bulk_len: Option<usize>,
    /// Header flags of the reply (e.g.
    /// [`FLAG_INCOMPRESSIBLE`](super::frame::FLAG_INCOMPRESSIBLE)).
    pub flags: u16,
}

/// A reply ready to write, from [`Session::reply`].
#[derive(Debug)]
pub struct SealedReply {
    /// The code the caller gets.
    pub code: Code,
    /// The frame (or, with `bulk`, its header).
    pub bytes: Vec<u8>,
    /// The body is the bulk region given with the reply; `false` when the
    /// reply became an error status (then the region is not sent).
    pub bulk: bool,
    /// The handler's response metadata was left out: beside the error
    /// status it would pass the peer's frame limit.
    pub metadata_dropped: bool,
}

/// One connection's protocol state: see the [module docs](self) for the
/// order of calls. `W` is what a caller of this side waits on (in the
/// runtime, a one-shot sender); `H` is what stops a handler this side runs.
#[derive(Debug)]
pub struct Session<W, H> {
    config: SessionConfig,
    calls: ClientCalls<W>,
    handlers: ServerCalls<H>,
    cancels: CancelBudget,
    /// Set when the peer said GoAway.
    peer_going_away: Option<Status>,
    /// The highest call id the peer sent this side (its GoAway names it:
    /// calls above it were never seen).
    last_peer_call: u64,
    /// No new calls are admitted (this side said GoAway).
    draining: bool,
    /// Frames are still read (false after a protocol error).
    reading: bool,
    /// Why this side drains, for the calls it refuses meanwhile.
    drain_reason: Option<Status>,
    clock: Clock,
    /// The receiving halves of the streams of calls either way.
    streams: Streams,
    events: VecDeque<Event<W, H>>,
    transmits: VecDeque<Transmit>,
    /// What decompressing received payloads did (and, shared with the
    /// runtime's compressor, what compressing sent ones did).
    compression: Arc<CompressionCounters>,
    /// Whether compressed payloads are taken (this side's hello listed a
    /// codec).
    inflates: bool,
}

impl<W, H> Session<W, H> {
    /// A session whose hellos have been exchanged, at `now`.
    pub fn new(now: Instant, config: SessionConfig) -> Self {
        Self {
            calls: ClientCalls::new(config.max_pending),
            handlers: ServerCalls::with_knob(config.max_in_flight, config.limits.knobs.in_flight),
            cancels: CancelBudget::new(config.cancel_rate, now),
            drain_reason: None,
            clock: Clock::new(config.timers, now),
            streams: Streams::default(),
            config,
            peer_going_away: None,
            last_peer_call: 0,
            draining: false,
            reading: true,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            compression: Arc::default(),
            inflates: true,
        }
    }

    /// Refuses compressed payloads (a protocol error) when `refuse`: for a
    /// side whose compression is off, whose hello lists no codec.
    #[must_use]
    pub fn refusing_compressed_if(mut self, refuse: bool) -> Self {
        self.inflates = !refuse;
        self
    }

    /// Counts decompressed payloads into `counters` (shared with the
    /// connection's compressor and its debug view) instead of its own.
    #[must_use]
    pub fn with_compression_counters(mut self, counters: Arc<CompressionCounters>) -> Self {
        self.compression = counters;
        self
    }

    /// The connection's compression counters: the session counts the
    /// payloads it decompresses; the runtime's
    /// [`FrameCompressor`](compress::FrameCompressor) counts into the same.
    pub fn compression_counters(&self) -> &Arc<CompressionCounters> {
        &self.compression
    }

    /// What the session was made with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The frame limits of both ends.
    pub fn limits(&self) -> FrameLimits {
        self.config.limits
    }

    /// The next thing the runtime must do, if any.
    pub fn poll_event(&mut self) -> Option<Event<W, H>> {
        self.events.pop_front()
    }

    /// The next frame to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Whether nothing waits in [`poll_event`](Self::poll_event) or
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn is_quiet(&self) -> bool {
        self.events.is_empty() && self.transmits.is_empty()
    }

    fn transmit(&mut self, bytes: Vec<u8>, may_drop: bool) {
        self.transmits.push_back(Transmit { bytes, may_drop });
    }

    /// Takes one frame the peer sent. `Err`: the peer broke the protocol
    /// (a second hello, a cancel flood); see [`protocol_error`](Self::protocol_error).
    ///
    /// A Data frame whose message follows one of the same stream, with no
    /// event queued between them, joins that message's
    /// [`Event::StreamData`].
    pub fn handle_frame(&mut self, now: Instant, decoded: Decoded) -> Result<(), Status> {
        self.clock.received(now);
        let frame = match decoded {
            // Decompressed first: nothing after this sees the wire form.
            Decoded::Frame(frame) if frame.header.flags & FLAG_COMPRESSED != 0 => {
                let (kind, call_id) = (frame.header.kind, frame.header.call_id);
                if !self.inflates {
                    return Err(Status::invalid_argument(format!(
                        "the {kind:?} frame of call {call_id}: {}",
                        compress::InflateError::Refused
                    )));
                }
                match compress::inflate(frame, self.config.limits.own, &self.compression) {
                    Ok(Decoded::Frame(frame)) => frame,
                    Ok(Decoded::Oversized(header)) => {
                        self.handle_oversized(header);
                        return Ok(());
                    }
                    Err(err) => {
                        return Err(Status::invalid_argument(format!(
                            "the {kind:?} frame of call {call_id}: {err}"
                        )));
                    }
                }
            }
            Decoded::Frame(frame) => frame,
            Decoded::Oversized(header) => {
                self.handle_oversized(header);
                return Ok(());
            }
        };
        let sides = self.config.sides;
        match frame.header.kind {
            Kind::Request | Kind::OneWay if sides.serves => {
                self.clock.busy(now);
                self.last_peer_call = self.last_peer_call.max(frame.header.call_id);
                self.events.push_back(Event::Request(frame));
            }
            Kind::Request => {
                // A peer that calls a side that serves nothing is told so.
                let status =
                    Status::unimplemented("this process serves nothing on its client connections");
                self.transmit(
                    status_frame(Kind::Response, frame.header.call_id, &status),
                    true,
                );
            }
            Kind::Data | Kind::Credit if frame.header.from_callee() && sides.forwards_to_caller => {
                self.for_caller(Decoded::Frame(frame));
            }
            Kind::Data if frame.header.from_callee() && sides.calls => {
                self.clock.busy(now);
                return self.data_arrived(Whose::Ours, frame);
            }
            Kind::Data if !frame.header.from_callee() && sides.serves => {
                self.clock.busy(now);
                return self.data_arrived(Whose::Theirs, frame);
            }
            Kind::End if sides.serves => {
                let call_id = frame.header.call_id;
                if self.streams.end(call_id) {
                    self.events.push_back(Event::StreamEnd { call_id });
                } else {
                    self.stray(&frame.header);
                }
            }
            Kind::Credit if sides.serves || sides.calls => {
                let whose = if frame.header.from_callee() {
                    Whose::Ours
                } else {
                    Whose::Theirs
                };
                let call_id = frame.header.call_id;
                let ours = whose == Whose::Ours;
                if (ours && !sides.calls) || (!ours && !sides.serves) {
                    self.stray(&frame.header);
                } else if self.streams.contains(whose, call_id) {
                    self.events.push_back(Event::StreamCredit {
                        call_id,
                        ours,
                        credit: frame.header.credit,
                    });
                } else {
                    self.stray(&frame.header);
                }
            }
            Kind::Cancel if sides.serves => {
                // A cancel that stops a running call counts against the
                // flood budget; one for a call already ended costs nothing.
                // (Callers send none when a deadline ends a call: this
                // side's own timer ends it too.)
                if let Some(handle) = self.handlers.cancel(frame.header.call_id) {
                    self.streams.close(Whose::Theirs, frame.header.call_id);
                    self.cancels.take(now).map_err(Status::resource_exhausted)?;
                    self.events.push_back(Event::Cancelled {
                        call_id: frame.header.call_id,
                        handle,
                    });
                }
            }
            Kind::Ping => {
                self.transmit(bare_frame(Kind::Pong, frame.header.call_id), !sides.serves);
            }
            Kind::Hello if sides.serves => {
                return Err(Status::invalid_argument("a second hello on one connection"));
            }
            Kind::Response | Kind::GoAway if sides.forwards_to_caller => {
                self.for_caller(Decoded::Frame(frame));
            }
            Kind::Response if sides.calls => {
                self.clock.busy(now);
                self.streams.close(Whose::Ours, frame.header.call_id);
                if let Some(waiter) = self.calls.complete(frame.header.call_id) {
                    self.events.push_back(Event::Response { waiter, frame });
                }
            }
            Kind::GoAway if sides.calls => {
                let status = frame_status(&frame);
                self.peer_going_away = Some(status.clone());
                self.events.push_back(Event::PeerGoingAway(status.clone()));
                if frame.header.flags & FLAG_NOT_STARTED != 0 {
                    self.never_seen_above(frame.header.call_id, &status);
                }
            }
            // A caller-only side ignores cancels and hellos; Pongs answer
            // nothing this side waits for; a side that makes no calls
            // ignores responses.
            _ => {}
        }
        Ok(())
    }

    fn handle_oversized(&mut self, header: Header) {
        let sides = self.config.sides;
        let len = header.body_len();
        match header.kind {
            Kind::Request if sides.serves => {
                let status = self.config.limits.request_received_too_large(len);
                self.transmit(status_frame(Kind::Response, header.call_id, &status), false);
            }
            Kind::Response if sides.forwards_to_caller => {
                self.for_caller(Decoded::Oversized(header));
            }
            Kind::Response if sides.calls => {
                self.streams.close(Whose::Ours, header.call_id);
                if let Some(waiter) = self.calls.complete(header.call_id) {
                    let status = self.config.limits.response_received_too_large(len);
                    self.events.push_back(Event::CallFailed { waiter, status });
                }
            }
            Kind::Data if header.from_callee() && sides.forwards_to_caller => {
                self.for_caller(Decoded::Oversized(header));
            }
            // A message lost to the limit ends its stream, not the
            // connection: the call fails with why, and the peer is told.
            Kind::Data if header.from_callee() && sides.calls => {
                self.streams.close(Whose::Ours, header.call_id);
                if let Some(waiter) = self.calls.complete(header.call_id) {
                    let status = self.config.limits.response_received_too_large(len);
                    self.transmit(status_frame(Kind::Cancel, header.call_id, &status), true);
                    self.events.push_back(Event::CallFailed { waiter, status });
                }
            }
            Kind::Data if !header.from_callee() && sides.serves => {
                let status = self.config.limits.request_received_too_large(len);
                self.fail_stream(header.call_id, status);
            }
            kind => self.events.push_back(Event::Dropped { kind, len }),
        }
    }

    /// A Data frame arrived on a stream of `whose` call.
    fn data_arrived(&mut self, whose: Whose, frame: Frame) -> Result<(), Status> {
        let call_id = frame.header.call_id;
        let count = if frame.header.flags & FLAG_BATCH != 0 {
            let count = frame.header.credit;
            BatchMessages::check(&frame.payload, count).map_err(|err| {
                Status::invalid_argument(format!(
                    "a malformed batch of stream messages on call {call_id}: {err} (is the \
                     peer's switchyard implementation correct?)"
                ))
            })?;
            count
        } else {
            1
        };
        match self.streams.arrive(whose, call_id) {
            Arrival::Accepted => {
                let ours = whose == Whose::Ours;
                // The run the last message began, if nothing came between.
                if let Some(Event::StreamData {
                    call_id: last,
                    ours: last_ours,
                    messages,
                }) = self.events.back_mut()
                    && *last == call_id
                    && *last_ours == ours
                {
                    messages.push(frame, count);
                } else {
                    let mut messages = StreamMessages::default();
                    messages.push(frame, count);
                    self.events.push_back(Event::StreamData {
                        call_id,
                        ours,
                        messages,
                    });
                }
            }
            Arrival::Unknown => self.stray(&frame.header),
            Arrival::OverCredit => {
                return Err(Status::resource_exhausted(format!(
                    "flow-control violation: the peer sent a stream frame on call {call_id} \
                     beyond the credit this side granted; a sender must wait for Credit frames \
                     (is the peer's switchyard implementation correct?)"
                )));
            }
            Arrival::AfterEnd => match whose {
                Whose::Theirs => {
                    let status = Status::invalid_argument(format!(
                        "call {call_id}: a stream message came after the caller half-closed \
                         its stream (or on a call that takes no stream); this call ends, the \
                         connection's other calls go on"
                    ));
                    self.fail_stream(call_id, status);
                }
                // The callee's stream ends only with its Response, which
                // closes it: a message after that is stray.
                Whose::Ours => self.stray(&frame.header),
            },
        }
        Ok(())
    }

    /// Ends the peer's call `call_id` for breaking its stream's rules:
    /// answers it with `status` and stops its handler.
    fn fail_stream(&mut self, call_id: u64, status: Status) {
        self.streams.close(Whose::Theirs, call_id);
        if let Some(handle) = self.handlers.cancel(call_id) {
            self.transmit(status_frame(Kind::Response, call_id, &status), false);
            self.events.push_back(Event::StreamFailed {
                call_id,
                handle,
                status,
            });
        }
    }

    /// Hands `decoded` to the caller's session: joins the frames just
    /// handed over, if nothing came between.
    fn for_caller(&mut self, decoded: Decoded) {
        if let Some(Event::ForCaller(frames)) = self.events.back_mut() {
            frames.push(decoded);
        } else {
            self.events.push_back(Event::ForCaller(vec![decoded]));
        }
    }

    fn stray(&mut self, header: &Header) {
        self.events.push_back(Event::Stray {
            kind: header.kind,
            call_id: header.call_id,
        });
    }

    // ----- streams, either way -----

    /// Grants the peer `credit` more messages on the stream of `call_id`
    /// (this side's call when `ours`): queues the Credit frame. `false`
    /// when the stream has ended (nothing is sent).
    pub fn grant(&mut self, ours: bool, call_id: u64, credit: u32) -> bool {
        let whose = if ours { Whose::Ours } else { Whose::Theirs };
        if credit == 0 || !self.streams.grant(whose, call_id, credit) {
            return false;
        }
        self.transmit(credit_frame(call_id, !ours, credit), false);
        true
    }

    /// Streams open: of this side's calls, and of the peer's calls it
    /// serves.
    pub fn open_streams(&self) -> (usize, usize) {
        self.streams.len()
    }

    /// The waiter of this side's call `call_id`, while it waits.
    pub fn waiter(&self, call_id: u64) -> Option<&W> {
        self.calls.get(call_id)
    }

    /// The handles of the peer's calls being served.
    pub fn handlers(&self) -> impl Iterator<Item = &H> {
        self.handlers.iter()
    }

    /// The handle of the peer's call `call_id`, while it is served.
    pub fn handler(&self, call_id: u64) -> Option<&H> {
        self.handlers.get(call_id)
    }

    // ----- the calls this side makes -----

    /// Registers a call that expects a response, to be sent with the
    /// returned id and deadline budget. Fails without registering when the
    /// session was closed (with its status: no response could come), the
    /// deadline has passed (DeadlineExceeded) or too many calls wait
    /// (ResourceExhausted); the waiter is handed back.
    pub fn start_call(
        &mut self,
        now: Instant,
        deadline: Option<Instant>,
        what: &str,
        waiter: W,
    ) -> Result<StartedCall, (Status, W)> {
        self.clock.busy(now);
        self.calls.start(now, deadline, what, waiter)
    }

    /// [`start_call`](Self::start_call) for a streaming call: `flags` says
    /// which ways it streams ([`FLAG_CLIENT_STREAM`], [`FLAG_SERVER_STREAM`]);
    /// the callee may send `window` messages before it is granted more
    /// (put it in the request's `credit`).
    pub fn start_stream_call(
        &mut self,
        now: Instant,
        deadline: Option<Instant>,
        what: &str,
        waiter: W,
        flags: u16,
        window: u32,
    ) -> Result<StartedCall, (Status, W)> {
        let started = self.start_call(now, deadline, what, waiter)?;
        let receives = flags & FLAG_SERVER_STREAM != 0;
        self.streams.open(
            Whose::Ours,
            started.call_id,
            if receives { window } else { 0 },
            receives,
        );
        Ok(started)
    }

    /// A fresh call id for a call that expects no response (one-way).
    pub fn allocate_id(&mut self) -> u64 {
        self.calls.allocate_id()
    }

    /// Forgets a call whose caller gave up. Returns the Cancel frame to
    /// send when the call was still waiting and `tell_peer` (not when the
    /// deadline ended it: the peer's timer ends it too).
    pub fn abandon(&mut self, call_id: u64, tell_peer: bool) -> Option<Vec<u8>> {
        self.streams.close(Whose::Ours, call_id);
        let abandoned = self.calls.abandon(call_id);
        (abandoned && tell_peer).then(|| {
            let status = Status::cancelled("the caller dropped the call");
            status_frame(Kind::Cancel, call_id, &status)
        })
    }

    /// Closes the calling side: every later [`start_call`](Self::start_call)
    /// fails with `status` (the first one given is kept), and every waiting
    /// call is handed back, to be failed with it.
    pub fn close(&mut self, status: Status) -> impl Iterator<Item = W> + '_ {
        self.streams.close_ours();
        self.calls.close(status)
    }

    /// Why the session was closed, if it was.
    pub fn closed(&self) -> Option<&Status> {
        self.calls.closed()
    }

    /// What the peer said when it announced it is going away, if it did.
    pub fn peer_going_away(&self) -> Option<&Status> {
        self.peer_going_away.as_ref()
    }

    /// Calls of this side waiting for a response.
    pub fn waiting_calls(&self) -> usize {
        self.calls.len()
    }

    // ----- the calls this side serves -----

    /// Why no new call may start on this side, if none may: it is
    /// draining. Refuse the call with it through
    /// [`refuse_admission`](Self::refuse_admission).
    pub fn admission_closed(&self) -> Option<Status> {
        self.draining.then(|| {
            self.drain_reason.clone().unwrap_or_else(|| {
                Status::unavailable(
                    "the server is shutting down; retry on another instance or after it restarts",
                )
            })
        })
    }

    /// Admits a routed request, with `handle` to stop its handler. An `Err`
    /// (too many calls in flight, a reused call id) is the status to
    /// [`refuse`](Self::refuse) it with.
    pub fn admit(
        &mut self,
        now: Instant,
        header: &Header,
        handle: H,
    ) -> Result<AdmittedCall, Status> {
        let admitted = self.handlers.admit(now, header, handle)?;
        if header.kind == Kind::Request
            && header.flags & (FLAG_CLIENT_STREAM | FLAG_SERVER_STREAM) != 0
        {
            // The caller's messages wait for this side's first grant.
            let receives = header.flags & FLAG_CLIENT_STREAM != 0;
            self.streams
                .open(Whose::Theirs, header.call_id, 0, receives);
        }
        Ok(admitted)
    }

    /// Answers a call that was not started with `status` (nothing for a
    /// one-way call); returns the bytes queued.
    pub fn refuse(&mut self, call_id: u64, oneway: bool, status: &Status) -> usize {
        if oneway {
            return 0;
        }
        let frame = status_frame(Kind::Response, call_id, status);
        let len = frame.len();
        self.transmit(frame, false);
        len
    }

    /// Answers a call refused because this side drains
    /// ([`admission_closed`](Self::admission_closed)); returns the bytes
    /// queued. When it drains an idle connection, the answer is marked as
    /// never started ([`FLAG_NOT_STARTED`]): the caller makes the call again
    /// on a new connection.
    pub fn refuse_admission(&mut self, call_id: u64, oneway: bool, status: &Status) -> usize {
        if oneway {
            return 0;
        }
        let mut frame = status_frame(Kind::Response, call_id, status);
        if self.drain_reason.is_some() {
            mark_not_started(&mut frame);
        }
        let len = frame.len();
        self.transmit(frame, false);
        len
    }

    /// Takes a finished call out of the table at `now`: its handle, or
    /// `None` if it was cancelled meanwhile (then send nothing).
    pub fn finish(&mut self, now: Instant, call_id: u64) -> Option<H> {
        self.clock.busy(now);
        self.streams.close(Whose::Theirs, call_id);
        self.handlers.finish(call_id)
    }

    /// Encodes the reply to a [`finish`](Self::finish)ed call: the body,
    /// or the handler's error with its response `metadata` (gRPC's
    /// trailers). A body over the peer's limit becomes ResourceExhausted;
    /// metadata that would pass it beside an error is left out (the status
    /// matters more); a handler's `Err` with code OK becomes Unknown (it
    /// would read as a success with no body).
    pub fn reply(
        &self,
        call_id: u64,
        result: Result<ReplyBody, Status>,
        metadata: &Metadata,
    ) -> SealedReply {
        let limits = self.config.limits;
        let peer_limit = limits.peer as usize;
        let result = result.map_err(|status| {
            if status.code() == Code::Ok {
                Status::unknown(format!(
                    "the handler failed with the code OK, which is not a failure: {}",
                    status.message()
                ))
            } else {
                status
            }
        });
        match result {
            Ok(ReplyBody {
                mut buf,
                metadata_len,
                bulk_len,
                flags,
            }) => {
                let body = buf.len() - HEADER_LEN + bulk_len.unwrap_or(0);
                if body > peer_limit {
                    let status = limits.reply_too_large(body);
                    return SealedReply {
                        code: status.code(),
                        bytes: status_frame(Kind::Response, call_id, &status),
                        bulk: false,
                        metadata_dropped: false,
                    };
                }
                encode::seal_reply(&mut buf, call_id, flags, metadata_len, body);
                SealedReply {
                    code: Code::Ok,
                    bytes: buf,
                    bulk: bulk_len.is_some(),
                    metadata_dropped: false,
                }
            }
            Err(status) => {
                let mut bytes = status_frame_with(Kind::Response, call_id, &status, metadata);
                let metadata_dropped =
                    bytes.len() - HEADER_LEN > peer_limit && !metadata.is_empty();
                if metadata_dropped {
                    bytes = status_frame(Kind::Response, call_id, &status);
                }
                SealedReply {
                    code: status.code(),
                    bytes,
                    bulk: false,
                    metadata_dropped,
                }
            }
        }
    }

    /// Starts draining (once; `true` the first time): no new calls are
    /// admitted and the peer is told with a GoAway carrying `status` and
    /// the last call id this side saw ([`FLAG_NOT_STARTED`] set: the peer's
    /// calls above it were never seen, and are made again elsewhere).
    pub fn drain(&mut self, status: &Status) -> bool {
        if self.draining {
            return false;
        }
        self.draining = true;
        let mut frame = status_frame(Kind::GoAway, self.last_peer_call, status);
        mark_not_started(&mut frame);
        self.transmit(frame, true);
        true
    }

    /// The peer drains and never saw this side's calls above `last`: each
    /// is answered as never started (UNAVAILABLE with
    /// [`FLAG_NOT_STARTED`]), so its caller makes it again on another
    /// connection, as gRPC does with the streams above an HTTP/2 GOAWAY's
    /// last stream id.
    fn never_seen_above(&mut self, last: u64, going: &Status) {
        let status = Status::unavailable(format!(
            "the server drained before it saw this call ({}); it was never started",
            going.message()
        ));
        for (call_id, waiter) in self.calls.take_above(last) {
            self.streams.close(Whose::Ours, call_id);
            let mut header = Header::new(Kind::Response, call_id);
            header.status = status.code().as_u16();
            header.flags |= FLAG_NOT_STARTED;
            let frame = Frame::new(
                header,
                Bytes::new(),
                Bytes::copy_from_slice(status.message().as_bytes()),
            );
            self.events.push_back(Event::Response { waiter, frame });
        }
    }

    /// The peer broke the protocol: tell it why (GoAway), read nothing
    /// more, and let the calls in flight finish.
    pub fn protocol_error(&mut self, status: &Status) {
        self.transmit(status_frame(Kind::GoAway, 0, status), true);
        self.reading = false;
        self.draining = true;
    }

    /// Whether frames are still read (not after a protocol error).
    pub fn is_reading(&self) -> bool {
        self.reading
    }

    /// Whether this side is draining.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Calls being served.
    pub fn serving_calls(&self) -> usize {
        self.handlers.len()
    }

    /// Whether a draining session has nothing left to serve at `now` (and
    /// no drain grace left to wait out).
    pub fn is_done(&self, now: Instant) -> bool {
        self.draining && self.handlers.is_empty() && !self.clock.lingering(now)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clock.next(self.idle_applies())
    }

    /// Runs the clocks at `now`: sends a keepalive Ping, declares a silent
    /// peer gone ([`Event::PeerSilent`]), or drains an idle connection
    /// ([`Event::Idle`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.clock.due(now, self.idle_applies()) {
            Due::Nothing => {}
            Due::Ping(id) => self.transmit(bare_frame(Kind::Ping, id), true),
            Due::PeerSilent(silent) => {
                let status = Status::unavailable(format!(
                    "the peer sent nothing for {silent:?} and did not answer a keepalive ping \
                     within {:?}; the connection is taken as dead (a cut link sends no FIN) — \
                     calls on it fail, calls made now reconnect",
                    self.config.timers.keepalive_timeout
                ));
                self.reading = false;
                self.draining = true;
                self.events.push_back(Event::PeerSilent(status));
            }
            Due::Idle(idle) => {
                let status = Status::unavailable(format!(
                    "this connection had no calls for {idle:?} and is closing; the call was not \
                     started — make it again (a new connection is opened)"
                ));
                self.let_go(now, &status);
                self.events.push_back(Event::Idle(status));
            }
        }
    }

    /// Since when this connection has been idle (a serving side with no
    /// calls in flight either way, not draining), if it is.
    pub fn idle_since(&self) -> Option<Instant> {
        self.idle_applies().then(|| self.clock.idle_since())
    }

    /// Lets an idle connection go at `now` (its server must make room),
    /// as the idle timeout does: a GoAway carrying `status`, and a call
    /// that crosses it is refused as never started. `false` when it is not
    /// idle (then nothing changes).
    pub fn shed(&mut self, now: Instant, status: &Status) -> bool {
        if !self.idle_applies() {
            return false;
        }
        self.let_go(now, status);
        true
    }

    fn let_go(&mut self, now: Instant, status: &Status) {
        self.drain(status);
        self.drain_reason = Some(status.clone());
        self.clock.linger(now);
    }

    /// Whether the idle timeout applies now: a serving side with no calls
    /// in flight either way, not draining yet.
    fn idle_applies(&self) -> bool {
        self.config.sides.serves
            && !self.draining
            && self.handlers.is_empty()
            && self.calls.is_empty()
    }
}
