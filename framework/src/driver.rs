//! The one runtime driver: it pumps a link's receiving half into a
//! [`Session`] and carries out what the session says, for every kind of
//! connection. A server connection serves requests (handlers run inside
//! the driver's task, no hand-off on the hot path); a client connection
//! hands responses to its caller side; a peer link (a pipe between a parent
//! and its child) does both. Frames go out through the connection's
//! [`Outbound`], whose writer task the driver outlives.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{oneshot, watch};

use crate::protocol::frame::{Decoded, Frame};
use crate::protocol::session::{Event, Session, StreamMessages};
use crate::protocol::status::Status;
use crate::session::{CallerSide, Outbound, Outgoing};
use crate::streaming::Grants;
use crate::transport::{LinkError, LinkRx};

/// Where a server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Taking calls.
    Serving,
    /// Finishing the calls in flight; new ones go elsewhere.
    Draining,
    /// Stopped: calls still running are cancelled.
    Stopped,
}

/// Why [`Driver::run`] returned.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed the link.
    PeerClosed,
    /// The peer broke the protocol or the link failed.
    Failed(String),
    /// Writing to the link failed (the writer task says how).
    WriteFailed(String),
    /// The server stopped, or the connection was dropped.
    Stopped,
}

/// Where a server connection tells whether it is idle, and since when
/// (its server picks the longest idle when it must make room).
#[derive(Debug)]
pub(crate) struct IdleMark {
    epoch: Instant,
    /// Nanoseconds since `epoch` plus one when idle; 0 when not.
    since: AtomicU64,
}

impl IdleMark {
    /// A mark that says "not idle" (the handshake is not done yet).
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            since: AtomicU64::new(0),
        }
    }

    pub(crate) fn set(&self, since: Option<Instant>) {
        let value = since.map_or(0, |at| {
            u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
                .unwrap_or(u64::MAX - 1)
                + 1
        });
        if self.since.load(Ordering::Relaxed) != value {
            self.since.store(value, Ordering::Relaxed);
        }
    }

    /// Since when the connection has been idle, if it is.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }
}

/// A server connection's place among its server's connections: it tells
/// whether it is idle, and the server may ask it to go to make room.
#[derive(Debug)]
pub(crate) struct Tenancy {
    /// Where the driver marks idleness.
    pub(crate) idle: Arc<IdleMark>,
    /// Fires with the reason when the server asks an idle connection to go.
    pub(crate) evict: oneshot::Receiver<Status>,
}

/// A handler's future.
pub(crate) type HandlerFuture<O> = Pin<Box<dyn Future<Output = O> + Send>>;

/// The serving side of a connection, as the driver sees it.
pub(crate) trait Serve: Send {
    /// What stops one running handler.
    type Handle: Send;
    /// What a handler's future ends with.
    type Outcome: Send + 'static;

    /// A request the session handed out at `now`: its handler's future,
    /// or `None` when it was refused (through `session`) instead.
    fn start(
        &mut self,
        now: Instant,
        session: &mut Session<Infallible, Self::Handle>,
        frame: Frame,
    ) -> Option<HandlerFuture<Self::Outcome>>;

    /// The peer cancelled a call: stop its handler.
    fn cancelled(&mut self, handle: Self::Handle);

    /// A handler finished: the reply to send, if any.
    fn finished(
        &mut self,
        session: &mut Session<Infallible, Self::Handle>,
        outcome: Self::Outcome,
    ) -> Option<Outgoing>;

    /// Notes what happened to the connection (for the debug views).
    fn event(&self, what: &'static str, detail: String);

    /// Notes that the connection drains.
    fn draining(&self);

    /// Messages on the stream of call `call_id`, which the session
    /// accepted (within the credit granted).
    fn stream_data(
        &mut self,
        _session: &Session<Infallible, Self::Handle>,
        _call_id: u64,
        _messages: StreamMessages,
    ) {
    }

    /// The caller of `call_id` half-closed its stream.
    fn stream_end(&mut self, _session: &Session<Infallible, Self::Handle>, _call_id: u64) {}

    /// The caller of `call_id` granted `credit` more messages.
    fn stream_credit(
        &mut self,
        _session: &Session<Infallible, Self::Handle>,
        _call_id: u64,
        _credit: u32,
    ) {
    }

    /// A call broke its stream's rules and was answered with `status`:
    /// stop its handler.
    fn stream_failed(&mut self, handle: Self::Handle, _status: Status) {
        self.cancelled(handle);
    }

    /// The session reads no more (the peer broke the protocol): the
    /// streams of the calls in flight get nothing more, so they end with
    /// `status` rather than wait for their deadlines.
    fn reading_stopped(&mut self, _session: &Session<Infallible, Self::Handle>, _status: &Status) {}

    /// Where the handlers' stream grants are queued, if they stream.
    fn grants(&self) -> Option<Arc<Grants>> {
        None
    }
}

/// The serving side of a connection that serves nothing (a client's).
#[derive(Debug)]
pub(crate) struct NoService;

impl Serve for NoService {
    type Handle = Infallible;
    type Outcome = Infallible;

    fn start(
        &mut self,
        _now: Instant,
        _session: &mut Session<Infallible, Infallible>,
        _frame: Frame,
    ) -> Option<HandlerFuture<Infallible>> {
        None
    }

    fn cancelled(&mut self, handle: Infallible) {
        match handle {}
    }

    fn finished(
        &mut self,
        _session: &mut Session<Infallible, Infallible>,
        outcome: Infallible,
    ) -> Option<Outgoing> {
        match outcome {}
    }

    fn event(&self, _what: &'static str, _detail: String) {}

    fn draining(&self) {}
}

/// Pumps one link into a session until the link ends, the server stops or
/// the connection is dropped.
pub(crate) struct Driver<S: Serve> {
    session: Session<Infallible, S::Handle>,
    outgoing: Outbound,
    serve: S,
    handlers: FuturesUnordered<HandlerFuture<S::Outcome>>,
    /// Where frames for this side's calls go (client and peer links).
    caller: Option<Weak<dyn CallerSide>>,
    /// The peer's address, for logs.
    peer: String,
    /// Why the connection ended, once it is known before `run` returns.
    end: End,
    /// A server connection's idleness mark, if its server keeps one.
    idle: Option<Arc<IdleMark>>,
    /// Fires when its server asks it to go.
    evict: Option<oneshot::Receiver<Status>>,
    /// Frames for this side's callers, gathered while a batch is handled.
    for_caller: Vec<Decoded>,
}

impl<S: Serve> Driver<S> {
    /// A driver for a connection whose hellos have been exchanged.
    pub(crate) fn new(
        session: Session<Infallible, S::Handle>,
        outgoing: Outbound,
        serve: S,
        caller: Option<Weak<dyn CallerSide>>,
        peer: String,
    ) -> Self {
        Self {
            session,
            outgoing,
            serve,
            handlers: FuturesUnordered::new(),
            caller,
            peer,
            end: End::Stopped,
            idle: None,
            evict: None,
            for_caller: Vec::new(),
        }
    }

    /// Marks idleness for, and takes eviction from, the connection's server.
    pub(crate) fn with_tenancy(mut self, tenancy: Tenancy) -> Self {
        self.idle = Some(tenancy.idle);
        self.evict = Some(tenancy.evict);
        self
    }

    /// The session (what is left in it once `run` returned).
    pub(crate) fn session(&self) -> &Session<Infallible, S::Handle> {
        &self.session
    }

    /// The serving side.
    pub(crate) fn serve(&self) -> &S {
        &self.serve
    }

    /// Handles `frames` (those that arrived behind the peer's hello), then
    /// reads `rx` until the link ends, `phase` says the server stopped, or
    /// `stopped` fires (the connection was dropped). Dropping the driver
    /// afterwards cancels the handlers still running.
    pub(crate) async fn run<R: LinkRx>(
        &mut self,
        rx: &mut R,
        mut frames: Vec<Decoded>,
        phase: Option<&mut watch::Receiver<Phase>>,
        stopped: Option<oneshot::Receiver<()>>,
    ) -> End {
        // Without a server, nothing changes the phase.
        let (_serving, mut own_phase) = watch::channel(Phase::Serving);
        let phase = phase.unwrap_or(&mut own_phase);
        let mut sending_phase = phase.clone();
        let stopped = async move {
            match stopped {
                Some(stopped) => {
                    let _ = stopped.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        let writer_failed = self.outgoing.writer_failed();
        tokio::pin!(writer_failed);
        // One timer for the session's clocks, moved when their deadline
        // moves (and never polled while they are off).
        let timer = tokio::time::sleep_until(far_future().into());
        tokio::pin!(timer);
        let mut timer_at = None;
        let grants = self.serve.grants();
        loop {
            if let Err(status) = self.handle_all(std::mem::take(&mut frames), true).await {
                self.protocol_error(status).await;
            }
            if self.session.is_draining()
                && self.handlers.is_empty()
                && self.session.is_done(Instant::now())
            {
                return std::mem::replace(&mut self.end, End::Stopped);
            }
            if let Some(idle) = &self.idle {
                idle.set(self.session.idle_since());
            }
            let timeout = self.session.poll_timeout();
            if timeout != timer_at {
                timer_at = timeout;
                if let Some(at) = timeout {
                    timer.as_mut().reset(at.into());
                }
            }
            tokio::select! {
                biased;
                // Nothing more reaches the peer: end the connection, so
                // its calls fail now instead of at their deadlines. First,
                // so that a peer that keeps sending cannot starve it.
                failure = &mut writer_failed => {
                    let reason = failure.reason;
                    if failure.peer_left {
                        tracing::debug!(peer = %self.peer, %reason, "the client left (seen writing)");
                    } else {
                        tracing::warn!(peer = %self.peer, %reason, "writing to the client failed; closing the connection");
                    }
                    self.serve.event("write failed", reason.clone());
                    return End::WriteFailed(format!("writing to the client failed: {reason}"));
                }
                Some(outcome) = self.handlers.next(), if !self.handlers.is_empty() => {
                    if let Some(reply) = self.serve.finished(&mut self.session, outcome) {
                        // Sending waits while the peer does not read its
                        // replies (OUTGOING_BYTES queued); a server that
                        // stops must not wait for it.
                        // Its own receiver: a change it sees (a shutdown
                        // that began meanwhile) still wakes `changed` below.
                        tokio::select! {
                            biased;
                            _ = sending_phase.wait_for(|p| *p == Phase::Stopped) => return End::Stopped,
                            _ = self.outgoing.send(reply) => {}
                        }
                    }
                }
                // Credit first: a link that always has data waiting must
                // not hold back the grants its handlers gave.
                () = queued(grants.as_deref()) => {
                    if let Some(grants) = &grants {
                        for (call_id, credit) in grants.take() {
                            self.session.grant(false, call_id, credit);
                        }
                        self.flush().await;
                    }
                }
                received = rx.recv(&mut frames), if self.session.is_reading() => match received {
                    Ok(true) => {}
                    // The peer is gone: nobody waits for the handlers, but
                    // what it sent before it left still reaches this side's
                    // callers.
                    Ok(false) => {
                        self.deliver_last(&mut frames).await;
                        self.serve.event("peer closed", "the client closed the connection".to_owned());
                        return End::PeerClosed;
                    }
                    // The link itself is gone (reset, timed out, cut
                    // mid-frame): nobody can receive a response, so the
                    // handlers are dropped (cancelled) at once.
                    Err(err) if link_lost(&err) => {
                        self.deliver_last(&mut frames).await;
                        self.serve.event("peer lost", err.to_string());
                        return End::Failed(err.to_string());
                    }
                    Err(err) => {
                        self.end = End::Failed(err.to_string());
                        // Frames decoded before the bad bytes still count.
                        let _ = self.handle_all(std::mem::take(&mut frames), true).await;
                        self.protocol_error(Status::invalid_argument(format!(
                            "{err}; closing the connection"
                        )))
                        .await;
                    }
                },
                changed = phase.changed() => {
                    let now = *phase.borrow();
                    if changed.is_err() || now == Phase::Stopped {
                        return End::Stopped;
                    }
                    self.follow(now).await;
                }
                () = &mut timer, if timeout.is_some() => {
                    // Fired: re-armed on the next turn (the clocks move on).
                    timer_at = None;
                    let now = Instant::now();
                    self.session.handle_timeout(now);
                    let end = self.events(now, true);
                    self.deliver_for_caller();
                    if let Some(end) = end {
                        return end;
                    }
                    self.flush().await;
                }
                () = &mut stopped => return End::Stopped,
                evicted = evicted(&mut self.evict) => {
                    self.evict = None;
                    if let Ok(status) = evicted
                        && self.session.shed(Instant::now(), &status)
                    {
                        tracing::debug!(peer = %self.peer, %status, "shed an idle connection");
                        self.serve.draining();
                        self.serve.event("shed", status.message().to_owned());
                        self.flush().await;
                    }
                }
            }
        }
    }

    /// Follows the server into `phase`: a server that began to shut down
    /// tells the peer (GoAway) once, and lets the calls in flight finish.
    async fn follow(&mut self, phase: Phase) {
        let status = Status::unavailable(
            "the server is shutting down; calls in flight finish, new calls go elsewhere",
        );
        if phase == Phase::Draining && self.session.drain(&status) {
            self.serve.draining();
            self.serve
                .event("goaway", "the server is shutting down".to_owned());
            self.flush().await;
        }
    }

    /// Hands what arrived with the end of the link to this side's callers;
    /// requests in it are not started (nobody could get their replies).
    async fn deliver_last(&mut self, frames: &mut Vec<Decoded>) {
        let _ = self.handle_all(std::mem::take(frames), false).await;
    }

    /// Handles frames in order (starting requests only if `serving`),
    /// up to the first that breaks the protocol (the error). What they
    /// carry for this side's callers is handed over together at the end,
    /// and what the session asks to send is written once.
    async fn handle_all(&mut self, frames: Vec<Decoded>, serving: bool) -> Result<(), Status> {
        if frames.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut handled = Ok(());
        for decoded in frames {
            // Each frame's events before the next frame: a request is
            // admitted (its stream opened) before what follows it. A run
            // of a stream's messages is the exception: its events are
            // taken together, before the next frame of another kind.
            // Only timeouts end a connection by themselves, never frames.
            let data = decoded.is_stream_data();
            if !data {
                let _ = self.events(now, serving);
            }
            handled = self.session.handle_frame(now, decoded);
            if !data {
                let _ = self.events(now, serving);
            }
            if handled.is_err() {
                break;
            }
        }
        let _ = self.events(now, serving);
        self.deliver_for_caller();
        self.flush().await;
        handled
    }

    /// Hands the frames gathered for this side's callers to them.
    fn deliver_for_caller(&mut self) {
        if self.for_caller.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.for_caller);
        if let Some(caller) = self.caller.as_ref().and_then(Weak::upgrade) {
            caller.handle_all(frames);
        }
    }

    /// Carries out what the session asks for (starting requests only if
    /// `serving`); `Some` when it says the connection is over.
    fn events(&mut self, now: Instant, serving: bool) -> Option<End> {
        let mut end = None;
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Request(frame) => {
                    if serving
                        && let Some(handler) = self.serve.start(now, &mut self.session, frame)
                    {
                        self.handlers.push(handler);
                    }
                }
                Event::Cancelled { handle, .. } => self.serve.cancelled(handle),
                Event::StreamData {
                    call_id,
                    ours: false,
                    messages,
                } => self.serve.stream_data(&self.session, call_id, messages),
                Event::StreamEnd { call_id } => self.serve.stream_end(&self.session, call_id),
                Event::StreamCredit {
                    call_id,
                    ours: false,
                    credit,
                } => self.serve.stream_credit(&self.session, call_id, credit),
                Event::StreamFailed { handle, status, .. } => {
                    self.serve.stream_failed(handle, status);
                }
                // This side's calls' streams are the caller side's session's.
                Event::StreamData { ours: true, .. } | Event::StreamCredit { ours: true, .. } => {}
                Event::Stray { kind, call_id } => {
                    tracing::debug!(peer = %self.peer, ?kind, call_id, "dropped a stream frame of a call that has no stream (ended, or never opened)");
                }
                // Handed over together once the frames at hand are handled.
                Event::ForCaller(mut frames) => {
                    if self.for_caller.is_empty() {
                        self.for_caller = frames;
                    } else {
                        self.for_caller.append(&mut frames);
                    }
                }
                Event::Dropped { kind, len } => {
                    tracing::warn!(?kind, len, "dropped an oversized frame");
                }
                Event::Response { waiter, .. } | Event::CallFailed { waiter, .. } => {
                    match waiter {}
                }
                // The caller side's session takes GoAways.
                Event::PeerGoingAway(_) => {}
                Event::PeerSilent(status) => {
                    tracing::warn!(peer = %self.peer, %status, "peer silent; closing the connection");
                    self.serve.event("peer silent", status.message().to_owned());
                    end = Some(End::Failed(status.message().to_owned()));
                }
                Event::Idle(status) => {
                    tracing::debug!(peer = %self.peer, %status, "idle; draining the connection");
                    self.serve.draining();
                    self.serve.event("idle", status.message().to_owned());
                }
            }
        }
        end
    }

    /// The peer broke the protocol: say why, read nothing more, let the calls
    /// in flight finish, then close.
    async fn protocol_error(&mut self, status: Status) {
        tracing::warn!(peer = %self.peer, %status, "closing connection");
        self.serve.draining();
        self.serve.event("protocol error", status.to_string());
        self.session.protocol_error(&status);
        self.serve.reading_stopped(&self.session, &status);
        self.flush().await;
    }

    /// Writes what the session asks for. A control frame (GoAway) goes only
    /// if the peer is reading: one whose replies are backed up would not
    /// read it either, and waiting for it must not hold up a drain or a
    /// close.
    async fn flush(&mut self) {
        while let Some(transmit) = self.session.poll_transmit() {
            if transmit.may_drop {
                let _ = self.outgoing.try_send_control(transmit.bytes.into());
            } else {
                let _ = self.outgoing.send_control(transmit.bytes.into()).await;
            }
        }
    }
}

/// Waits for handlers' stream grants, if they can come.
async fn queued(grants: Option<&Grants>) {
    match grants {
        Some(grants) => grants.queued().await,
        None => std::future::pending().await,
    }
}

/// Waits for an eviction, if one can come.
async fn evicted(
    evict: &mut Option<oneshot::Receiver<Status>>,
) -> Result<Status, oneshot::error::RecvError> {
    match evict {
        Some(evict) => evict.await,
        None => std::future::pending().await,
    }
}

/// An instant no timer reaches (for a timer branch that is off).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Whether a receive error means the peer is gone (as opposed to a peer
/// that broke the protocol, which is told why before the connection ends).
fn link_lost(err: &LinkError) -> bool {
    use std::io::ErrorKind;
    match err {
        LinkError::TruncatedFrame { .. } => true,
        LinkError::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::TimedOut
                | ErrorKind::NotConnected
                | ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}
