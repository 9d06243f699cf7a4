//! The one entry point: [`select`] answers a [`Question`]. Each question
//! type names one decision and carries its inputs (the target, what is
//! known of its endpoints, host facts, the call, the policy); its
//! [`Answer`](Question::Answer) is that decision's outcome, so a caller
//! never handles an answer to a question it did not ask. The rules behind
//! the questions are the functions of the sibling modules.

use super::after::{Upgrade, note_locality, shm_fallback, upgrade};
use super::error::ConnectError;
use super::facts::{CallKind, HostFacts, Known};
use super::fixed;
use super::oneway::{OnewayFacts, OnewayTrack, OnewayVerdict, Tracks, oneway, oneway_selection};
use super::target::Target;
use super::{Decision, Forced, Selection, Transport};
use crate::protocol::hello::{HostIdentity, Locality};
use crate::transport::Endpoint;

/// Answers `question`: the one way to ask for a selection. A pure
/// function of the question's inputs.
#[inline]
pub fn select<Q: Question>(question: Q) -> Q::Answer {
    question.answer()
}

/// A decision [`select`] answers, with its inputs.
pub trait Question: sealed::Sealed {
    /// The decision's outcome.
    type Answer;

    /// Applies the decision's rule (what [`select`] calls).
    fn answer(self) -> Self::Answer;
}

mod sealed {
    /// Only the questions of this module are questions.
    pub trait Sealed {}
}

/// How to reach a target, as candidates in the order to try them
/// ([`connect`](super::connect)).
#[derive(Clone, Copy, Debug)]
pub struct Connect<'a> {
    /// What the caller named.
    pub target: &'a Target,
    /// What is known of its endpoints (ask again after a
    /// [`Decision::LookUp`] with what the lookup found).
    pub known: Known<'a>,
    /// Facts about this host and process.
    pub facts: &'a HostFacts,
    /// The override in force.
    pub forced: Option<Forced>,
}

/// Where a service's one-way calls go: its server's queue or the
/// connection ([`oneway`](super::oneway())).
#[derive(Clone, Copy, Debug)]
pub struct OnewayRoute<'a> {
    /// What is known of the service's server.
    pub facts: &'a OnewayFacts,
    /// The override in force.
    pub forced: Option<Forced>,
}

/// The selection a service's one-way calls show, given where they went
/// ([`oneway_selection`](super::oneway_selection)).
#[derive(Clone, Copy, Debug)]
pub struct OnewaySelection<'a> {
    /// The queue they go through, or why they ride the connection.
    pub track: OnewayTrack<'a>,
    /// The connection's transport; `None`: no server is connected.
    pub connection: Option<Transport>,
}

/// The track of one call, by its kind and size
/// ([`per_call`](super::per_call)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallTrack {
    /// The call.
    pub kind: CallKind,
    /// The tracks besides its connection.
    pub tracks: Tracks,
}

/// A selection with what the handshake showed of where the peer runs
/// ([`note_locality`](super::note_locality)).
#[derive(Clone, Debug)]
pub struct HandshakeNote<'a> {
    /// The connection's selection so far.
    pub selection: Selection,
    /// This host.
    pub local: &'a HostIdentity,
    /// The peer's host, from its hello.
    pub peer: &'a HostIdentity,
}

/// Whether a TCP or QUIC connection moves to shared memory after its
/// handshake ([`upgrade`](super::upgrade)).
#[derive(Clone, Copy, Debug)]
pub struct MoveToShm<'a> {
    /// The connection's selection.
    pub current: &'a Selection,
    /// The address it reached.
    pub url: &'a str,
    /// Where the peer runs, as the handshake showed.
    pub locality: Locality,
    /// The endpoints the server's hello lists.
    pub peer_endpoints: &'a [Endpoint],
    /// The override in force.
    pub forced: Option<Forced>,
    /// Whether the client presented a certificate (mutual TLS).
    pub presented_certificate: bool,
}

/// The selection when shared memory could not be set up and its Unix
/// socket carries the connection ([`shm_fallback`](super::shm_fallback)).
#[derive(Clone, Debug)]
pub struct ShmFallback<'a> {
    /// The shared-memory candidate's selection.
    pub planned: &'a Selection,
    /// Why the set-up failed.
    pub error: String,
}

/// The selections with one outcome: nothing is decided, the case names
/// the selection ([`accepted`](super::accepted) and its siblings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixed<'a> {
    /// (Server) a link accepted on a listener of this transport.
    Accepted(Transport),
    /// (Server) the queue it drains.
    QueueOwned {
        /// The queue's name.
        queue: &'a str,
    },
    /// No live server publishes `target`, but its queue is there.
    QueueStandIn {
        /// The name connected to.
        target: &'a str,
        /// The queue's name.
        queue: &'a str,
    },
    /// A link of this transport the caller made itself.
    CallerLink(Transport),
    /// The pipes to a child this process spawned.
    SpawnedChild {
        /// The child's program.
        program: &'a str,
        /// Its pid.
        pid: u32,
    },
    /// The pipes inherited from the parent process.
    ParentPipe {
        /// The parent's pid.
        ppid: u32,
    },
}

impl sealed::Sealed for Connect<'_> {}
impl Question for Connect<'_> {
    type Answer = Result<Decision, ConnectError>;

    fn answer(self) -> Self::Answer {
        super::connect(self.target, self.known, self.facts, self.forced)
    }
}

impl sealed::Sealed for OnewayRoute<'_> {}
impl Question for OnewayRoute<'_> {
    type Answer = OnewayVerdict;

    fn answer(self) -> Self::Answer {
        oneway(self.facts, self.forced)
    }
}

impl sealed::Sealed for OnewaySelection<'_> {}
impl Question for OnewaySelection<'_> {
    type Answer = Selection;

    fn answer(self) -> Self::Answer {
        oneway_selection(self.track, self.connection)
    }
}

impl sealed::Sealed for CallTrack {}
impl Question for CallTrack {
    type Answer = Transport;

    #[inline]
    fn answer(self) -> Self::Answer {
        super::per_call(self.kind, &self.tracks)
    }
}

impl sealed::Sealed for HandshakeNote<'_> {}
impl Question for HandshakeNote<'_> {
    type Answer = Selection;

    fn answer(mut self) -> Self::Answer {
        note_locality(&mut self.selection, self.local, self.peer);
        self.selection
    }
}

impl sealed::Sealed for MoveToShm<'_> {}
impl Question for MoveToShm<'_> {
    type Answer = Upgrade;

    fn answer(self) -> Self::Answer {
        upgrade(
            self.current,
            self.url,
            self.locality,
            self.peer_endpoints,
            self.forced,
            self.presented_certificate,
        )
    }
}

impl sealed::Sealed for ShmFallback<'_> {}
impl Question for ShmFallback<'_> {
    type Answer = Selection;

    fn answer(self) -> Self::Answer {
        shm_fallback(self.planned, self.error)
    }
}

impl sealed::Sealed for Fixed<'_> {}
impl Question for Fixed<'_> {
    type Answer = Selection;

    fn answer(self) -> Self::Answer {
        match self {
            Self::Accepted(transport) => fixed::accepted(transport),
            Self::QueueOwned { queue } => fixed::queue_owned(queue),
            Self::QueueStandIn { target, queue } => fixed::queue_stand_in(target, queue),
            Self::CallerLink(transport) => fixed::caller_link(transport),
            Self::SpawnedChild { program, pid } => fixed::spawned_child(program, pid),
            Self::ParentPipe { ppid } => fixed::parent_pipe(ppid),
        }
    }
}
