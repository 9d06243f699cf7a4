//! What a caller asked to connect to: a name, or an address parsed once
//! into an [`Endpoint`].

use crate::protocol::status::Status;
use crate::transport::{Endpoint, Transport};

/// What a caller asked to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A name to look up (parent pipes, local registry, resolver).
    Name(String),
    /// An address the caller wrote: a [`Endpoint::Unix`],
    /// [`Endpoint::Tcp`] or [`Endpoint::Quic`].
    Address(Endpoint),
}

impl Target {
    /// Parses `calculator`, `unix:///path`, `tcp://host:port` or
    /// `quic://host:port[?pin=<fingerprint>]`; other schemes and malformed
    /// addresses are InvalidArgument saying what is wrong.
    pub fn parse(target: &str) -> Result<Self, Status> {
        let target = target.trim();
        let Some(scheme) = Endpoint::scheme_of(target) else {
            return Ok(Self::Name(target.to_owned()));
        };
        check_scheme(target, scheme)?;
        target
            .parse()
            .map(Self::Address)
            .map_err(|err: crate::transport::EndpointError| {
                Status::invalid_argument(err.to_string())
            })
    }

    /// The address `endpoint` as a target (a resolver's answer, parsed
    /// already): InvalidArgument, as [`parse`](Self::parse) says it, for an
    /// endpoint of a transport nothing connects to.
    pub fn of_endpoint(endpoint: &Endpoint) -> Result<Self, Status> {
        check_scheme(&endpoint.to_string(), endpoint.transport().as_str())?;
        Ok(Self::Address(endpoint.clone()))
    }
}

/// Refuses a `scheme` (of `target`) nothing connects to, saying why.
fn check_scheme(target: &str, scheme: &str) -> Result<(), Status> {
    if !matches!(scheme, "unix" | "tcp" | "quic") {
        let known = Transport::from_name(scheme).filter(|t| !t.is_available());
        let hint = match known {
            Some(t) => format!("the {t} transport is not implemented in this version"),
            None => "use a service name, unix:///path or tcp://host:port".to_owned(),
        };
        return Err(Status::invalid_argument(format!(
            "cannot connect to {target}: {hint}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::status::Code;

    #[test]
    fn names_and_addresses_parse() {
        assert_eq!(
            Target::parse(" calculator ").unwrap(),
            Target::Name("calculator".into())
        );
        assert_eq!(
            Target::parse("unix:///a/b.sock").unwrap(),
            Target::Address(Endpoint::Unix("/a/b.sock".into()))
        );
        assert_eq!(
            Target::parse("tcp://127.0.0.1:9").unwrap(),
            Target::Address(Endpoint::Tcp("127.0.0.1:9".into()))
        );
        let pin = "ab".repeat(32);
        assert_eq!(
            Target::parse(&format!("quic://h:1?pin={}", pin.to_uppercase())).unwrap(),
            Target::Address(Endpoint::Quic {
                host_port: "h:1".into(),
                pin: Some(pin.clone()),
                name: None,
            })
        );
        assert_eq!(
            Target::parse("quic://[::1]:7443").unwrap(),
            Target::Address(Endpoint::Quic {
                host_port: "[::1]:7443".into(),
                pin: None,
                name: None,
            })
        );
    }

    #[test]
    fn a_bad_target_is_invalid_argument_saying_why() {
        for (bad, says) in [
            (
                "tcp://host",
                "tcp://host needs a port, e.g. tcp://127.0.0.1:7000",
            ),
            ("unix://", "unix:// needs a socket path"),
            ("quic://h", "needs a port"),
            ("quic://[::1]", "needs a port"),
            ("quic://h:", "needs a port"),
            ("quic://h:1?pin=12", "not a SHA-256 fingerprint"),
            ("quic://h:1?sni=x", "unknown parameter"),
            (
                "ftp://x",
                "cannot connect to ftp://x: use a service name, unix:///path or tcp://host:port",
            ),
            ("shm:///x.sock", "cannot connect to shm:///x.sock"),
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(err.message().contains(says), "{bad}: {err}");
        }
    }
}
