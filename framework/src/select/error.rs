//! Why the connection decision found no way to reach a target.

use std::path::PathBuf;

use super::Forced;
use super::facts::ParentFacts;
use super::reason::Published;
use crate::protocol::status::{Code, Status};
use crate::transport::{Endpoint, Transport};

/// Why [`connect`](super::connect) found no way to reach a target. Each
/// message says what to change; [`code`](Self::code) is the status code a
/// caller sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Neither the registry nor the resolver knows the name.
    #[error(
        "no live process publishes {name:?} in the local registry ({}), and {consulted}; start \
         the server, check that both sides use the same SWITCHYARD_RUNTIME_DIR, add the name \
         to a discovery file, or connect to an address such as \
         quic://host:port?pin=<fingerprint>",
        registry_dir.display()
    )]
    NotFound {
        /// The name.
        name: String,
        /// The runtime directory whose registry was searched.
        registry_dir: PathBuf,
        /// Whom the resolver step asked, and what it said.
        consulted: String,
    },
    /// The address is of a transport nothing connects to.
    #[error("cannot connect to {endpoint}: use a service name, unix:///path or tcp://host:port")]
    NotConnectable {
        /// The address.
        endpoint: Endpoint,
    },
    /// An override demands another transport than the address's.
    #[error(
        "{} demands {}, but {address} can only be reached over {transport}; drop the override \
         or connect to an address of that transport",
        forced.source,
        forced.transport
    )]
    AddressOverridden {
        /// The override.
        forced: Forced,
        /// The address, without its query.
        address: String,
        /// Its transport.
        transport: Transport,
    },
    /// Pipes were demanded, but no parent serves the name over them.
    #[error(
        "{}=pipe cannot work for {name:?}: pipes reach only a parent or child process, and {}",
        forced.source,
        describe_parent(parent.as_ref())
    )]
    PipeWithoutParent {
        /// The override.
        forced: Forced,
        /// The name.
        name: String,
        /// The parent that passed pipes, if any.
        parent: Option<ParentFacts>,
    },
    /// Pipes were demanded for a name a registry entry publishes.
    #[error("{forced} cannot work: {published}, and pipes reach only a parent or child process")]
    PipeDemandedOnEntry {
        /// The override.
        forced: Forced,
        /// Who published the name.
        published: Published,
    },
    /// Message queues were demanded for a connection.
    #[error(
        "{forced} cannot work for a connection: message queues carry only one-way calls, and \
         those take the server's queue by themselves on the same host; drop the override"
    )]
    QueueDemanded {
        /// The override.
        forced: Forced,
    },
    /// Mapped regions were demanded for a connection.
    #[error(
        "{forced} cannot work for a connection: mapped regions carry large bodies inside a shm \
         connection; demand shm instead"
    )]
    MmapDemanded {
        /// The override.
        forced: Forced,
    },
    /// The demanded transport is not built in.
    #[error(
        "{forced} cannot work: the {} transport is not implemented in this version; use unix \
         or tcp",
        forced.transport
    )]
    NotImplemented {
        /// The override.
        forced: Forced,
    },
    /// The registry entry lists no endpoint of the demanded transport.
    #[error(
        "{forced} cannot work: {published} with endpoints [{}] and no {} endpoint; start the \
         server with that transport enabled or drop the override",
        endpoints.join(", "),
        forced.transport
    )]
    NoEndpointOfForced {
        /// The override.
        forced: Forced,
        /// Who published the name.
        published: Published,
        /// The entry's endpoints, as written.
        endpoints: Vec<String>,
    },
    /// The registry entry lists no endpoint this version can use.
    #[error(
        "{published} but lists no endpoint this client can use ({}); upgrade the client",
        endpoints.join(", ")
    )]
    NoUsableEndpoint {
        /// Who published the name.
        published: Published,
        /// The entry's endpoints, as written.
        endpoints: Vec<String>,
    },
    /// A resolver gave an address that does not parse.
    #[error("{source_name} gives {name:?} the address {address:?}, which is unusable: {why}")]
    UnusableResolvedAddress {
        /// Who answered.
        source_name: String,
        /// The name.
        name: String,
        /// The address, as given.
        address: String,
        /// What is wrong with it.
        why: String,
    },
    /// A resolver gave no address of the demanded transport.
    #[error(
        "{forced} cannot work: {source_name} gives {name:?} no {} address (it lists [{}]); add \
         one or drop the override",
        forced.transport,
        addresses.join(", ")
    )]
    NoResolvedAddressOfForced {
        /// The override.
        forced: Forced,
        /// Who answered.
        source_name: String,
        /// The name.
        name: String,
        /// The addresses it gave.
        addresses: Vec<String>,
    },
}

impl ConnectError {
    /// The status code a caller sees: NotFound for an unknown name,
    /// InvalidArgument for an address nothing connects to, Unavailable for
    /// an entry this version cannot use, FailedPrecondition for the rest (an
    /// override or a catalog that cannot work).
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound { .. } => Code::NotFound,
            Self::NotConnectable { .. } => Code::InvalidArgument,
            Self::NoUsableEndpoint { .. } => Code::Unavailable,
            _ => Code::FailedPrecondition,
        }
    }
}

impl From<ConnectError> for Status {
    fn from(err: ConnectError) -> Self {
        Self::new(err.code(), err.to_string())
    }
}

fn describe_parent(parent: Option<&ParentFacts>) -> String {
    match parent {
        Some(p) => format!(
            "its parent (pid {}) serves [{}]",
            p.pid,
            p.services.join(", ")
        ),
        None => "this process was not started by a switchyard parent".to_owned(),
    }
}
