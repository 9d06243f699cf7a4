//! Every selection rule, on facts passed in: no processes, no sockets.
//! Each is asked through the one entry point, [`select`].

mod after;
mod connect;
mod fixed;
mod oneway;

use super::*;
use crate::discovery::{Entry, Resolved};
use crate::protocol::hello::{HostIdentity, Locality};
use crate::protocol::status::Code;

const ENV: &str = "SWITCHYARD_TRANSPORT";

/// How the entries of [`entry`] name their publisher in reasons.
const PUBLISHED: &str = "\"calculator\" is published in the local registry by pid 42";

fn forced(transport: Transport) -> Option<Forced> {
    Some(Forced {
        transport,
        source: ENV,
    })
}

fn host() -> HostIdentity {
    HostIdentity {
        boot_id: "boot-1".into(),
        ipc_ns: 4026531839,
        ..HostIdentity::default()
    }
}

fn facts() -> HostFacts {
    HostFacts {
        host: host(),
        shm_available: true,
        parent: None,
    }
}

fn entry(endpoints: &[&str]) -> Entry {
    Entry {
        name: "calculator".into(),
        pid: 42,
        start_time: None,
        boot_id: String::new(),
        ipc_ns: 0,
        // As read from a file: URLs this version cannot parse kept aside.
        endpoints: endpoints.iter().filter_map(|s| s.parse().ok()).collect(),
        unknown_endpoints: endpoints
            .iter()
            .filter(|s| s.parse::<Endpoint>().is_err())
            .map(|s| s.to_string())
            .collect(),
        services: vec!["Calculator".into()],
        published_ms: 0,
        debug: None,
    }
}

/// An entry of a server on this host and IPC namespace.
fn local_entry(endpoints: &[&str]) -> Entry {
    Entry {
        boot_id: host().boot_id,
        ipc_ns: host().ipc_ns,
        ..entry(endpoints)
    }
}

fn name() -> Target {
    Target::Name("calculator".into())
}

/// [`Connect`], its error as the status a caller sees.
fn decide(
    target: &Target,
    known: Known<'_>,
    facts: &HostFacts,
    forced: Option<Forced>,
) -> Result<Decision, Status> {
    select(Connect {
        target,
        known,
        facts,
        forced,
    })
    .map_err(Status::from)
}

/// The one plan a decision made.
fn only_plan(decision: Result<Decision, Status>) -> Plan {
    match decision.unwrap() {
        Decision::Connect(mut plans) if plans.len() == 1 => plans.remove(0),
        other => panic!("expected one plan, got {other:?}"),
    }
}

fn on_entry(entry: &Entry, facts: &HostFacts, forced: Option<Forced>) -> Result<Plan, Status> {
    match decide(&name(), Known::Entry(entry), facts, forced)? {
        Decision::Connect(mut plans) => Ok(plans.remove(0)),
        other => panic!("expected plans, got {other:?}"),
    }
}

fn why_not(selection: &Selection, transport: Transport) -> Option<String> {
    selection
        .rejected
        .iter()
        .find(|(t, _)| *t == transport)
        .map(|(_, why)| why.to_string())
}
