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
use crate::select::{ConnectError, Target};
use crate::transport::Endpoint;

/// The environment variable naming a static discovery file (TOML, see
/// [`StaticFile`](super::StaticFile)) that clients consult for names the
/// local registry does not know.
pub const DISCOVERY_ENV: &str = "SWITCHYARD_DISCOVERY";

/// What a resolver knows about one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Addresses, in the order to try them within each transport (the
    /// client tries QUIC before TCP whatever the order here).
    pub addresses: Vec<Endpoint>,
    /// Who answered, for the selection's reason (e.g. the file's path).
    pub source: String,
}

impl Resolved {
    /// An answer for `name` from `source`, parsing address URLs
    /// (`quic://…`, `tcp://…`, `unix://…`) as a resolver receives them:
    /// text without a scheme is skipped; an address that does not parse,
    /// or of a transport nothing connects to, is an error naming `source`,
    /// `name` and the address (FailedPrecondition as a [`Status`]).
    pub fn from_urls<S: AsRef<str>>(
        name: &str,
        urls: impl IntoIterator<Item = S>,
        source: impl Into<String>,
    ) -> Result<Self, ConnectError> {
        let source = source.into();
        let mut addresses = Vec::new();
        for url in urls {
            let url = url.as_ref();
            match Target::parse(url) {
                Ok(Target::Address(endpoint)) => addresses.push(endpoint),
                Ok(Target::Name(_)) => {}
                Err(status) => {
                    return Err(ConnectError::UnusableResolvedAddress {
                        source_name: source,
                        name: name.to_owned(),
                        address: url.to_owned(),
                        why: status.message().to_owned(),
                    });
                }
            }
        }
        Ok(Self { addresses, source })
    }

    /// The addresses as URLs, in order (as messages list them).
    pub fn urls(&self) -> Vec<String> {
        self.addresses.iter().map(Endpoint::to_string).collect()
    }
}

/// A future returned by [`Resolver::resolve`].
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Resolved>, Status>> + Send + 'a>>;

/// Maps service names to addresses.
///
/// Implement it to plug in a discovery system of your own (Consul, etcd, a
/// control plane); `Ok(None)` means the name is unknown to this resolver.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The addresses serving `name` ([`Resolved::from_urls`] parses them
    /// from text).
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::status::Code;

    #[test]
    fn urls_are_parsed_as_they_arrive() {
        let r = Resolved::from_urls("calc", ["tcp://h:1", "calc", "unix:///s"], "the resolver")
            .unwrap();
        assert_eq!(
            r.addresses,
            [Endpoint::Tcp("h:1".into()), Endpoint::Unix("/s".into())]
        );
        assert_eq!(r.urls(), ["tcp://h:1", "unix:///s"]);
        let err = Resolved::from_urls("calc", ["shm:///s"], "the resolver").unwrap_err();
        assert_eq!(Status::from(err).code(), Code::FailedPrecondition);
    }
}
