//! Per-call tracks: where a service's one-way calls go (the server's
//! message queue or the connection), and which track one call takes by its
//! kind and size.

use super::facts::CallKind;
use super::reason::Reason;
use super::rejection::Rejection;
use super::{Forced, Selection};
use crate::protocol::hello::Locality;
use crate::transport::Transport;

/// What one-way routing knows of a service's server, gathered by the
/// caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnewayFacts {
    /// The service.
    pub service: String,
    /// Whether it has one-way methods.
    pub has_oneway_methods: bool,
    /// Where the server runs relative to us; `None` when none is connected.
    pub locality: Option<Locality>,
    /// The server's uid, as its hello says.
    pub server_uid: Option<u32>,
    /// This process's uid.
    pub own_uid: u32,
    /// The queue the server announced for the service (or, with no server
    /// connected, the queue a server of this runtime directory would use).
    pub queue: Option<String>,
    /// When no queue was announced: what the queue error says about
    /// someone else holding the name a server would use, if someone does.
    pub squatter: Option<String>,
}

/// The one-way decision: open this queue, or stay on the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnewayVerdict {
    /// Send through the queue of this name (if it opens).
    Queue(String),
    /// Send over the connection, for this reason.
    Connection(Rejection),
}

/// Decides where one-way calls of a service go: the server's queue when
/// no other transport is demanded, the server shares this host's IPC
/// namespace and this user, and announced a queue for a service with
/// one-way methods; else the connection, saying why.
pub fn oneway(facts: &OnewayFacts, forced: Option<Forced>) -> OnewayVerdict {
    use OnewayVerdict::Connection;
    if let Some(f) = forced.filter(|f| f.transport != Transport::MessageQueue) {
        return Connection(Rejection::OverriddenForOneWay(f));
    }
    if let Some(locality) = facts.locality.filter(|l| *l != Locality::SameHostSameIpc) {
        return Connection(Rejection::NotSharedNamespace(locality));
    }
    if let Some(theirs) = facts.server_uid.filter(|theirs| *theirs != facts.own_uid) {
        return Connection(Rejection::OtherUser {
            theirs,
            ours: facts.own_uid,
        });
    }
    let Some(queue) = &facts.queue else {
        return Connection(match &facts.squatter {
            Some(held) => Rejection::QueueSquatted {
                service: facts.service.clone(),
                held: held.clone(),
            },
            None => Rejection::NoQueueAnnounced {
                service: facts.service.clone(),
            },
        });
    };
    if !facts.has_oneway_methods {
        return Connection(Rejection::NoOneWayMethods {
            service: facts.service.clone(),
        });
    }
    OnewayVerdict::Queue(queue.clone())
}

/// Where a service's one-way calls went, for [`oneway_selection`].
#[derive(Clone, Copy, Debug)]
pub enum OnewayTrack<'a> {
    /// Through the queue `name`, whose messages hold `max_message` bytes.
    Queue {
        /// The queue's name.
        name: &'a str,
        /// Its message size.
        max_message: usize,
    },
    /// Over the connection, for this reason.
    Connection(&'a Rejection),
}

/// The selection one-way calls of a service get, given their track and the
/// transport of the connection (`None`: no server is connected).
pub fn oneway_selection(track: OnewayTrack<'_>, connection: Option<Transport>) -> Selection {
    match track {
        OnewayTrack::Queue { name, max_message } => Selection {
            transport: Transport::MessageQueue,
            reason: match connection {
                Some(_) => Reason::OnewayQueue {
                    queue: name.to_owned(),
                    max_message,
                },
                None => Reason::OnewayQueueOnly {
                    queue: name.to_owned(),
                },
            },
            rejected: connection
                .map(|t| vec![(t, Rejection::QueueKeepsOneWayCalls)])
                .unwrap_or_default(),
        },
        OnewayTrack::Connection(why) => Selection {
            transport: connection.unwrap_or(Transport::Unix),
            reason: Reason::OnewayConnection,
            rejected: vec![(Transport::MessageQueue, why.clone())],
        },
    }
}

/// The tracks one call can take besides its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracks {
    /// The connection's transport.
    pub connection: Transport,
    /// The message size of the service's queue, when one-way calls go
    /// through one.
    pub queue_max: Option<usize>,
    /// The body size above which a shared-memory connection sends a body
    /// as a mapped region, when it does.
    pub bulk_threshold: Option<usize>,
}

/// The track of one call: a one-way call that fits the queue's message goes
/// through the queue; a body over the bulk threshold of a shared-memory
/// connection goes as a mapped region (mmap); everything else over the
/// connection.
pub fn per_call(kind: CallKind, tracks: &Tracks) -> Transport {
    let bytes = match kind {
        CallKind::OneWay { bytes } => {
            if tracks.queue_max.is_some_and(|max| bytes <= max) {
                return Transport::MessageQueue;
            }
            bytes
        }
        CallKind::Unary { bytes } => bytes,
    };
    let bulk = tracks.connection == Transport::Shm
        && tracks
            .bulk_threshold
            .is_some_and(|threshold| bytes > threshold);
    if bulk {
        Transport::Mmap
    } else {
        tracks.connection
    }
}
