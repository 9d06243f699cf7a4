//! The inputs of a decision that come from the world: the caller gathers
//! them (I/O) and passes them in, so every rule runs on plain data.

use std::path::Path;

use crate::discovery::{Entry, Resolved};
use crate::protocol::hello::HostIdentity;

/// Facts about this host and process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// This host's identity (boot id, IPC namespace, ...).
    pub host: HostIdentity,
    /// Whether this build can set up shared memory.
    pub shm_available: bool,
    /// The switchyard parent that spawned this process with pipes, if any.
    pub parent: Option<ParentFacts>,
}

/// A parent process reachable over inherited pipes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentFacts {
    /// Its pid.
    pub pid: u32,
    /// The services it serves over the pipes.
    pub services: Vec<String>,
}

impl HostFacts {
    /// The facts of this process: its host identity, whether shared memory
    /// is built in, and the parent it inherited pipes from (`parent`, which
    /// the caller read from the environment).
    pub fn of_this_process(parent: Option<ParentFacts>) -> Self {
        Self {
            host: crate::sys::host_identity(),
            shm_available: crate::transport::Transport::Shm.is_available(),
            parent,
        }
    }
}

/// What is known of a name's endpoints when deciding.
#[derive(Clone, Copy, Debug)]
pub enum Known<'a> {
    /// Nothing looked up yet (or the target is an address).
    NotLookedUp,
    /// A live local registry entry publishes the name.
    Entry(&'a Entry),
    /// A resolver answered for the name.
    Resolved(&'a Resolved),
    /// Neither the registry (in `registry_dir`) nor the resolver knows it;
    /// `consulted` says whom the resolver step asked.
    Nothing {
        /// The runtime directory whose registry was searched.
        registry_dir: &'a Path,
        /// E.g. "the discovery file /d.toml does not list it".
        consulted: &'a str,
    },
}

/// The kind of call a track is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A request that waits for its response.
    Unary {
        /// The encoded frame's length, in bytes.
        bytes: usize,
    },
    /// A one-way call.
    OneWay {
        /// The encoded frame's length, in bytes.
        bytes: usize,
    },
}
