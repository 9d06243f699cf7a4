//! Transport selection: the one place that knows every transport.
//!
//! Input: what the caller named (a service name or a URL), what the registry
//! says about it, and any override. Output: a [`Selection`], the transport
//! with the reason it won and why each alternative lost, kept on the
//! connection for [`selection()`](crate::Channel::selection) and the debug
//! endpoint. An override that cannot work is an error saying why, never a
//! silent fallback.

use std::fmt;
use std::path::PathBuf;

pub use crate::transport::Transport;

use crate::discovery::Entry;
use crate::protocol::hello::{HostIdentity, Locality};
use crate::protocol::status::Status;

/// The environment variable that forces a transport for every connection a
/// process opens.
pub const TRANSPORT_ENV: &str = "SWITCHYARD_TRANSPORT";

/// Which transport a connection uses and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The transport chosen.
    pub transport: Transport,
    /// Why it was chosen, e.g. "same host: ...".
    pub reason: String,
    /// The alternatives considered and why each was not used.
    pub rejected: Vec<(Transport, String)>,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.transport, self.reason)?;
        if !self.rejected.is_empty() {
            f.write_str(" (not ")?;
            for (i, (transport, why)) in self.rejected.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "{transport}: {why}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// What a caller asked to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A name to look up in the local registry.
    Name(String),
    /// `unix:///path/to/socket`.
    Unix(PathBuf),
    /// `tcp://host:port`.
    Tcp(String),
    /// `quic://host:port`, optionally `?pin=<SHA-256 of the server's
    /// certificate>`.
    Quic {
        /// `host:port`.
        host_port: String,
        /// The pinned fingerprint, 64 hex digits, if the address carries one.
        pin: Option<String>,
    },
}

impl Target {
    /// Parses `calculator`, `unix:///path`, `tcp://host:port` or
    /// `quic://host:port[?pin=<fingerprint>]`.
    pub fn parse(target: &str) -> Result<Self, Status> {
        let target = target.trim();
        if let Some(path) = target.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(Status::invalid_argument(
                    "unix:// needs a socket path, e.g. unix:///run/user/1000/switchyard/sockets/x.sock",
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(host_port) = target.strip_prefix("tcp://") {
            if !has_port(host_port.trim_end_matches('/')) {
                return Err(Status::invalid_argument(format!(
                    "tcp://{host_port} needs a port, e.g. tcp://127.0.0.1:7000"
                )));
            }
            return Ok(Self::Tcp(host_port.trim_end_matches('/').to_owned()));
        }
        if let Some(rest) = target.strip_prefix("quic://") {
            return parse_quic(target, rest);
        }
        if let Some((scheme, _)) = target.split_once("://") {
            let known = Transport::from_name(scheme).filter(|t| !t.is_available());
            let hint = match known {
                Some(t) => format!("the {t} transport is not implemented in this version"),
                None => "use a service name, unix:///path or tcp://host:port".to_owned(),
            };
            return Err(Status::invalid_argument(format!(
                "cannot connect to {target}: {hint}"
            )));
        }
        Ok(Self::Name(target.to_owned()))
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

fn parse_quic(target: &str, rest: &str) -> Result<Target, Status> {
    let (host_port, query) = match rest.split_once('?') {
        Some((host_port, query)) => (host_port, Some(query)),
        None => (rest, None),
    };
    let host_port = host_port.trim_end_matches('/');
    if !has_port(host_port) {
        return Err(Status::invalid_argument(format!(
            "{target} needs a port, e.g. quic://10.0.0.5:7443"
        )));
    }
    let mut pin = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("pin", value)) => {
                let digits = value.bytes().filter(|b| *b != b':').count();
                if digits != 64 || !value.bytes().all(|b| b == b':' || b.is_ascii_hexdigit()) {
                    return Err(Status::invalid_argument(format!(
                        "{target}: pin={value} is not a SHA-256 fingerprint; give the 64 hex \
                         digits the server prints (ServerHandle::quic_fingerprint)"
                    )));
                }
                pin = Some(value.replace(':', "").to_ascii_lowercase());
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "{target}: unknown parameter {pair:?}; the only one is pin=<fingerprint>"
                )));
            }
        }
    }
    Ok(Target::Quic {
        host_port: host_port.to_owned(),
        pin,
    })
}

/// An override and where it came from, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forced {
    /// The transport demanded.
    pub transport: Transport,
    /// Who demanded it, e.g. `SWITCHYARD_TRANSPORT=tcp`.
    pub source: &'static str,
}

/// Reads [`TRANSPORT_ENV`]; unset or empty is `None`, an unknown name an
/// error listing the valid ones.
pub fn forced_from_env() -> Result<Option<Forced>, Status> {
    let Ok(value) = std::env::var(TRANSPORT_ENV) else {
        return Ok(None);
    };
    if value.trim().is_empty() {
        return Ok(None);
    }
    let transport = Transport::from_name(&value).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{TRANSPORT_ENV}={value} is not a transport; use one of {} (pipes, memory maps and \
             message queues are chosen by switchyard where they apply, and cannot be demanded)",
            forceable_names()
        ))
    })?;
    Ok(Some(Forced {
        transport,
        source: "SWITCHYARD_TRANSPORT",
    }))
}

/// The transports a connection can be made to take, as a list for messages.
fn forceable_names() -> String {
    [
        Transport::Shm,
        Transport::Unix,
        Transport::Tcp,
        Transport::Quic,
    ]
    .iter()
    .filter(|t| t.is_available())
    .map(|t| t.as_str())
    .collect::<Vec<_>>()
    .join(", ")
}

/// Where to connect, as decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Shared memory, set up over the Unix socket at this path.
    Shm(PathBuf),
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
    /// A QUIC `host:port`, with the fingerprint to pin if known.
    Quic {
        /// `host:port`.
        host_port: String,
        /// The fingerprint to pin (hex), if the address carried one.
        pin: Option<String>,
        /// Whether the caller wrote the pin (in the target it connected
        /// to), rather than a registry entry or resolver: only the caller's
        /// own pin outranks the channel's configured trust.
        caller_pin: bool,
    },
}

impl Endpoint {
    /// The endpoint as a URL, for messages.
    pub fn url(&self) -> String {
        match self {
            Self::Shm(path) => format!("shm over unix://{}", path.display()),
            Self::Unix(path) => format!("unix://{}", path.display()),
            Self::Tcp(host_port) => format!("tcp://{host_port}"),
            Self::Quic { host_port, .. } => format!("quic://{host_port}"),
        }
    }

    /// The transport it uses.
    pub fn transport(&self) -> Transport {
        match self {
            Self::Shm(_) => Transport::Shm,
            Self::Unix(_) => Transport::Unix,
            Self::Tcp(_) => Transport::Tcp,
            Self::Quic { .. } => Transport::Quic,
        }
    }
}

/// A decision: where to connect and the selection to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Why.
    pub selection: Selection,
}

fn unusable_here() -> [(Transport, String); 4] {
    [
        (Transport::Shm, "shared memory needs Linux memfds"),
        (
            Transport::Mmap,
            "not a connection of its own: bodies over the bulk threshold travel as mapped \
             regions inside a shm connection",
        ),
        (
            Transport::Pipe,
            "the server is not this process's parent (pipes reach only a parent or child)",
        ),
        (
            Transport::MessageQueue,
            "carries only one-way calls (see Channel::oneway_selection)",
        ),
    ]
    .map(|(t, why)| (t, why.to_owned()))
}

/// Decides how to reach `target`. `entry` is the registry's entry when the
/// target is a name (the caller looked it up in `registry_dir`; `None` if
/// nothing is published under it).
pub fn plan(
    target: &Target,
    entry: Option<&Entry>,
    registry_dir: &std::path::Path,
    forced: Option<Forced>,
) -> Result<Plan, Status> {
    let check_forced = |chosen: Transport, what: &str| match forced {
        Some(f) if f.transport != chosen => Err(Status::failed_precondition(format!(
            "{} demands {}, but {what} can only be reached over {chosen}; \
             drop the override or connect to an address of that transport",
            f.source, f.transport
        ))),
        _ => Ok(()),
    };
    match target {
        Target::Unix(path) => {
            check_forced(Transport::Unix, &format!("unix://{}", path.display()))?;
            Ok(Plan {
                endpoint: Endpoint::Unix(path.clone()),
                selection: Selection {
                    transport: Transport::Unix,
                    reason: forced_or(forced, "the caller named a unix:// address"),
                    rejected: Vec::new(),
                },
            })
        }
        Target::Tcp(host_port) => {
            check_forced(Transport::Tcp, &format!("tcp://{host_port}"))?;
            Ok(Plan {
                endpoint: Endpoint::Tcp(host_port.clone()),
                selection: Selection {
                    transport: Transport::Tcp,
                    reason: forced_or(forced, "the caller named a tcp:// address"),
                    rejected: Vec::new(),
                },
            })
        }
        Target::Quic { host_port, pin } => {
            check_forced(Transport::Quic, &format!("quic://{host_port}"))?;
            Ok(Plan {
                endpoint: Endpoint::Quic {
                    host_port: host_port.clone(),
                    pin: pin.clone(),
                    caller_pin: true,
                },
                selection: Selection {
                    transport: Transport::Quic,
                    reason: forced_or(forced, "the caller named a quic:// address"),
                    rejected: Vec::new(),
                },
            })
        }
        Target::Name(name) => {
            let entry = entry.ok_or_else(|| {
                Status::not_found(format!(
                    "no live process publishes {name:?} in the local registry ({}); start the \
                     server, check that both sides use the same SWITCHYARD_RUNTIME_DIR, or \
                     connect to an address such as tcp://host:port",
                    registry_dir.display()
                ))
            })?;
            plan_for_entry(name, entry, forced)
        }
    }
}

fn forced_or(forced: Option<Forced>, reason: &str) -> String {
    match forced {
        Some(f) => format!("{reason} ({}={})", f.source, f.transport),
        None => reason.to_owned(),
    }
}

fn plan_for_entry(name: &str, entry: &Entry, forced: Option<Forced>) -> Result<Plan, Status> {
    let unix = entry
        .endpoint("unix")
        .map(|url| PathBuf::from(&url["unix://".len()..]));
    let tcp = entry
        .endpoint("tcp")
        .map(|url| url["tcp://".len()..].to_owned());
    let quic = entry
        .endpoint("quic")
        .and_then(|url| match Target::parse(url) {
            Ok(Target::Quic { host_port, pin }) => Some(Endpoint::Quic {
                host_port,
                pin,
                caller_pin: false,
            }),
            _ => None,
        });
    let published = format!(
        "{name:?} is published in the local registry by pid {}",
        entry.pid
    );
    if let Some(f) = forced {
        let endpoint = match f.transport {
            Transport::Unix => unix.map(Endpoint::Unix),
            Transport::Shm => unix.map(Endpoint::Shm),
            Transport::Tcp => tcp.map(Endpoint::Tcp),
            Transport::MessageQueue => {
                return Err(Status::failed_precondition(format!(
                    "{}=mqueue cannot work for a connection: message queues carry only one-way \
                     calls, and those take the server's queue by themselves on the same host; \
                     drop the override",
                    f.source
                )));
            }
            Transport::Pipe => {
                return Err(Status::failed_precondition(format!(
                    "{}=pipe cannot work: {published}, and pipes reach only a parent or child \
                     process",
                    f.source
                )));
            }
            Transport::Mmap => {
                return Err(Status::failed_precondition(format!(
                    "{}=mmap cannot work for a connection: mapped regions carry large bodies \
                     inside a shm connection; demand shm instead",
                    f.source
                )));
            }
            Transport::Quic => quic.clone(),
            other if !other.is_available() => {
                return Err(Status::failed_precondition(format!(
                    "{}={other} cannot work: the {other} transport is not implemented in this \
                     version; use unix or tcp",
                    f.source
                )));
            }
            _ => None,
        };
        let endpoint = endpoint.ok_or_else(|| {
            Status::failed_precondition(format!(
                "{}={} cannot work: {published} with endpoints [{}] and no {} endpoint; \
                 start the server with that transport enabled or drop the override",
                f.source,
                f.transport,
                entry.endpoints.join(", "),
                f.transport
            ))
        })?;
        let rejected = Transport::ALL
            .into_iter()
            .filter(|t| *t != f.transport && *t != Transport::Memory && t.is_available())
            .map(|t| (t, format!("{}={} overrides it", f.source, f.transport)))
            .collect();
        return Ok(Plan {
            endpoint,
            selection: Selection {
                transport: f.transport,
                reason: format!("forced by {}={}; {published}", f.source, f.transport),
                rejected,
            },
        });
    }
    let mut rejected = unusable_here().to_vec();
    if quic.is_some() {
        rejected.push((
            Transport::Quic,
            "the server is on this host: a local transport is faster, and QUIC's encryption \
             protects nothing here"
                .into(),
        ));
    }
    if let Some(path) = unix {
        let local = crate::sys::host_identity();
        let same_boot = entry.boot_id.is_empty() || entry.boot_id == local.boot_id;
        let same_ipc = entry.ipc_ns != 0 && entry.ipc_ns == local.ipc_ns;
        if Transport::Shm.is_available() {
            rejected.retain(|(t, _)| *t != Transport::Shm);
            if same_boot && same_ipc {
                rejected.push((
                    Transport::Unix,
                    "shared memory is faster on the same host; the Unix socket only sets it up"
                        .into(),
                ));
                if tcp.is_some() {
                    rejected.push((
                        Transport::Tcp,
                        "shared memory is faster on the same host".into(),
                    ));
                }
                return Ok(Plan {
                    endpoint: Endpoint::Shm(path),
                    selection: Selection {
                        transport: Transport::Shm,
                        reason: format!(
                            "same host: boot id and IPC namespace match; {published}; shared \
                             memory is the fastest track"
                        ),
                        rejected,
                    },
                });
            }
            rejected.push((
                Transport::Shm,
                if entry.ipc_ns == 0 {
                    "the registry entry does not say which IPC namespace the server is in".into()
                } else {
                    "same host (boot id matches) but a different IPC namespace".into()
                },
            ));
        }
        if tcp.is_some() {
            rejected.push((
                Transport::Tcp,
                "a Unix socket is faster on the same host".into(),
            ));
        }
        return Ok(Plan {
            endpoint: Endpoint::Unix(path),
            selection: Selection {
                transport: Transport::Unix,
                reason: format!(
                    "same host: {published}; a Unix socket is the fastest track it offers"
                ),
                rejected,
            },
        });
    }
    if let (None, Some(endpoint)) = (&tcp, quic) {
        rejected.retain(|(t, _)| *t != Transport::Quic);
        rejected.push((
            Transport::Unix,
            "the server publishes no Unix socket".into(),
        ));
        return Ok(Plan {
            endpoint,
            selection: Selection {
                transport: Transport::Quic,
                reason: format!("{published}; quic is the only endpoint it offers"),
                rejected,
            },
        });
    }
    if let Some(host_port) = tcp {
        rejected.push((
            Transport::Unix,
            "the server publishes no Unix socket".into(),
        ));
        return Ok(Plan {
            endpoint: Endpoint::Tcp(host_port),
            selection: Selection {
                transport: Transport::Tcp,
                reason: format!("{published}; tcp is the only endpoint it offers"),
                rejected,
            },
        });
    }
    Err(Status::unavailable(format!(
        "{published} but lists no endpoint this client can use ({}); upgrade the client",
        entry.endpoints.join(", ")
    )))
}

/// Decides how to reach a name a [`Resolver`](crate::discovery::Resolver)
/// answered for: one plan per usable address, to try in order. Unix
/// sockets first (a resolver may know local ones), then QUIC, then TCP;
/// within a transport, in the resolver's order. An override keeps only its
/// transport's addresses.
pub fn plan_resolved(
    name: &str,
    resolved: &crate::discovery::Resolved,
    forced: Option<Forced>,
) -> Result<Vec<Plan>, Status> {
    let mut endpoints = Vec::new();
    for address in &resolved.addresses {
        let endpoint = match Target::parse(address).map_err(|status| {
            Status::failed_precondition(format!(
                "{} gives {name:?} the address {address:?}, which is unusable: {}",
                resolved.source,
                status.message()
            ))
        })? {
            Target::Unix(path) => Endpoint::Unix(path),
            Target::Tcp(host_port) => Endpoint::Tcp(host_port),
            Target::Quic { host_port, pin } => Endpoint::Quic {
                host_port,
                pin,
                caller_pin: false,
            },
            Target::Name(_) => continue,
        };
        endpoints.push(endpoint);
    }
    let rank = |e: &Endpoint| match e.transport() {
        Transport::Shm | Transport::Unix => 0,
        Transport::Quic => 1,
        _ => 2,
    };
    endpoints.sort_by_key(rank);
    if let Some(f) = forced {
        endpoints.retain(|e| e.transport() == f.transport);
        if endpoints.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{}={} cannot work: {} gives {name:?} no {} address (it lists [{}]); add one or \
                 drop the override",
                f.source,
                f.transport,
                resolved.source,
                f.transport,
                resolved.addresses.join(", ")
            )));
        }
    }
    let listed = format!(
        "{} gives {name:?} [{}]",
        resolved.source,
        resolved.addresses.join(", ")
    );
    Ok(endpoints
        .into_iter()
        .map(|endpoint| {
            let transport = endpoint.transport();
            let why = match (forced, transport) {
                (Some(f), _) => format!("forced by {}={}", f.source, f.transport),
                (None, Transport::Quic) => {
                    "quic is the fastest track across machines (encrypted, one stream per call)"
                        .to_owned()
                }
                (None, Transport::Unix) => "a Unix socket is the fastest track it lists".into(),
                (None, _) => format!("{transport} is the fastest track it lists"),
            };
            Plan {
                selection: Selection {
                    transport,
                    reason: format!("{listed}; {why}"),
                    rejected: Vec::new(),
                },
                endpoint,
            }
        })
        .collect())
}

/// Adds what the handshake revealed about where the peer runs to the
/// selection's reason.
pub fn note_locality(selection: &mut Selection, local: &HostIdentity, peer: &HostIdentity) {
    let locality = local.locality(peer);
    let note = match (selection.transport, locality) {
        (Transport::Tcp, Locality::SameHostSameIpc | Locality::SameHostOtherIpc) => {
            format!(
                "; the handshake shows the peer is on this host ({})",
                locality.describe()
            )
        }
        (Transport::Tcp | Transport::Quic, Locality::OtherHost) => {
            format!("; {}", locality.describe())
        }
        (Transport::Quic, Locality::SameHostSameIpc | Locality::SameHostOtherIpc) => {
            format!(
                "; the handshake shows the peer is on this host ({})",
                locality.describe()
            )
        }
        _ => return,
    };
    selection.reason.push_str(&note);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::status::Code;

    fn entry(endpoints: &[&str]) -> Entry {
        Entry {
            name: "calculator".into(),
            pid: 42,
            start_time: None,
            boot_id: String::new(),
            ipc_ns: 0,
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            services: vec!["Calculator".into()],
            published_ms: 0,
            debug: None,
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("calculator").unwrap(),
            Target::Name("calculator".into())
        );
        assert_eq!(
            Target::parse("unix:///a/b.sock").unwrap(),
            Target::Unix("/a/b.sock".into())
        );
        assert_eq!(
            Target::parse("tcp://127.0.0.1:9").unwrap(),
            Target::Tcp("127.0.0.1:9".into())
        );
        assert_eq!(
            Target::parse("tcp://host").unwrap_err().code(),
            Code::InvalidArgument
        );
        let pin = "ab".repeat(32);
        assert_eq!(
            Target::parse(&format!("quic://h:1?pin={}", pin.to_uppercase())).unwrap(),
            Target::Quic {
                host_port: "h:1".into(),
                pin: Some(pin.clone())
            }
        );
        assert_eq!(
            Target::parse("quic://[::1]:7443").unwrap(),
            Target::Quic {
                host_port: "[::1]:7443".into(),
                pin: None
            }
        );
        for (bad, says) in [
            ("quic://h", "needs a port"),
            ("quic://[::1]", "needs a port"),
            ("quic://h:", "needs a port"),
            ("quic://h:1?pin=12", "not a SHA-256 fingerprint"),
            ("quic://h:1?sni=x", "unknown parameter"),
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(err.message().contains(says), "{bad}: {err}");
        }
        assert!(Target::parse("ftp://x").is_err());
    }

    #[test]
    fn a_local_name_picks_unix_and_says_why() {
        let e = entry(&["unix:///s.sock", "tcp://127.0.0.1:5"]);
        let plan = plan(
            &Target::Name("calculator".into()),
            Some(&e),
            "/rt".as_ref(),
            None,
        )
        .unwrap();
        assert_eq!(plan.endpoint, Endpoint::Unix("/s.sock".into()));
        assert_eq!(plan.selection.transport, Transport::Unix);
        assert!(
            plan.selection.reason.starts_with("same host"),
            "{}",
            plan.selection
        );
        assert!(
            plan.selection
                .rejected
                .iter()
                .any(|(t, why)| *t == Transport::Tcp && why.contains("faster"))
        );
    }

    #[test]
    fn forcing_tcp_uses_the_tcp_endpoint_or_explains() {
        let forced = Some(Forced {
            transport: Transport::Tcp,
            source: "SWITCHYARD_TRANSPORT",
        });
        let e = entry(&["unix:///s.sock", "tcp://127.0.0.1:5"]);
        let plan = plan(
            &Target::Name("calculator".into()),
            Some(&e),
            "/rt".as_ref(),
            forced,
        )
        .unwrap();
        assert_eq!(plan.endpoint, Endpoint::Tcp("127.0.0.1:5".into()));
        assert!(plan.selection.reason.contains("SWITCHYARD_TRANSPORT=tcp"));
        let unix_only = entry(&["unix:///s.sock"]);
        let err = super::plan(
            &Target::Name("calculator".into()),
            Some(&unix_only),
            "/rt".as_ref(),
            forced,
        )
        .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("no tcp endpoint"), "{err}");
        let quic = Some(Forced {
            transport: Transport::Quic,
            source: "SWITCHYARD_TRANSPORT",
        });
        let err = super::plan(
            &Target::Name("calculator".into()),
            Some(&e),
            "/rt".as_ref(),
            quic,
        )
        .unwrap_err();
        assert!(err.message().contains("no quic endpoint"), "{err}");
        let with_quic = entry(&[
            "unix:///s.sock",
            &format!("quic://10.0.0.1:7443?pin={}", "cd".repeat(32)),
        ]);
        let plan = super::plan(
            &Target::Name("calculator".into()),
            Some(&with_quic),
            "/rt".as_ref(),
            quic,
        )
        .unwrap();
        assert_eq!(
            plan.endpoint,
            Endpoint::Quic {
                host_port: "10.0.0.1:7443".into(),
                pin: Some("cd".repeat(32)),
                caller_pin: false,
            }
        );
        // Shared memory is set up over the Unix socket the entry lists.
        let shm = Some(Forced {
            transport: Transport::Shm,
            source: "SWITCHYARD_TRANSPORT",
        });
        let plan = super::plan(
            &Target::Name("calculator".into()),
            Some(&e),
            "/rt".as_ref(),
            shm,
        )
        .unwrap();
        assert_eq!(plan.endpoint, Endpoint::Shm("/s.sock".into()));
        let err =
            super::plan(&Target::Unix("/x".into()), None, "/rt".as_ref(), forced).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[test]
    fn an_unknown_name_is_not_found() {
        let err = plan(&Target::Name("nope".into()), None, "/rt".as_ref(), None).unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("\"nope\""), "{err}");
    }

    #[test]
    fn tcp_notes_a_same_host_peer() {
        let mut selection = Selection {
            transport: Transport::Tcp,
            reason: "named".into(),
            rejected: vec![],
        };
        let host = HostIdentity {
            boot_id: "b".into(),
            ipc_ns: 1,
            ..HostIdentity::default()
        };
        note_locality(&mut selection, &host, &host);
        assert!(
            selection.reason.contains("boot id and IPC namespace match"),
            "{}",
            selection.reason
        );
    }

    #[test]
    fn resolved_names_try_quic_before_tcp_and_overrides_filter() {
        let resolved = crate::discovery::Resolved {
            addresses: vec![
                "tcp://10.0.0.5:7000".into(),
                "quic://10.0.0.5:7443".into(),
                "quic://10.0.0.6:7443".into(),
            ],
            source: "the discovery file /d.toml".into(),
        };
        let plans = plan_resolved("calc", &resolved, None).unwrap();
        let order: Vec<String> = plans.iter().map(|p| p.endpoint.url()).collect();
        assert_eq!(
            order,
            [
                "quic://10.0.0.5:7443",
                "quic://10.0.0.6:7443",
                "tcp://10.0.0.5:7000"
            ]
        );
        assert!(
            plans[0].selection.reason.contains("/d.toml"),
            "{}",
            plans[0].selection
        );
        let tcp = Some(Forced {
            transport: Transport::Tcp,
            source: "SWITCHYARD_TRANSPORT",
        });
        let plans = plan_resolved("calc", &resolved, tcp).unwrap();
        assert_eq!(plans.len(), 1);
        assert!(
            plans[0].selection.reason.contains("forced"),
            "{}",
            plans[0].selection
        );
        let unix = Some(Forced {
            transport: Transport::Unix,
            source: "SWITCHYARD_TRANSPORT",
        });
        let err = plan_resolved("calc", &resolved, unix).unwrap_err();
        assert!(err.message().contains("no unix address"), "{err}");
    }
}
