//! Every selection rule, on facts passed in: no processes, no sockets.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::discovery::{Entry, Resolved};
use crate::protocol::hello::{HostIdentity, Locality};
use crate::protocol::status::Code;

const ENV: &str = "SWITCHYARD_TRANSPORT";

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
        endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
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

/// The one plan a decision made.
fn only_plan(decision: Result<Decision, Status>) -> Plan {
    match decision.unwrap() {
        Decision::Connect(mut plans) if plans.len() == 1 => plans.remove(0),
        other => panic!("expected one plan, got {other:?}"),
    }
}

fn on_entry(entry: &Entry, facts: &HostFacts, forced: Option<Forced>) -> Result<Plan, Status> {
    match connect(&name(), Known::Entry(entry), facts, forced)? {
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

const PUBLISHED: &str = "\"calculator\" is published in the local registry by pid 42";

#[test]
fn an_address_is_reached_over_its_own_transport() {
    for (url, transport) in [
        ("unix:///s.sock", Transport::Unix),
        ("tcp://127.0.0.1:5", Transport::Tcp),
        ("quic://10.0.0.1:7443", Transport::Quic),
    ] {
        let target = Target::parse(url).unwrap();
        let plan = only_plan(connect(&target, Known::NotLookedUp, &facts(), None));
        assert_eq!(plan.selection.transport, transport);
        assert_eq!(plan.endpoint.to_string(), url);
        assert!(plan.caller_pin);
        assert_eq!(
            plan.selection.reason.to_string(),
            format!("the caller named a {transport}:// address")
        );
        assert!(plan.selection.rejected.is_empty());
    }
}

#[test]
fn an_override_of_an_address_must_match_it() {
    let target = Target::parse("tcp://h:1").unwrap();
    let plan = only_plan(connect(
        &target,
        Known::NotLookedUp,
        &facts(),
        forced(Transport::Tcp),
    ));
    assert_eq!(
        plan.selection.reason.to_string(),
        "the caller named a tcp:// address (SWITCHYARD_TRANSPORT=tcp)"
    );
    let err = connect(
        &Target::parse("unix:///x").unwrap(),
        Known::NotLookedUp,
        &facts(),
        forced(Transport::Tcp),
    )
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "SWITCHYARD_TRANSPORT demands tcp, but unix:///x can only be reached over unix; drop \
         the override or connect to an address of that transport"
    );
}

#[test]
fn a_name_the_parent_serves_goes_over_its_pipes() {
    let with_parent = HostFacts {
        parent: Some(ParentFacts {
            pid: 7,
            services: vec!["Calculator".into(), "Log".into()],
        }),
        ..facts()
    };
    let decide = |forced| connect(&name(), Known::NotLookedUp, &with_parent, forced);
    assert_eq!(decide(None).unwrap(), Decision::Parent { pid: 7 });
    assert_eq!(
        decide(forced(Transport::Pipe)).unwrap(),
        Decision::Parent { pid: 7 }
    );
    // Another transport demanded: the name is looked up instead.
    assert_eq!(decide(forced(Transport::Tcp)).unwrap(), Decision::LookUp);
    // Without a parent serving it, the name is looked up.
    let other = connect(
        &Target::Name("billing".into()),
        Known::NotLookedUp,
        &with_parent,
        None,
    );
    assert_eq!(other.unwrap(), Decision::LookUp);
    assert_eq!(
        connect(&name(), Known::NotLookedUp, &facts(), None).unwrap(),
        Decision::LookUp
    );
}

#[test]
fn demanding_pipes_without_a_parent_serving_the_name_says_why() {
    let err = connect(
        &name(),
        Known::NotLookedUp,
        &facts(),
        forced(Transport::Pipe),
    )
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "SWITCHYARD_TRANSPORT=pipe cannot work for \"calculator\": pipes reach only a parent or \
         child process, and this process was not started by a switchyard parent"
    );
    let with_parent = HostFacts {
        parent: Some(ParentFacts {
            pid: 7,
            services: vec!["Log".into(), "Billing".into()],
        }),
        ..facts()
    };
    let err = connect(
        &name(),
        Known::NotLookedUp,
        &with_parent,
        forced(Transport::Pipe),
    )
    .unwrap_err();
    assert!(
        err.message()
            .ends_with("and its parent (pid 7) serves [Log, Billing]"),
        "{err}"
    );
}

#[test]
fn a_same_host_name_picks_shared_memory_and_says_why() {
    let e = local_entry(&["unix:///s.sock", "tcp://127.0.0.1:5"]);
    let plan = on_entry(&e, &facts(), None).unwrap();
    assert_eq!(plan.endpoint, Endpoint::Shm("/s.sock".into()));
    assert_eq!(plan.url(), "shm over unix:///s.sock");
    assert!(!plan.caller_pin);
    let s = &plan.selection;
    assert_eq!(s.transport, Transport::Shm);
    assert_eq!(
        s.reason.to_string(),
        format!(
            "same host: boot id and IPC namespace match; {PUBLISHED}; shared memory is the \
             fastest track"
        )
    );
    assert_eq!(
        why_not(s, Transport::Unix).unwrap(),
        "shared memory is faster on the same host; the Unix socket only sets it up"
    );
    assert_eq!(
        why_not(s, Transport::Tcp).unwrap(),
        "shared memory is faster on the same host"
    );
    assert_eq!(why_not(s, Transport::Shm), None);
    assert_eq!(
        why_not(s, Transport::Mmap).unwrap(),
        "not a connection of its own: bodies over the bulk threshold travel as mapped regions \
         inside a shm connection"
    );
    assert_eq!(
        why_not(s, Transport::Pipe).unwrap(),
        "the server is not this process's parent (pipes reach only a parent or child)"
    );
    assert_eq!(
        why_not(s, Transport::MessageQueue).unwrap(),
        "carries only one-way calls (see Channel::oneway_selection)"
    );
}

#[test]
fn a_name_in_another_ipc_namespace_picks_the_unix_socket() {
    let e = Entry {
        ipc_ns: 1,
        ..local_entry(&["unix:///s.sock", "tcp://127.0.0.1:5"])
    };
    let plan = on_entry(&e, &facts(), None).unwrap();
    assert_eq!(plan.endpoint, Endpoint::Unix("/s.sock".into()));
    let s = &plan.selection;
    assert_eq!(
        s.reason.to_string(),
        format!("same host: {PUBLISHED}; a Unix socket is the fastest track it offers")
    );
    assert_eq!(
        why_not(s, Transport::Shm).unwrap(),
        "same host (boot id matches) but a different IPC namespace"
    );
    assert_eq!(
        why_not(s, Transport::Tcp).unwrap(),
        "a Unix socket is faster on the same host"
    );
    // An entry that does not say its namespace.
    let unknown = entry(&["unix:///s.sock"]);
    let plan = on_entry(&unknown, &facts(), None).unwrap();
    assert_eq!(
        why_not(&plan.selection, Transport::Shm).unwrap(),
        "the registry entry does not say which IPC namespace the server is in"
    );
    // Another boot: no shared memory either.
    let rebooted = Entry {
        boot_id: "boot-2".into(),
        ..local_entry(&["unix:///s.sock"])
    };
    let plan = on_entry(&rebooted, &facts(), None).unwrap();
    assert_eq!(plan.selection.transport, Transport::Unix);
}

#[test]
fn without_shared_memory_in_the_build_the_unix_socket_wins() {
    let no_shm = HostFacts {
        shm_available: false,
        ..facts()
    };
    let plan = on_entry(&local_entry(&["unix:///s.sock"]), &no_shm, None).unwrap();
    assert_eq!(plan.selection.transport, Transport::Unix);
    assert_eq!(
        why_not(&plan.selection, Transport::Shm).unwrap(),
        "shared memory needs Linux memfds"
    );
}

#[test]
fn a_quic_endpoint_loses_to_a_local_one_and_wins_alone() {
    let pin = "cd".repeat(32);
    let quic = format!("quic://10.0.0.1:7443?pin={pin}");
    let plan = on_entry(&local_entry(&["unix:///s.sock", &quic]), &facts(), None).unwrap();
    assert_eq!(
        why_not(&plan.selection, Transport::Quic).unwrap(),
        "the server is on this host: a local transport is faster, and QUIC's encryption \
         protects nothing here"
    );
    let plan = on_entry(&entry(&[&quic]), &facts(), None).unwrap();
    assert_eq!(
        plan.endpoint,
        Endpoint::Quic {
            host_port: "10.0.0.1:7443".into(),
            pin: Some(pin)
        }
    );
    assert!(!plan.caller_pin, "a registry's pin is not the caller's");
    assert_eq!(
        plan.selection.reason.to_string(),
        format!("{PUBLISHED}; quic is the only endpoint it offers")
    );
    assert_eq!(why_not(&plan.selection, Transport::Quic), None);
    assert_eq!(
        why_not(&plan.selection, Transport::Unix).unwrap(),
        "the server publishes no Unix socket"
    );
}

#[test]
fn a_tcp_only_entry_is_reached_over_tcp() {
    let plan = on_entry(&entry(&["tcp://127.0.0.1:5", "quic://h:1"]), &facts(), None).unwrap();
    assert_eq!(plan.endpoint, Endpoint::Tcp("127.0.0.1:5".into()));
    assert_eq!(
        plan.selection.reason.to_string(),
        format!("{PUBLISHED}; tcp is the only endpoint it offers")
    );
    assert!(why_not(&plan.selection, Transport::Quic).is_some());
}

#[test]
fn an_entry_without_a_usable_endpoint_is_unavailable() {
    let err = on_entry(&entry(&["carrier-pigeon://roof"]), &facts(), None).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        format!(
            "{PUBLISHED} but lists no endpoint this client can use (carrier-pigeon://roof); \
             upgrade the client"
        )
    );
}

#[test]
fn an_override_takes_its_endpoint_of_the_entry_or_explains() {
    let e = local_entry(&["unix:///s.sock", "tcp://127.0.0.1:5"]);
    let plan = on_entry(&e, &facts(), forced(Transport::Tcp)).unwrap();
    assert_eq!(plan.endpoint, Endpoint::Tcp("127.0.0.1:5".into()));
    assert_eq!(
        plan.selection.reason.to_string(),
        format!("forced by SWITCHYARD_TRANSPORT=tcp; {PUBLISHED}")
    );
    assert_eq!(
        why_not(&plan.selection, Transport::Unix).unwrap(),
        "SWITCHYARD_TRANSPORT=tcp overrides it"
    );
    assert_eq!(why_not(&plan.selection, Transport::Tcp), None);
    // Shared memory is set up over the Unix socket the entry lists.
    let plan = on_entry(&e, &facts(), forced(Transport::Shm)).unwrap();
    assert_eq!(plan.endpoint, Endpoint::Shm("/s.sock".into()));
    let plan = on_entry(&e, &facts(), forced(Transport::Unix)).unwrap();
    assert_eq!(plan.endpoint, Endpoint::Unix("/s.sock".into()));

    let err = on_entry(&e, &facts(), forced(Transport::Quic)).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        format!(
            "SWITCHYARD_TRANSPORT=quic cannot work: {PUBLISHED} with endpoints [unix:///s.sock, \
             tcp://127.0.0.1:5] and no quic endpoint; start the server with that transport \
             enabled or drop the override"
        )
    );
    for (transport, says) in [
        (
            Transport::MessageQueue,
            "message queues carry only one-way calls",
        ),
        (
            Transport::Pipe,
            "pipes reach only a parent or child process",
        ),
        (Transport::Mmap, "demand shm instead"),
    ] {
        let err = on_entry(&e, &facts(), forced(transport)).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains(says), "{transport}: {err}");
    }
}

fn resolved() -> Resolved {
    Resolved {
        addresses: vec![
            "tcp://10.0.0.5:7000".into(),
            "quic://10.0.0.5:7443".into(),
            "unix:///local.sock".into(),
            "quic://10.0.0.6:7443".into(),
        ],
        source: "the discovery file /d.toml".into(),
    }
}

#[test]
fn resolved_addresses_are_tried_unix_then_quic_then_tcp() {
    let r = resolved();
    let Decision::Connect(plans) = connect(&name(), Known::Resolved(&r), &facts(), None).unwrap()
    else {
        panic!("expected plans");
    };
    let order: Vec<String> = plans.iter().map(Plan::url).collect();
    assert_eq!(
        order,
        [
            "unix:///local.sock",
            "quic://10.0.0.5:7443",
            "quic://10.0.0.6:7443",
            "tcp://10.0.0.5:7000"
        ]
    );
    let listed = "the discovery file /d.toml gives \"calculator\" [tcp://10.0.0.5:7000, \
                  quic://10.0.0.5:7443, unix:///local.sock, quic://10.0.0.6:7443]";
    let reasons: Vec<String> = plans
        .iter()
        .map(|p| p.selection.reason.to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            format!("{listed}; a Unix socket is the fastest track it lists"),
            format!(
                "{listed}; quic is the fastest track across machines (encrypted, one stream \
                 per call)"
            ),
            format!(
                "{listed}; quic is the fastest track across machines (encrypted, one stream \
                 per call)"
            ),
            format!("{listed}; tcp is the fastest track it lists"),
        ]
    );
    assert!(plans.iter().all(|p| !p.caller_pin));
}

#[test]
fn an_override_keeps_only_its_resolved_addresses() {
    let r = resolved();
    let Decision::Connect(plans) = connect(
        &name(),
        Known::Resolved(&r),
        &facts(),
        forced(Transport::Tcp),
    )
    .unwrap() else {
        panic!("expected plans");
    };
    assert_eq!(plans.len(), 1);
    assert!(
        plans[0]
            .selection
            .reason
            .to_string()
            .ends_with("; forced by SWITCHYARD_TRANSPORT=tcp"),
        "{}",
        plans[0].selection
    );
    let tcp_only = Resolved {
        addresses: vec!["tcp://h:1".into()],
        source: "the resolver".into(),
    };
    let err = connect(
        &name(),
        Known::Resolved(&tcp_only),
        &facts(),
        forced(Transport::Unix),
    )
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "SWITCHYARD_TRANSPORT=unix cannot work: the resolver gives \"calculator\" no unix \
         address (it lists [tcp://h:1]); add one or drop the override"
    );
}

#[test]
fn an_unusable_resolved_address_is_reported_with_its_source() {
    let r = Resolved {
        addresses: vec!["tcp://nohost".into()],
        source: "the resolver".into(),
    };
    let err = connect(&name(), Known::Resolved(&r), &facts(), None).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().starts_with(
            "the resolver gives \"calculator\" the address \"tcp://nohost\", which is unusable: \
             tcp://nohost needs a port"
        ),
        "{err}"
    );
}

#[test]
fn a_name_nobody_knows_is_not_found_saying_where_it_was_looked_for() {
    let err = connect(
        &Target::Name("nope".into()),
        Known::Nothing {
            registry_dir: Path::new("/rt"),
            consulted: "no discovery file is set",
        },
        &facts(),
        None,
    )
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().starts_with(
            "no live process publishes \"nope\" in the local registry (/rt), and no discovery \
             file is set; start the server"
        ),
        "{err}"
    );
}

#[test]
fn candidates_passed_over_are_in_the_reason_and_the_rejections() {
    let then = Reason::Listed {
        listing: Listing {
            source: "the discovery file /d.toml".into(),
            name: "calc".into(),
            addresses: vec!["quic://h:1".into(), "tcp://h:2".into()],
        },
        transport: Transport::Tcp,
        forced: None,
    };
    let passed = vec![
        PassedOver::Silent {
            url: "quic://h:1".into(),
            waited: Duration::from_secs(2),
            quic: true,
        },
        PassedOver::Failed {
            url: "tcp://h:3".into(),
            message: "refused".into(),
        },
    ];
    let reason = Reason::FellBack {
        transport: Transport::Tcp,
        passed_over: passed.clone(),
        then: Box::new(then),
    };
    assert_eq!(
        reason.to_string(),
        "fell back to tcp: quic://h:1 did not answer within 2s (is UDP blocked on the way?); \
         tcp://h:3 failed: refused; the discovery file /d.toml gives \"calc\" [quic://h:1, \
         tcp://h:2]; tcp is the fastest track it lists"
    );
    assert_eq!(
        Rejection::PassedOver(passed[0].clone()).to_string(),
        "quic://h:1 did not answer within 2s (is UDP blocked on the way?)"
    );
}

#[test]
fn the_handshake_adds_where_the_peer_runs_to_network_transports_only() {
    let named = |transport| Selection {
        transport,
        reason: Reason::CallerNamed {
            transport,
            forced: None,
        },
        rejected: vec![],
    };
    let mut tcp = named(Transport::Tcp);
    note_locality(&mut tcp, &host(), &host());
    assert_eq!(
        tcp.reason.to_string(),
        "the caller named a tcp:// address; the handshake shows the peer is on this host (same \
         host: boot id and IPC namespace match)"
    );
    let mut quic = named(Transport::Quic);
    let elsewhere = HostIdentity {
        boot_id: "boot-2".into(),
        ..host()
    };
    note_locality(&mut quic, &host(), &elsewhere);
    assert_eq!(
        quic.reason.to_string(),
        "the caller named a quic:// address; another host: boot ids differ"
    );
    let mut unix = named(Transport::Unix);
    note_locality(&mut unix, &host(), &host());
    assert_eq!(unix, named(Transport::Unix));
}

fn over_tcp() -> Selection {
    Selection {
        transport: Transport::Tcp,
        reason: Reason::CallerNamed {
            transport: Transport::Tcp,
            forced: None,
        },
        rejected: vec![],
    }
}

#[test]
fn a_same_host_tcp_connection_moves_to_shared_memory() {
    let endpoints = [
        Endpoint::Tcp("127.0.0.1:7000".into()),
        Endpoint::Unix("/run/s.sock".into()),
    ];
    let decision = upgrade(
        &over_tcp(),
        "tcp://127.0.0.1:7000",
        Locality::SameHostSameIpc,
        &endpoints,
        None,
        false,
    );
    let Upgrade::Move { socket, selection } = decision else {
        panic!("expected a move, got {decision:?}");
    };
    assert_eq!(socket, Path::new("/run/s.sock"));
    assert_eq!(selection.transport, Transport::Shm);
    assert_eq!(
        selection.to_string(),
        "shm: upgraded: reached tcp://127.0.0.1:7000 over tcp, whose handshake showed the server \
         on this host (same boot id and IPC namespace), so the connection moved to shared \
         memory set up over its Unix socket /run/s.sock (not tcp: the server is on this host: \
         shared memory is faster (tcp only carried the handshake))"
    );
}

#[test]
fn a_connection_stays_where_an_upgrade_cannot_or_must_not_happen() {
    let unix = [Endpoint::Unix("/run/s.sock".into())];
    let stay = |selection: &Selection, locality, endpoints: &[Endpoint], forced, cert| match upgrade(
        selection, "x", locality, endpoints, forced, cert,
    ) {
        Upgrade::Stay(why) => why,
        moved => panic!("expected to stay, got {moved:?}"),
    };
    let same = Locality::SameHostSameIpc;
    assert_eq!(
        stay(&over_tcp(), same, &unix, forced(Transport::Tcp), false),
        None
    );
    assert_eq!(
        stay(&over_tcp(), Locality::SameHostOtherIpc, &unix, None, false),
        None
    );
    assert_eq!(
        stay(&over_tcp(), Locality::OtherHost, &unix, None, false),
        None
    );
    let no_socket = stay(&over_tcp(), same, &[], None, false).unwrap();
    assert_eq!(
        no_socket.to_string(),
        "the server is on this host but lists no Unix socket to set up shared memory over"
    );
    // A certificate is kept even when nothing else stands in the way, and
    // said so even under an override.
    let quic = Selection {
        transport: Transport::Quic,
        ..over_tcp()
    };
    let cert = stay(&quic, same, &unix, forced(Transport::Quic), true).unwrap();
    assert_eq!(cert, NotUpgraded::ClientCertificate);
    assert!(cert.to_string().contains("mutual TLS"), "{cert}");
    // Only network transports move.
    let on_unix = Selection {
        transport: Transport::Unix,
        ..over_tcp()
    };
    assert_eq!(stay(&on_unix, same, &unix, None, false), None);
}

#[test]
fn shared_memory_that_cannot_be_set_up_falls_back_to_its_unix_socket() {
    let e = local_entry(&["unix:///s.sock", "tcp://127.0.0.1:5"]);
    let planned = on_entry(&e, &facts(), None).unwrap().selection;
    let fallback = shm_fallback(&planned, "the server refused the offer".into());
    assert_eq!(fallback.transport, Transport::Unix);
    assert_eq!(
        fallback.reason.to_string(),
        format!(
            "same host: boot id and IPC namespace match; {PUBLISHED}; the Unix socket, since \
             shared memory could not be set up"
        )
    );
    assert_eq!(why_not(&fallback, Transport::Unix), None);
    assert_eq!(
        why_not(&fallback, Transport::Shm).unwrap(),
        "the shared-memory set-up failed: the server refused the offer"
    );
    assert!(why_not(&fallback, Transport::Tcp).is_some());
}

fn oneway_facts() -> OnewayFacts {
    OnewayFacts {
        service: "Log".into(),
        has_oneway_methods: true,
        locality: Some(Locality::SameHostSameIpc),
        server_uid: Some(1000),
        own_uid: 1000,
        queue: Some("/sy-1000-0a-log".into()),
        squatter: None,
    }
}

fn connection_because(facts: &OnewayFacts, forced: Option<Forced>) -> String {
    match oneway(facts, forced) {
        OnewayVerdict::Connection(why) => why.to_string(),
        OnewayVerdict::Queue(name) => panic!("expected the connection, got the queue {name}"),
    }
}

#[test]
fn one_way_calls_take_the_queue_on_the_same_host_namespace_and_user() {
    assert_eq!(
        oneway(&oneway_facts(), None),
        OnewayVerdict::Queue("/sy-1000-0a-log".into())
    );
    // Demanding the queue is no obstacle, and with no server connected the
    // queue alone decides.
    assert_eq!(
        oneway(&oneway_facts(), forced(Transport::MessageQueue)),
        OnewayVerdict::Queue("/sy-1000-0a-log".into())
    );
    let standalone = OnewayFacts {
        locality: None,
        server_uid: None,
        ..oneway_facts()
    };
    assert_eq!(
        oneway(&standalone, None),
        OnewayVerdict::Queue("/sy-1000-0a-log".into())
    );
}

#[test]
fn one_way_calls_stay_on_the_connection_and_say_why() {
    assert_eq!(
        connection_because(&oneway_facts(), forced(Transport::Tcp)),
        "SWITCHYARD_TRANSPORT=tcp keeps one-way calls on the connection"
    );
    let elsewhere = OnewayFacts {
        locality: Some(Locality::OtherHost),
        ..oneway_facts()
    };
    assert_eq!(
        connection_because(&elsewhere, None),
        "another host: boot ids differ: a message queue is shared only within one host's IPC \
         namespace"
    );
    let other_user = OnewayFacts {
        server_uid: Some(0),
        ..oneway_facts()
    };
    assert_eq!(
        connection_because(&other_user, None),
        "the server runs as uid 0 and this process as uid 1000; a queue is open only to its \
         owner"
    );
    let none = OnewayFacts {
        queue: None,
        ..oneway_facts()
    };
    assert_eq!(
        connection_because(&none, None),
        "the server announced no message queue for Log (queues are off or unavailable there)"
    );
    let squatted = OnewayFacts {
        squatter: Some("message queue /sy-1000-0a-log belongs to uid 0".into()),
        ..none
    };
    assert_eq!(
        connection_because(&squatted, None),
        "the server announced no message queue for Log: message queue /sy-1000-0a-log belongs \
         to uid 0; one-way calls go over the connection and are NOT kept if the server restarts"
    );
    let no_methods = OnewayFacts {
        has_oneway_methods: false,
        ..oneway_facts()
    };
    assert_eq!(
        connection_because(&no_methods, None),
        "Log has no one-way methods"
    );
}

#[test]
fn one_way_selections_say_where_the_calls_go() {
    let queue = OnewayTrack::Queue {
        name: "/sy-q",
        max_message: 8192,
    };
    assert_eq!(
        oneway_selection(queue, Some(Transport::Shm)).to_string(),
        "mqueue: same host, IPC namespace and user: the server's queue /sy-q takes one-way calls \
         (up to 8192 bytes each; larger ones go over the connection) and keeps them across a \
         server restart (not shm: one-way calls need no response; the queue keeps them if the \
         server restarts)"
    );
    assert_eq!(
        oneway_selection(queue, None).to_string(),
        "mqueue: no live server is reachable, but its queue /sy-q is: one-way calls wait in the \
         kernel until the server is back"
    );
    let why = Rejection::QueueNotKept {
        queue: "/sy-q".into(),
    };
    assert_eq!(
        oneway_selection(OnewayTrack::Connection(&why), Some(Transport::Tcp)).to_string(),
        "tcp: one-way calls ride the connection (not mqueue: the server keeps no queue /sy-q \
         (message queues are off or unavailable there))"
    );
    assert_eq!(
        oneway_selection(OnewayTrack::Connection(&why), None).transport,
        Transport::Unix
    );
}

#[test]
fn each_call_takes_its_track_by_kind_and_size() {
    let shm = Tracks {
        connection: Transport::Shm,
        queue_max: Some(8192),
        bulk_threshold: Some(256 * 1024),
    };
    let call = |kind| per_call(kind, &shm);
    assert_eq!(
        call(CallKind::OneWay { bytes: 8192 }),
        Transport::MessageQueue
    );
    assert_eq!(call(CallKind::OneWay { bytes: 8193 }), Transport::Shm);
    assert_eq!(
        call(CallKind::OneWay {
            bytes: 256 * 1024 + 1
        }),
        Transport::Mmap
    );
    assert_eq!(call(CallKind::Unary { bytes: 100 }), Transport::Shm);
    assert_eq!(
        call(CallKind::Unary {
            bytes: 256 * 1024 + 1
        }),
        Transport::Mmap
    );
    // No queue, no bulk path: the connection carries everything.
    let tcp = Tracks {
        connection: Transport::Tcp,
        queue_max: None,
        bulk_threshold: Some(1),
    };
    assert_eq!(
        per_call(CallKind::OneWay { bytes: 10 }, &tcp),
        Transport::Tcp
    );
    assert_eq!(
        per_call(CallKind::Unary { bytes: 1 << 20 }, &tcp),
        Transport::Tcp
    );
}

#[test]
fn selections_with_one_outcome_say_why() {
    let texts = [
        (
            accepted(Transport::Shm),
            "shm: the client set up shared memory over this server's Unix socket",
        ),
        (
            accepted(Transport::Tcp),
            "tcp: the client connected to this server's tcp listener",
        ),
        (
            queue_owned("/sy-q"),
            "mqueue: one-way calls queued in /sy-q, owned by this server",
        ),
        (
            queue_stand_in("log", "/sy-q"),
            "mqueue: no live process publishes \"log\", but its queue /sy-q is there: one-way \
             calls wait in the kernel until the server is back; other calls reconnect",
        ),
        (
            caller_link(Transport::Memory),
            "memory: the caller supplied a memory link",
        ),
        (
            spawned_child("worker", 9),
            "pipe: this process spawned worker (pid 9) with inherited pipes",
        ),
        (
            parent_pipe(3),
            "pipe: the parent process (pid 3) serves this service over inherited pipes (not \
             unix: the parent's inherited pipe reaches it without a socket; tcp: the parent's \
             inherited pipe reaches it without a socket; shm: not implemented in this version)",
        ),
    ];
    for (selection, text) in texts {
        assert_eq!(selection.to_string(), text);
    }
}

#[test]
fn a_reason_compares_with_the_text_it_shows() {
    let reason = Reason::ClientConnected {
        transport: Transport::Unix,
    };
    let text = "the client connected to this server's unix listener".to_owned();
    assert!(text == reason);
    assert!("the client connected to this server's unix listener" == reason);
    for other in [
        "something else",
        "the client connected",
        "the client connected to this server's unix listener and more",
    ] {
        assert!(other != reason, "{other}");
    }
    let why = Rejection::NoUnixSocket;
    let text = "the server publishes no Unix socket".to_owned();
    assert!(text == why);
}
