//! Finding services beyond this host: a [`Resolver`] maps a service name to
//! the replicas that serve it, each with its addresses (`quic://…`,
//! `tcp://…`, `unix://…`). Host names in those addresses are resolved by DNS
//! when connecting, and every IP address a name has is tried in turn.
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

/// What a resolver knows about one replica of a name: one server, reached
/// at any of its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The replica's addresses, in the order to try them within each
    /// transport (the client tries QUIC before TCP whatever the order here).
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
    Pin<Box<dyn Future<Output = Result<Option<Vec<Resolved>>, Status>> + Send + 'a>>;

/// A future returned by [`Resolver::changed`].
pub type ChangedFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Maps service names to the replicas that serve them.
///
/// Implement it to plug in a discovery system of your own (Consul, a
/// control plane). A channel asks again every
/// [`resolve_interval`](crate::ChannelBuilder::resolve_interval) and
/// whenever no replica it knows answers, and follows what changed: new
/// replicas get connections, vanished ones are dropped once their calls
/// finish.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The replicas serving `name`, one [`Resolved`] each
    /// ([`Resolved::from_urls`] parses one from text). `Ok(None)`: the name
    /// is unknown to this resolver; `Ok(Some(vec![]))`: known, with no
    /// replica now. An `Err` (the resolver's backend is unreachable) makes
    /// a channel keep the replicas it knew, and say so.
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a>;

    /// What the last [`resolve`](Self::resolve) of `name` left out and
    /// why (records that are not usable endpoints), for the debug views;
    /// nothing by default.
    fn skipped(&self, name: &str) -> Vec<String> {
        let _ = name;
        Vec::new()
    }

    /// For a resolver that is told of changes (a watch): completes when
    /// `name`'s replicas may have changed, and the channel then looks it
    /// up at once instead of at its next
    /// [`resolve_interval`](crate::ChannelBuilder::resolve_interval).
    /// `None` (the default): no such news; channels ask at every interval.
    /// The future should complete only after something changed since it
    /// was made (a channel makes the next one before each lookup); channels
    /// look up at most once per 20 ms whatever it does.
    fn changed<'a>(&'a self, name: &'a str) -> Option<ChangedFuture<'a>> {
        let _ = name;
        None
    }
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
