//! The server's end of one-way calls through POSIX message queues: one queue
//! per service that has one-way methods, named `/sy-<uid>-<service>`,
//! created (or reopened, keeping what waits in it) at start and drained
//! highest priority first, FIFO within a priority.
//!
//! Lifecycle rule: a queue outlives its server, so one-way calls sent while
//! the server restarts wait in the kernel, whether it was killed or stopped
//! gracefully: graceful shutdown keeps the queue (clients find it by its
//! name, which derives from the runtime directory and the service). It is
//! removed for good only when asked: `ServerBuilder::remove_queues_on_shutdown`,
//! `switchyard services --remove-queue SERVICE`, or `switchyard services
//! --prune` for services no live process publishes. Durability wins over
//! tidiness.
//!
//! Handlers of one queue run one at a time, in the order the kernel hands
//! the messages out, so the order of priorities is the order of handling.
//! A queued call's deadline budget is not enforced: the message may have
//! waited in the kernel for any length of time.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::watch;

use super::{Phase, ServerShared};
use crate::context::{ConnectionInfo, Context};
use crate::debug::model::PeerInfo as PeerModel;
use crate::debug::recorder::{ConnectionStats, MethodCounters, Side, counters_by_id, recorder};
use crate::protocol::frame::{Frame, HEADER_LEN};
use crate::protocol::metadata::Metadata;
use crate::protocol::status::Code;
use crate::select::Transport;
use crate::service::Request;
use crate::transport::mqueue::{self, MqReceiver};
use crate::transport::{Endpoint, PeerInfo};

/// A queue being drained.
#[derive(Debug)]
pub(crate) struct QueueHandle {
    pub(crate) name: String,
    pub(crate) service: String,
    task: tokio::task::JoinHandle<()>,
}

impl QueueHandle {
    /// Waits for the drain task to stop (after the phase left Serving), then
    /// keeps the queue for the next start, or with `remove` removes it for
    /// good, discarding what waits in it. A kept queue is recorded in
    /// `registry` (if the server has one) for `switchyard services`.
    pub(crate) async fn close(
        mut self,
        remove: bool,
        registry: Option<&crate::discovery::Registry>,
    ) {
        let _ = (&mut self.task).await;
        if remove {
            match mqueue::remove(&self.name) {
                Ok(Some(discarded)) if discarded > 0 => tracing::warn!(
                    queue = %self.name,
                    discarded,
                    "removed the queue as asked (remove_queues_on_shutdown), discarding the \
                     one-way calls that waited in it"
                ),
                Ok(_) => tracing::info!(queue = %self.name, "removed the queue as asked"),
                Err(err) => tracing::warn!(queue = %self.name, %err, "could not remove the queue"),
            }
            return;
        }
        if let Some(registry) = registry {
            let kept = crate::discovery::KeptQueue {
                service: self.service.clone(),
                queue: self.name.clone(),
                pid: crate::sys::pid(),
                stopped_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0),
            };
            if let Err(err) = registry.record_kept_queue(&kept) {
                tracing::warn!(queue = %self.name, %err, "could not record the kept queue");
            }
        }
        let waiting = crate::sys::mqueue::open_existing(&self.name)
            .and_then(|q| q.attributes())
            .map(|a| a.current_messages)
            .unwrap_or(0);
        tracing::info!(
            queue = %self.name,
            waiting,
            "kept the queue: one-way calls sent until the next start wait in it (remove it for \
             good with ServerBuilder::remove_queues_on_shutdown or `switchyard services \
             --remove-queue <service>`)"
        );
    }
}

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) use crate::transport::mqueue::service_queue_name as queue_name;

/// A queue opened for a service, not yet drained.
pub(crate) struct Opened {
    pub(crate) service: String,
    pub(crate) name: String,
    receiver: MqReceiver,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("name", &self.name).finish()
    }
}

/// A service with one-way methods that has no queue, and why: its one-way
/// calls travel over connections and are not kept across a restart.
#[derive(Clone, Debug)]
pub(crate) struct Missing {
    pub(crate) service: String,
    pub(crate) reason: MissingQueue,
}

/// Why a service has no message queue. `Display` writes the sentence logs,
/// `ServerHandle::queue_problems` and `require_queues` errors show.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum MissingQueue {
    /// Someone else holds the queue's name: durability is lost until its
    /// owner removes it or the runtime directory changes.
    #[error(
        "someone else holds the queue name {name} ({error}); one-way calls to {service} travel \
         over connections and are NOT kept across a server restart. Fix: have its owner or \
         root remove it, or run with another SWITCHYARD_RUNTIME_DIR (the queue name derives \
         from it)"
    )]
    Squatted {
        /// The queue's name.
        name: String,
        /// The service.
        service: String,
        /// What opening it said.
        error: String,
    },
    /// The queue could not be opened for another reason.
    #[error(
        "could not open the message queue {name} ({error}); one-way calls to {service} travel \
         over connections and are not kept across a server restart"
    )]
    Unopenable {
        /// The queue's name.
        name: String,
        /// The service.
        service: String,
        /// What opening it said.
        error: String,
    },
}

/// Creates (or reopens, keeping what waits in it) a queue for every service
/// with one-way methods. A queue that cannot be made is returned as
/// [`Missing`] and logged: as an error when someone else holds its name
/// (durability is lost, and only its owner or another runtime directory can
/// fix that), else as a warning.
pub(crate) fn open(
    root: &std::path::Path,
    services: &[(String, bool)],
) -> (Vec<Opened>, Vec<Missing>) {
    let limits = match mqueue::limits() {
        Ok(limits) => limits,
        Err(err) => {
            tracing::info!(%err, "no POSIX message queues: one-way calls use connections");
            return (Vec::new(), Vec::new());
        }
    };
    let mut opened = Vec::new();
    let mut missing = Vec::new();
    for (service, has_oneway) in services {
        if !has_oneway {
            continue;
        }
        let name = queue_name(root, service);
        match MqReceiver::create(&name, limits.msg_max, limits.msgsize_max) {
            Ok(receiver) => {
                if receiver.queue().reopened() {
                    let waiting = receiver
                        .queue()
                        .attributes()
                        .map(|a| a.current_messages)
                        .unwrap_or(0);
                    tracing::info!(queue = %name, waiting, "reopened the queue of a previous run");
                }
                opened.push(Opened {
                    service: service.clone(),
                    name,
                    receiver,
                });
            }
            Err(err) => {
                let squatted = matches!(
                    err,
                    mqueue::MqError::Foreign { .. } | mqueue::MqError::PermissionDenied { .. }
                );
                let (queue, of, error) = (name.clone(), service.clone(), err.to_string());
                let reason = if squatted {
                    MissingQueue::Squatted {
                        name: queue,
                        service: of,
                        error,
                    }
                } else {
                    MissingQueue::Unopenable {
                        name: queue,
                        service: of,
                        error,
                    }
                };
                if squatted {
                    tracing::error!(queue = %name, service = %service, "one-way durability lost: {reason}");
                } else {
                    tracing::warn!(queue = %name, service = %service, "{reason}");
                }
                missing.push(Missing {
                    service: service.clone(),
                    reason,
                });
            }
        }
    }
    (opened, missing)
}

/// Starts draining the opened queues.
pub(crate) fn spawn(
    shared: &Arc<ServerShared>,
    opened: Vec<Opened>,
    phase: &watch::Sender<Phase>,
) -> Vec<QueueHandle> {
    opened
        .into_iter()
        .map(|queue| {
            let task = tokio::spawn(drain(
                Arc::clone(shared),
                queue.receiver,
                queue.name.clone(),
                phase.subscribe(),
            ));
            QueueHandle {
                name: queue.name,
                service: queue.service,
                task,
            }
        })
        .collect()
}

async fn drain(
    shared: Arc<ServerShared>,
    mut receiver: MqReceiver,
    name: String,
    mut phase: watch::Receiver<Phase>,
) {
    let url = Endpoint::MessageQueue(name.clone()).to_string();
    let selection = crate::select::select(crate::select::Fixed::QueueOwned { queue: &name });
    let peer = PeerInfo {
        addr: url.clone(),
        pid: None,
        uid: Some(crate::sys::uid()),
    };
    let stats = recorder().connection(
        Side::Server,
        &selection,
        PeerModel {
            addr: url.clone(),
            pid: None,
            uid: peer.uid,
            process: "any sender".into(),
            hostname: String::new(),
            locality: "same host, same IPC namespace".into(),
        },
    );
    stats.event("accepted", format!("draining {name}"));
    let counters = counters_by_id(
        shared.router.methods(),
        Transport::MessageQueue,
        Side::Server,
    );
    let info = Arc::new(ConnectionInfo {
        transport: Transport::MessageQueue,
        peer,
        identity: None,
        peer_process: String::new(),
        peer_claimed_pid: 0,
        spill_to: None,
        peer_frame_limit: u32::MAX,
        knobs: shared.config.knobs,
        own_frame_limit: shared.config.frame_limit,
    });
    let mut malformed = 0;
    loop {
        let received = tokio::select! {
            received = receiver.recv_frame() => received,
            _ = phase.wait_for(|p| *p != Phase::Serving) => break,
        };
        match received {
            Ok((frame, _priority)) => {
                if receiver.malformed() > malformed {
                    malformed = receiver.malformed();
                    stats.event(
                        "dropped",
                        format!("{malformed} malformed messages dropped from {name} so far"),
                    );
                }
                handle(&shared, &info, &stats, &counters, frame).await;
            }
            Err(err) => {
                tracing::error!(queue = %name, %err, "stopped draining the queue");
                stats.event("closed", err.to_string());
                return;
            }
        }
    }
    stats.event(
        "closed",
        format!(
            "the server is stopping; {} malformed messages were dropped",
            receiver.malformed()
        ),
    );
}

async fn handle(
    shared: &ServerShared,
    info: &Arc<ConnectionInfo>,
    stats: &ConnectionStats,
    counters: &HashMap<u32, Arc<MethodCounters>>,
    frame: Frame,
) {
    let started = Instant::now();
    let received = HEADER_LEN + frame.metadata.len() + frame.payload.len();
    // Senders never compress into a queue; a message that says it is
    // compressed is inflated within the limit all the same, or dropped.
    let frame = match crate::protocol::compress::inflate(
        frame,
        shared.config.frame_limit,
        &crate::protocol::compress::CompressionCounters::default(),
    ) {
        Ok(crate::protocol::frame::Decoded::Frame(frame)) => frame,
        Ok(crate::protocol::frame::Decoded::Oversized(header)) => {
            stats.event(
                "dropped",
                format!(
                    "a queued one-way call of {} bytes decompressed, over this server's limit",
                    header.body_len()
                ),
            );
            return;
        }
        Err(err) => {
            stats.event("dropped", format!("a queued one-way call: {err}"));
            return;
        }
    };
    stats.started();
    let Some((service, method)) = shared.router.route(frame.header.method_id).cloned() else {
        tracing::error!(
            method_id = frame.header.method_id,
            "dropped a queued call to an unknown method"
        );
        return;
    };
    let Some(counters) = counters.get(&method.id) else {
        return;
    };
    let metadata = match Metadata::decode_limited(&frame.metadata, shared.config.metadata_limits) {
        Ok(metadata) => metadata,
        Err(err) => {
            // No caller waits for an answer: say it where operators look.
            stats.event(
                "dropped",
                format!("a one-way call to {}: {err}", method.full_name),
            );
            tracing::warn!(
                method = method.full_name,
                "dropped a queued one-way call: {err}; raise ServerBuilder::max_metadata to take it"
            );
            return;
        }
    };
    let ctx = Context::new(
        Arc::clone(info),
        method,
        frame.header.call_id,
        None,
        metadata,
    );
    let request = Request::new(frame.payload);
    let result = match shared.layers.stack() {
        None => {
            let Some(handler) = service.call(method.id, request) else {
                return;
            };
            AssertUnwindSafe(ctx.scope(handler)).catch_unwind().await
        }
        Some(stack) => {
            let layered = crate::layers::LayerStack::serve(
                &**stack,
                ctx,
                request,
                service,
                std::convert::identity,
            );
            AssertUnwindSafe(layered).catch_unwind().await
        }
    };
    let code = match result {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => {
            tracing::warn!(method = method.full_name, %status, "queued one-way call failed");
            status.code()
        }
        Err(_) => {
            tracing::error!(
                method = method.full_name,
                "a queued one-way call's handler panicked"
            );
            Code::Internal
        }
    };
    stats.finished(counters, code, Some(started.elapsed()), 0, received);
}
