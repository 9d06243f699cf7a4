//! The connection decision: which transport reaches a target, as candidates
//! in the order to try them.

use super::error::ConnectError;
use super::facts::{HostFacts, Known};
use super::reason::{Listing, Published, Reason};
use super::rejection::Rejection;
use super::target::Target;
use super::{Decision, Forced, Plan, Selection};
use crate::discovery::{Entry, Resolved};
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
///
/// Each error says what to change ([`ConnectError`]).
pub fn connect(
    target: &Target,
    known: Known<'_>,
    facts: &HostFacts,
    forced: Option<Forced>,
) -> Result<Decision, ConnectError> {
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
        } => Err(ConnectError::NotFound {
            name: name.clone(),
            registry_dir: registry_dir.to_owned(),
            consulted: consulted.to_owned(),
        }),
    }
}

fn address_plan(endpoint: &Endpoint, forced: Option<Forced>) -> Result<Plan, ConnectError> {
    let chosen = endpoint.transport();
    if !matches!(chosen, Transport::Unix | Transport::Tcp | Transport::Quic) {
        return Err(ConnectError::NotConnectable {
            endpoint: endpoint.clone(),
        });
    }
    if let Some(forced) = forced.filter(|f| f.transport != chosen) {
        return Err(ConnectError::AddressOverridden {
            forced,
            address: endpoint.address(),
            transport: chosen,
        });
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
) -> Result<Decision, ConnectError> {
    let serving = facts
        .parent
        .as_ref()
        .filter(|p| p.services.iter().any(|s| s.eq_ignore_ascii_case(name)));
    if let Some(parent) = serving
        && forced.is_none_or(|f| f.transport == Transport::Pipe)
    {
        return Ok(Decision::Parent { pid: parent.pid });
    }
    if let Some(forced) = forced.filter(|f| f.transport == Transport::Pipe) {
        return Err(ConnectError::PipeWithoutParent {
            forced,
            name: name.to_owned(),
            parent: facts.parent.clone(),
        });
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
) -> Result<Plan, ConnectError> {
    let of = |transport| entry.endpoint(transport).cloned();
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
            return Err(ConnectError::NoUsableEndpoint {
                published,
                endpoints: entry.urls(),
            });
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
) -> Result<Plan, ConnectError> {
    let endpoint = match f.transport {
        Transport::Unix => unix.map(Endpoint::Unix),
        Transport::Shm => unix.map(Endpoint::Shm),
        Transport::Tcp => tcp,
        Transport::Quic => quic,
        Transport::MessageQueue => return Err(ConnectError::QueueDemanded { forced: f }),
        Transport::Pipe => {
            return Err(ConnectError::PipeDemandedOnEntry {
                forced: f,
                published,
            });
        }
        Transport::Mmap => return Err(ConnectError::MmapDemanded { forced: f }),
        other if !other.is_available() => {
            return Err(ConnectError::NotImplemented { forced: f });
        }
        _ => None,
    };
    let Some(endpoint) = endpoint else {
        return Err(ConnectError::NoEndpointOfForced {
            forced: f,
            published,
            endpoints: entry.urls(),
        });
    };
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
) -> Result<Vec<Plan>, ConnectError> {
    let mut endpoints = Vec::with_capacity(resolved.addresses.len());
    for endpoint in &resolved.addresses {
        Target::of_endpoint(endpoint).map_err(|status| ConnectError::UnusableResolvedAddress {
            source_name: resolved.source.clone(),
            name: name.to_owned(),
            address: endpoint.to_string(),
            why: status.message().to_owned(),
        })?;
        endpoints.push(endpoint.clone());
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
            return Err(ConnectError::NoResolvedAddressOfForced {
                forced: f,
                source_name: resolved.source.clone(),
                name: name.to_owned(),
                addresses: resolved.urls(),
            });
        }
    }
    let listing = Listing {
        source: resolved.source.clone(),
        name: name.to_owned(),
        addresses: resolved.urls(),
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
