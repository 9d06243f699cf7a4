//! The connection decision: which transport reaches a target, as candidates
//! in the order to try them.

use super::facts::{HostFacts, Known};
use super::reason::{Listing, Published, Reason};
use super::rejection::Rejection;
use super::target::Target;
use super::{Decision, Forced, Plan, Selection};
use crate::discovery::{Entry, Resolved};
use crate::protocol::status::Status;
use crate::transport::{Endpoint, Transport};

/// Decides how to reach `target`, from what is `known` of it, the facts of
/// this host and the override in force.
///
/// - An address is reached over its own transport (an override of another
///   is FailedPrecondition).
/// - A name not yet looked up goes to the parent over inherited pipes when
///   the parent serves it (unless another transport is demanded; demanding
///   `pipe` without such a parent is FailedPrecondition); else it must be
///   looked up ([`Decision::LookUp`]).
/// - A registry entry: shared memory when boot id and IPC namespace match,
///   else its Unix socket, else QUIC when that is all it offers, else TCP;
///   an override takes its transport's endpoint or fails saying why.
/// - A resolver's answer: one candidate per usable address, Unix first,
///   then QUIC, then TCP (within a transport in the resolver's order); an
///   override keeps only its transport's.
/// - Nothing known: NotFound, saying where the name was looked for.
pub fn connect(
    target: &Target,
    known: Known<'_>,
    facts: &HostFacts,
    forced: Option<Forced>,
) -> Result<Decision, Status> {
    let name = match target {
        Target::Address(endpoint) => {
            return Ok(Decision::Connect(vec![address_plan(endpoint, forced)?]));
        }
        Target::Name(name) => name,
    };
    match known {
        Known::NotLookedUp => parent_or_lookup(name, facts, forced),
        Known::Entry(entry) => Ok(Decision::Connect(vec![entry_plan(
            name, entry, facts, forced,
        )?])),
        Known::Resolved(resolved) => Ok(Decision::Connect(resolved_plans(name, resolved, forced)?)),
        Known::Nothing {
            registry_dir,
            consulted,
        } => Err(Status::not_found(format!(
            "no live process publishes {name:?} in the local registry ({}), and {consulted}; \
             start the server, check that both sides use the same SWITCHYARD_RUNTIME_DIR, add \
             the name to a discovery file, or connect to an address such as \
             quic://host:port?pin=<fingerprint>",
            registry_dir.display()
        ))),
    }
}

fn address_plan(endpoint: &Endpoint, forced: Option<Forced>) -> Result<Plan, Status> {
    let chosen = endpoint.transport();
    if !matches!(chosen, Transport::Unix | Transport::Tcp | Transport::Quic) {
        return Err(Status::invalid_argument(format!(
            "cannot connect to {endpoint}: use a service name, unix:///path or tcp://host:port"
        )));
    }
    if let Some(f) = forced.filter(|f| f.transport != chosen) {
        return Err(Status::failed_precondition(format!(
            "{} demands {}, but {} can only be reached over {chosen}; drop the override or \
             connect to an address of that transport",
            f.source,
            f.transport,
            endpoint.address()
        )));
    }
    Ok(Plan {
        endpoint: endpoint.clone(),
        caller_pin: true,
        selection: Selection {
            transport: chosen,
            reason: Reason::CallerNamed {
                transport: chosen,
                forced,
            },
            rejected: Vec::new(),
        },
    })
}

fn parent_or_lookup(
    name: &str,
    facts: &HostFacts,
    forced: Option<Forced>,
) -> Result<Decision, Status> {
    let serving = facts
        .parent
        .as_ref()
        .filter(|p| p.services.iter().any(|s| s.eq_ignore_ascii_case(name)));
    if let Some(parent) = serving
        && forced.is_none_or(|f| f.transport == Transport::Pipe)
    {
        return Ok(Decision::Parent { pid: parent.pid });
    }
    if let Some(f) = forced.filter(|f| f.transport == Transport::Pipe) {
        let parent = facts.parent.as_ref().map_or_else(
            || "this process was not started by a switchyard parent".to_owned(),
            |p| {
                format!(
                    "its parent (pid {}) serves [{}]",
                    p.pid,
                    p.services.join(", ")
                )
            },
        );
        return Err(Status::failed_precondition(format!(
            "{}=pipe cannot work for {name:?}: pipes reach only a parent or child process, and \
             {parent}",
            f.source
        )));
    }
    Ok(Decision::LookUp)
}

/// The transports a registry name cannot use, whatever the entry says.
fn unusable_here() -> Vec<(Transport, Rejection)> {
    vec![
        (Transport::Shm, Rejection::ShmNeedsLinux),
        (Transport::Mmap, Rejection::MmapIsNotAConnection),
        (Transport::Pipe, Rejection::NotOurParent),
        (Transport::MessageQueue, Rejection::OnlyOneWayCalls),
    ]
}

fn entry_plan(
    name: &str,
    entry: &Entry,
    facts: &HostFacts,
    forced: Option<Forced>,
) -> Result<Plan, Status> {
    let endpoints = Endpoint::parse_all(&entry.endpoints);
    let of = |transport| {
        endpoints
            .iter()
            .find(|e| e.transport() == transport)
            .cloned()
    };
    let unix = of(Transport::Unix).and_then(|e| e.socket_path().map(ToOwned::to_owned));
    let tcp = of(Transport::Tcp);
    let quic = of(Transport::Quic);
    let published = Published {
        name: name.to_owned(),
        pid: entry.pid,
    };
    if let Some(f) = forced {
        return forced_entry_plan(f, entry, published, unix, tcp, quic);
    }
    let mut rejected = unusable_here();
    if quic.is_some() {
        rejected.push((Transport::Quic, Rejection::LocalIsFaster));
    }
    let plan = |endpoint: Endpoint, reason: Reason, rejected| Plan {
        selection: Selection {
            transport: endpoint.transport(),
            reason,
            rejected,
        },
        endpoint,
        caller_pin: false,
    };
    if let Some(path) = unix {
        let same_boot = entry.boot_id.is_empty() || entry.boot_id == facts.host.boot_id;
        let same_ipc = entry.ipc_ns != 0 && entry.ipc_ns == facts.host.ipc_ns;
        if facts.shm_available {
            rejected.retain(|(t, _)| *t != Transport::Shm);
            if same_boot && same_ipc {
                rejected.push((Transport::Unix, Rejection::UnixOnlySetsUpShm));
                if tcp.is_some() {
                    rejected.push((Transport::Tcp, Rejection::ShmIsFaster));
                }
                let reason = Reason::SameHostShm { published };
                return Ok(plan(Endpoint::Shm(path), reason, rejected));
            }
            rejected.push((
                Transport::Shm,
                if entry.ipc_ns == 0 {
                    Rejection::IpcNamespaceUnknown
                } else {
                    Rejection::OtherIpcNamespace
                },
            ));
        }
        if tcp.is_some() {
            rejected.push((Transport::Tcp, Rejection::UnixIsFaster));
        }
        let reason = Reason::SameHostUnix { published };
        return Ok(plan(Endpoint::Unix(path), reason, rejected));
    }
    let only = match (tcp, quic) {
        (None, Some(quic)) => {
            rejected.retain(|(t, _)| *t != Transport::Quic);
            quic
        }
        (Some(tcp), _) => tcp,
        (None, None) => {
            return Err(Status::unavailable(format!(
                "{published} but lists no endpoint this client can use ({}); upgrade the client",
                entry.endpoints.join(", ")
            )));
        }
    };
    rejected.push((Transport::Unix, Rejection::NoUnixSocket));
    let reason = Reason::OnlyEndpoint {
        published,
        transport: only.transport(),
    };
    Ok(plan(only, reason, rejected))
}

fn forced_entry_plan(
    f: Forced,
    entry: &Entry,
    published: Published,
    unix: Option<std::path::PathBuf>,
    tcp: Option<Endpoint>,
    quic: Option<Endpoint>,
) -> Result<Plan, Status> {
    let endpoint = match f.transport {
        Transport::Unix => unix.map(Endpoint::Unix),
        Transport::Shm => unix.map(Endpoint::Shm),
        Transport::Tcp => tcp,
        Transport::Quic => quic,
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
            "{f} cannot work: {published} with endpoints [{}] and no {} endpoint; start the \
             server with that transport enabled or drop the override",
            entry.endpoints.join(", "),
            f.transport
        ))
    })?;
    let rejected = Transport::ALL
        .into_iter()
        .filter(|t| *t != f.transport && *t != Transport::Memory && t.is_available())
        .map(|t| (t, Rejection::Overridden(f)))
        .collect();
    Ok(Plan {
        endpoint,
        caller_pin: false,
        selection: Selection {
            transport: f.transport,
            reason: Reason::ForcedOnEntry {
                forced: f,
                published,
            },
            rejected,
        },
    })
}

fn resolved_plans(
    name: &str,
    resolved: &Resolved,
    forced: Option<Forced>,
) -> Result<Vec<Plan>, Status> {
    let mut endpoints = Vec::new();
    for address in &resolved.addresses {
        match Target::parse(address).map_err(|status| {
            Status::failed_precondition(format!(
                "{} gives {name:?} the address {address:?}, which is unusable: {}",
                resolved.source,
                status.message()
            ))
        })? {
            Target::Address(endpoint) => endpoints.push(endpoint),
            Target::Name(_) => {}
        }
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
                "{f} cannot work: {} gives {name:?} no {} address (it lists [{}]); add one or \
                 drop the override",
                resolved.source,
                f.transport,
                resolved.addresses.join(", ")
            )));
        }
    }
    let listing = Listing {
        source: resolved.source.clone(),
        name: name.to_owned(),
        addresses: resolved.addresses.clone(),
    };
    Ok(endpoints
        .into_iter()
        .map(|endpoint| {
            let transport = endpoint.transport();
            Plan {
                selection: Selection {
                    transport,
                    reason: Reason::Listed {
                        listing: listing.clone(),
                        transport,
                        forced,
                    },
                    rejected: Vec::new(),
                },
                endpoint,
                caller_pin: false,
            }
        })
        .collect())
}
