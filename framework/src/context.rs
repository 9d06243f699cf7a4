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
//! }
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::descriptor::MethodDescriptor;
use crate::protocol::metadata::Metadata;
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
    pub(crate) bulk_threshold: Option<usize>,
    /// The largest response body the client accepts.
    pub(crate) peer_frame_limit: u32,
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
        }
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
    pub(crate) fn reply_limits() -> (Option<usize>, Option<usize>) {
        CURRENT
            .try_with(|ctx| {
                (
                    ctx.conn.bulk_threshold,
                    Some(ctx.conn.peer_frame_limit as usize),
                )
            })
            .unwrap_or((None, None))
    }

    pub(crate) async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
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
