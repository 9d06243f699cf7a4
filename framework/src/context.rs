//! What a handler can know about the call it is serving: the deadline,
//! metadata, the peer and the transport.
//!
//! ```no_run
//! # async fn handler() {
//! if let Some(ctx) = switchyard::Context::current() {
//!     if let Some(left) = ctx.remaining() {
//!         println!("{left:?} left for {}", ctx.method_name());
//!     }
//!     let _who = ctx.metadata().get_str("user");
//!     // Sent back with the response (or the error), as gRPC's headers
//!     // and trailers are.
//!     ctx.set_response_metadata("served-by", "replica-2").unwrap();
//! }
//! # }
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::descriptor::MethodDescriptor;
use crate::protocol::metadata::{Metadata, MetadataError};
use crate::trace::{TRACEPARENT, TraceContext};
use crate::transport::{PeerIdentity, PeerInfo, Transport};

tokio::task_local! {
    static CURRENT: Context;
}

/// Facts about one connection, shared by every call on it.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    pub(crate) transport: Transport,
    pub(crate) peer: PeerInfo,
    /// The client's verified certificate identity (QUIC with mutual TLS).
    pub(crate) identity: Option<PeerIdentity>,
    pub(crate) peer_process: String,
    pub(crate) peer_claimed_pid: u32,
    /// Result bodies above this go into a bulk region (links that have
    /// them), and bodies over `peer_frame_limit` are refused as written.
    pub(crate) spill_to: Option<crate::transport::bulk::SpillTo>,
    /// The largest response body the client accepts.
    pub(crate) peer_frame_limit: u32,
    /// Which settings set the frame limits, for messages.
    pub(crate) knobs: crate::session::LimitKnobs,
    /// The largest request body this side accepts.
    pub(crate) own_frame_limit: u32,
}

/// The call a handler is serving.
#[derive(Clone, Debug)]
pub struct Context {
    conn: Arc<ConnectionInfo>,
    method: &'static MethodDescriptor,
    call_id: u64,
    deadline: Option<Instant>,
    metadata: Metadata,
    trace: Option<TraceContext>,
    /// What the handler sends back with its response; shared by every
    /// clone of this context.
    response: ResponseMetadata,
}

/// The metadata a handler sends back, shared between its [`Context`]s and
/// the server, which encodes it into the response frame.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResponseMetadata(Arc<Mutex<Metadata>>);

impl ResponseMetadata {
    fn lock(&self) -> std::sync::MutexGuard<'_, Metadata> {
        // Only inserts and reads happen under it; a poisoned lock is sound.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes what was set so far (later inserts start afresh).
    pub(crate) fn take(&self) -> Metadata {
        std::mem::take(&mut *self.lock())
    }
}

impl Context {
    pub(crate) fn new(
        conn: Arc<ConnectionInfo>,
        method: &'static MethodDescriptor,
        call_id: u64,
        deadline: Option<Instant>,
        metadata: Metadata,
    ) -> Self {
        let trace = metadata.get_str(TRACEPARENT).and_then(TraceContext::parse);
        Self {
            conn,
            method,
            call_id,
            deadline,
            metadata,
            trace,
            response: ResponseMetadata::default(),
        }
    }

    /// The handle through which the server collects the response metadata.
    pub(crate) fn response_metadata_handle(&self) -> ResponseMetadata {
        self.response.clone()
    }

    /// The response metadata set by the handler the current task runs, taken
    /// out (to encode into its reply).
    pub(crate) fn take_response_metadata() -> Metadata {
        CURRENT
            .try_with(|ctx| ctx.response.take())
            .unwrap_or_default()
    }

    /// Gives back metadata [`take_response_metadata`](Self::take_response_metadata)
    /// took for a reply that then failed to encode: the error status
    /// carries it instead.
    pub(crate) fn restore_response_metadata(metadata: Metadata) {
        if metadata.is_empty() {
            return;
        }
        let _ = CURRENT.try_with(|ctx| {
            let mut current = ctx.response.lock();
            let later = std::mem::replace(&mut *current, metadata);
            for (key, value) in later.iter() {
                // Keys in `later` were checked when they were inserted.
                let _ = current.insert(key, value.to_vec());
            }
        });
    }

    /// The deadline and trace of the call the current task is handling,
    /// without cloning the context: what calls made from a handler inherit.
    pub(crate) fn inherited() -> (Option<Instant>, Option<TraceContext>) {
        CURRENT
            .try_with(|ctx| (ctx.deadline, ctx.trace))
            .unwrap_or((None, None))
    }

    /// The context of the call being handled by the current task, or `None`
    /// outside a handler.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Where a result encoded by the current task should go: the bulk
    /// threshold and the client's frame limit of its connection.
    pub(crate) fn reply_limits() -> (Option<crate::transport::bulk::SpillTo>, Option<usize>) {
        CURRENT
            .try_with(|ctx| {
                (
                    ctx.conn.spill_to.clone(),
                    Some(ctx.conn.peer_frame_limit as usize),
                )
            })
            .unwrap_or((None, None))
    }

    /// For a reply over the client's limit: this side's own limit and the
    /// knob the client turns, where a call is being handled.
    pub(crate) fn reply_limit_context() -> Option<(u32, &'static str)> {
        CURRENT
            .try_with(|ctx| (ctx.conn.own_frame_limit, ctx.conn.knobs.peer))
            .ok()
    }

    pub(crate) async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Room for a large result of `len` bytes in the shared-memory pool
    /// of the connection the call came on, to fill in place and return
    /// (frozen): the reply then copies nothing on this side. On the heap
    /// where the connection has no pool. See [`Loan`](crate::Loan).
    pub fn loan(&self, len: usize) -> crate::Loan {
        crate::Loan::new(self.conn.spill_to.as_ref(), len)
    }

    /// When the caller stops waiting, if it set a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The caller's trace context (from the `traceparent` metadata entry).
    /// Calls made while handling this call continue the same trace.
    pub fn trace(&self) -> Option<TraceContext> {
        self.trace
    }

    /// The metadata the caller sent.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata, for a server's layer to change before the handler
    /// reads it.
    pub(crate) fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds an entry to the metadata sent back to the caller with this
    /// call's response, or with its error status: gRPC's initial and
    /// trailing metadata in one. The caller reads it with
    /// [`with_response_metadata`](crate::client::with_response_metadata).
    /// A key may be set more than once; entries keep their order. Entries
    /// set after the result was encoded are not sent.
    ///
    /// # Errors
    ///
    /// An invalid key (not 1 to 255 visible ASCII characters).
    pub fn set_response_metadata(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), MetadataError> {
        self.response.lock().insert(key, value)
    }

    /// The response metadata set so far.
    pub fn response_metadata(&self) -> Metadata {
        self.response.lock().clone()
    }

    /// The method being called.
    pub fn method(&self) -> &'static MethodDescriptor {
        self.method
    }

    /// `Service.method`.
    pub fn method_name(&self) -> &'static str {
        self.method.full_name
    }

    /// The call id on this connection.
    pub fn call_id(&self) -> u64 {
        self.call_id
    }

    /// The transport the call came over.
    pub fn transport(&self) -> Transport {
        self.conn.transport
    }

    /// What the kernel or transport says about the caller.
    pub fn peer(&self) -> &PeerInfo {
        &self.conn.peer
    }

    /// The client's identity as its certificate states it, verified by the
    /// transport: set on QUIC connections to a server that requires client
    /// certificates (mutual TLS), `None` elsewhere.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.conn.identity.as_ref()
    }

    /// The caller's process name and pid as it announced them in its hello
    /// (not verified; see [`peer`](Self::peer) for what the kernel vouches
    /// for).
    pub fn peer_process(&self) -> (&str, u32) {
        (&self.conn.peer_process, self.conn.peer_claimed_pid)
    }
}
