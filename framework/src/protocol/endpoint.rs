//! Where a peer can be reached, as a typed value parsed once from its URL.
//!
//! Every endpoint URL switchyard writes (registry entries, discovery files,
//! hellos, peer addresses in logs and the debug endpoint) is the `Display`
//! of an [`Endpoint`], and every URL it reads is parsed by its `FromStr`
//! where the text enters (decoding a hello, reading a registry entry or a
//! discovery file, a resolver's answer); nothing else slices URL strings.
//!
//! It lives here, beside the [`Hello`](super::hello::Hello) that carries
//! endpoints, because it is plain data with no runtime: the runtime's
//! `transport` module re-exports it and adds `Endpoint::transport`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A place a peer listens or is reached at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `unix:///path/to/socket`.
    Unix(PathBuf),
    /// `tcp://host:port` (a name or an address; `[v6]:port` too).
    Tcp(String),
    /// `quic://host:port[?pin=<SHA-256 of the server's certificate>][&name=<TLS name>]`.
    Quic {
        /// `host:port`.
        host_port: String,
        /// The pinned fingerprint, 64 lower-case hex digits, if given.
        pin: Option<String>,
        /// The name the server's certificate must carry (CA trust), when it
        /// is not the host: a replica found by DNS is dialled at its
        /// address and checked against the name it was found under.
        name: Option<String>,
    },
    /// `shm:///path/to/socket`: shared memory set up over the Unix socket
    /// at that path.
    Shm(PathBuf),
    /// `mqueue:///name`: a POSIX message queue (the name starts with `/`).
    MessageQueue(String),
    /// `pipe://parent/<pid>` or `pipe://child/<pid>`: inherited pipes.
    Pipe {
        /// Which end of the pair the other process is.
        side: PipeSide,
        /// That process's pid.
        pid: u32,
    },
    /// `memory://`: an in-process link.
    Memory,
}

/// Which relative a pipe endpoint reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PipeSide {
    /// The process that spawned this one.
    Parent,
    /// A process this one spawned.
    Child,
}

/// Why a string is not an [`Endpoint`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The text has no `scheme://`.
    #[error(
        "{text:?} is not an endpoint URL; write unix:///path, tcp://host:port or \
         quic://host:port[?pin=<fingerprint>]"
    )]
    NotAUrl {
        /// The text given.
        text: String,
    },
    /// The scheme names no transport.
    #[error(
        "{url}: unknown scheme {scheme}://; use unix:///path, tcp://host:port or \
         quic://host:port[?pin=<fingerprint>]"
    )]
    UnknownScheme {
        /// The URL given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A socket URL without a path.
    #[error(
        "{scheme}:// needs a socket path, e.g. {scheme}:///run/user/1000/switchyard/sockets/x.sock"
    )]
    MissingPath {
        /// `unix` or `shm`.
        scheme: &'static str,
    },
    /// A network URL without a port.
    #[error("{url} needs a port, e.g. {example}")]
    MissingPort {
        /// The URL given.
        url: String,
        /// A right one.
        example: &'static str,
    },
    /// A `pin=` that is not a SHA-256 fingerprint.
    #[error(
        "{url}: pin={value} is not a SHA-256 fingerprint; give the 64 hex digits the server \
         prints (ServerHandle::quic_fingerprint)"
    )]
    BadPin {
        /// The URL given.
        url: String,
        /// The value of `pin=`.
        value: String,
    },
    /// `name=` is not a DNS name.
    #[error(
        "{url}: name={value:?} is not a DNS name; give the name the server's certificate \
         carries, e.g. name=inventory.default.svc.cluster.local"
    )]
    BadName {
        /// The URL given.
        url: String,
        /// The value of `name=`.
        value: String,
    },
    /// A query parameter other than `pin=` and `name=`.
    #[error(
        "{url}: unknown parameter {pair:?}; the only ones are pin=<fingerprint> and \
         name=<TLS name>"
    )]
    UnknownParameter {
        /// The URL given.
        url: String,
        /// The parameter.
        pair: String,
    },
    /// An `mqueue://` URL whose name does not start with `/` or is empty.
    #[error("{url} needs a queue name after the slash, e.g. mqueue:///sy-1000-0a1b2c3d-calculator")]
    BadQueueName {
        /// The URL given.
        url: String,
    },
    /// A `pipe://` URL that is not `parent/<pid>` or `child/<pid>`.
    #[error("{url} is not a pipe end; write pipe://parent/<pid> or pipe://child/<pid>")]
    BadPipe {
        /// The URL given.
        url: String,
    },
    /// `memory://` followed by something.
    #[error("{url}: memory:// takes no address")]
    MemoryWithAddress {
        /// The URL given.
        url: String,
    },
}

impl Endpoint {
    /// The socket path of a `unix://` or `shm://` endpoint.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(path) | Self::Shm(path) => Some(path),
            _ => None,
        }
    }

    /// The URL without its query (`quic://host:port`, no pin), as messages
    /// name an address.
    pub fn address(&self) -> String {
        match self {
            Self::Quic { host_port, .. } => format!("quic://{host_port}"),
            other => other.to_string(),
        }
    }

    /// The scheme of `text` (`unix` in `unix:///x`), if it has one.
    pub fn scheme_of(text: &str) -> Option<&str> {
        text.trim().split_once("://").map(|(scheme, _)| scheme)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(host_port) => write!(f, "tcp://{host_port}"),
            Self::Quic {
                host_port,
                pin,
                name,
            } => {
                write!(f, "quic://{host_port}")?;
                let mut separator = '?';
                if let Some(pin) = pin {
                    write!(f, "{separator}pin={pin}")?;
                    separator = '&';
                }
                match name {
                    Some(name) => write!(f, "{separator}name={name}"),
                    None => Ok(()),
                }
            }
            Self::Shm(path) => write!(f, "shm://{}", path.display()),
            Self::MessageQueue(name) => write!(f, "mqueue://{name}"),
            Self::Pipe { side, pid } => {
                let side = match side {
                    PipeSide::Parent => "parent",
                    PipeSide::Child => "child",
                };
                write!(f, "pipe://{side}/{pid}")
            }
            Self::Memory => f.write_str("memory://"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let url = text.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(EndpointError::NotAUrl {
                text: text.to_owned(),
            });
        };
        match scheme {
            "unix" | "shm" => {
                if rest.is_empty() {
                    let scheme = if scheme == "unix" { "unix" } else { "shm" };
                    return Err(EndpointError::MissingPath { scheme });
                }
                let path = PathBuf::from(rest);
                Ok(if scheme == "unix" {
                    Self::Unix(path)
                } else {
                    Self::Shm(path)
                })
            }
            "tcp" => {
                let host_port = rest.trim_end_matches('/');
                if !has_port(host_port) {
                    return Err(EndpointError::MissingPort {
                        url: url.to_owned(),
                        example: "tcp://127.0.0.1:7000",
                    });
                }
                Ok(Self::Tcp(host_port.to_owned()))
            }
            "quic" => parse_quic(url, rest),
            "mqueue" => match rest.strip_prefix('/') {
                Some(name) if !name.is_empty() && !name.contains('/') => {
                    Ok(Self::MessageQueue(rest.to_owned()))
                }
                _ => Err(EndpointError::BadQueueName {
                    url: url.to_owned(),
                }),
            },
            "pipe" => {
                let bad = || EndpointError::BadPipe {
                    url: url.to_owned(),
                };
                let (side, pid) = rest.split_once('/').ok_or_else(bad)?;
                let side = match side {
                    "parent" => PipeSide::Parent,
                    "child" => PipeSide::Child,
                    _ => return Err(bad()),
                };
                let pid = pid.parse().map_err(|_| bad())?;
                Ok(Self::Pipe { side, pid })
            }
            "memory" if rest.is_empty() => Ok(Self::Memory),
            "memory" => Err(EndpointError::MemoryWithAddress {
                url: url.to_owned(),
            }),
            _ => Err(EndpointError::UnknownScheme {
                url: url.to_owned(),
                scheme: scheme.to_owned(),
            }),
        }
    }
}

/// Whether `host:port` (or `[v6]:port`) ends in a port number.
fn has_port(host_port: &str) -> bool {
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, port)| port),
        None => host_port.rsplit_once(':').map(|(_, port)| port),
    };
    port.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_quic(url: &str, rest: &str) -> Result<Endpoint, EndpointError> {
    let (host_port, query) = match rest.split_once('?') {
        Some((host_port, query)) => (host_port, Some(query)),
        None => (rest, None),
    };
    let host_port = host_port.trim_end_matches('/');
    if !has_port(host_port) {
        return Err(EndpointError::MissingPort {
            url: url.to_owned(),
            example: "quic://10.0.0.5:7443",
        });
    }
    let mut pin = None;
    let mut name = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("pin", value)) => {
                let digits = value.bytes().filter(|b| *b != b':').count();
                if digits != 64 || !value.bytes().all(|b| b == b':' || b.is_ascii_hexdigit()) {
                    return Err(EndpointError::BadPin {
                        url: url.to_owned(),
                        value: value.to_owned(),
                    });
                }
                pin = Some(value.replace(':', "").to_ascii_lowercase());
            }
            Some(("name", value)) => {
                let dns_name = !value.is_empty()
                    && value.len() <= 253
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
                if !dns_name {
                    return Err(EndpointError::BadName {
                        url: url.to_owned(),
                        value: value.to_owned(),
                    });
                }
                name = Some(value.to_ascii_lowercase());
            }
            _ => {
                return Err(EndpointError::UnknownParameter {
                    url: url.to_owned(),
                    pair: pair.to_owned(),
                });
            }
        }
    }
    Ok(Endpoint::Quic {
        host_port: host_port.to_owned(),
        pin,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_url() {
        let pin = "ab".repeat(32);
        for url in [
            "unix:///run/x.sock".to_owned(),
            "tcp://127.0.0.1:7000".to_owned(),
            "tcp://[::1]:7000".to_owned(),
            "quic://10.0.0.5:7443".to_owned(),
            format!("quic://h:1?pin={pin}"),
            format!("quic://10.0.0.5:7443?pin={pin}&name=inventory.test"),
            "quic://10.0.0.5:7443?name=inventory.test".to_owned(),
            "shm:///run/x.sock".to_owned(),
            "mqueue:///sy-1000-0a1b2c3d-calculator".to_owned(),
            "pipe://parent/42".to_owned(),
            "pipe://child/7".to_owned(),
            "memory://".to_owned(),
        ] {
            let endpoint: Endpoint = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(endpoint.to_string(), url);
        }
    }

    #[test]
    fn the_variant_matches_the_scheme() {
        assert_eq!(
            "unix:///a/b.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/a/b.sock".into())
        );
        assert_eq!(
            "tcp://h:9/".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("h:9".into())
        );
        assert_eq!(
            "pipe://child/7".parse::<Endpoint>().unwrap(),
            Endpoint::Pipe {
                side: PipeSide::Child,
                pid: 7
            }
        );
        let quic: Endpoint = format!("quic://h:1?pin={}", "AB:".repeat(31) + "AB")
            .parse()
            .unwrap();
        assert_eq!(
            quic,
            Endpoint::Quic {
                host_port: "h:1".into(),
                pin: Some("ab".repeat(32)),
                name: None,
            }
        );
        assert_eq!(quic.address(), "quic://h:1");
        assert_eq!(
            Endpoint::Shm("/s".into()).socket_path(),
            Some(Path::new("/s"))
        );
        assert_eq!(Endpoint::Tcp("h:1".into()).socket_path(), None);
    }

    #[test]
    fn a_wrong_url_says_what_is_wrong_and_what_a_right_one_looks_like() {
        for (bad, says) in [
            ("calculator", "is not an endpoint URL; write unix:///path"),
            ("ftp://x", "unknown scheme ftp://"),
            ("unix://", "unix:// needs a socket path, e.g. unix:///"),
            (
                "tcp://host",
                "tcp://host needs a port, e.g. tcp://127.0.0.1:7000",
            ),
            (
                "quic://h",
                "quic://h needs a port, e.g. quic://10.0.0.5:7443",
            ),
            ("quic://[::1]", "needs a port"),
            ("quic://h:", "needs a port"),
            ("quic://h:1?pin=12", "not a SHA-256 fingerprint"),
            ("quic://h:1?sni=x", "unknown parameter \"sni=x\""),
            ("mqueue://q", "needs a queue name"),
            ("pipe://uncle/1", "pipe://parent/<pid>"),
            ("pipe://child/x", "not a pipe end"),
            ("memory://x", "takes no address"),
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_scheme_of_a_url() {
        assert_eq!(Endpoint::scheme_of(" tcp://h:1"), Some("tcp"));
        assert_eq!(Endpoint::scheme_of("name"), None);
    }
}
