//! Selections with one possible outcome: links accepted by a server, its
//! queues, pipes to a parent or child, links a caller made, and the stand-in
//! for a server whose queue outlived it.

use super::Selection;
use super::reason::Reason;
use super::rejection::Rejection;
use crate::transport::Transport;

/// (Server) a link accepted on a listener of `transport`; shared memory is
/// set up by the client over the Unix socket.
pub fn accepted(transport: Transport) -> Selection {
    Selection {
        transport,
        reason: if transport == Transport::Shm {
            Reason::ClientSetUpShm
        } else {
            Reason::ClientConnected { transport }
        },
        rejected: Vec::new(),
    }
}

/// (Server) the queue `queue` this server drains.
pub fn queue_owned(queue: &str) -> Selection {
    Selection {
        transport: Transport::MessageQueue,
        reason: Reason::QueueOwned {
            queue: queue.to_owned(),
        },
        rejected: Vec::new(),
    }
}

/// No live server publishes `target`, but its queue `queue` is there.
pub fn queue_stand_in(target: &str, queue: &str) -> Selection {
    Selection {
        transport: Transport::MessageQueue,
        reason: Reason::QueueStandIn {
            target: target.to_owned(),
            queue: queue.to_owned(),
        },
        rejected: Vec::new(),
    }
}

/// A link of `transport` the caller made itself.
pub fn caller_link(transport: Transport) -> Selection {
    Selection {
        transport,
        reason: Reason::CallerLink { transport },
        rejected: Vec::new(),
    }
}

/// The pipes to a child this process spawned.
pub fn spawned_child(program: &str, pid: u32) -> Selection {
    Selection {
        transport: Transport::Pipe,
        reason: Reason::SpawnedChild {
            program: program.to_owned(),
            pid,
        },
        rejected: Vec::new(),
    }
}

/// The pipes inherited from the parent process `ppid`.
pub fn parent_pipe(ppid: u32) -> Selection {
    Selection {
        transport: Transport::Pipe,
        reason: Reason::ParentPipe { ppid },
        rejected: vec![
            (Transport::Unix, Rejection::InheritedPipeSuffices),
            (Transport::Tcp, Rejection::InheritedPipeSuffices),
            (Transport::Shm, Rejection::NotImplemented),
        ],
    }
}
