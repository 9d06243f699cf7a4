//! Finding services beyond this host: a [`Resolver`] maps a service name to
//! the addresses that serve it (`quic://…`, `tcp://…`, `unix://…`). Host
//! names in those addresses are resolved by DNS when connecting, and every
//! IP address a name has is tried in turn.
//!
//! A client asks the local registry first (a server on this host is reached
//! over shared memory or its Unix socket), then its resolver: the one given
//! to [`ChannelBuilder::resolver`](crate::ChannelBuilder::resolver), or a
//! [`StaticFile`](super::StaticFile) named by
//! [`ChannelBuilder::discovery_file`](crate::ChannelBuilder::discovery_file)
//! or by the environment variable [`DISCOVERY_ENV`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::protocol::status::Status;

/// The environment variable naming a static discovery file (TOML, see
/// [`StaticFile`](super::StaticFile)) that clients consult for names the
/// local registry does not know.
pub const DISCOVERY_ENV: &str = "SWITCHYARD_DISCOVERY";

/// What a resolver knows about one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Addresses, as URLs, in the order to try them within each transport
    /// (the client tries QUIC before TCP whatever the order here).
    pub addresses: Vec<String>,
    /// Who answered, for the selection's reason (e.g. the file's path).
    pub source: String,
}

/// A future returned by [`Resolver::resolve`].
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Resolved>, Status>> + Send + 'a>>;

/// Maps service names to addresses.
///
/// Implement it to plug in a discovery system of your own (Consul, etcd, a
/// control plane); `Ok(None)` means the name is unknown to this resolver.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The addresses serving `name`.
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a>;
}
