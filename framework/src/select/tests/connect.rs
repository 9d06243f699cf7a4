//! The connection decision: addresses, parent pipes, registry entries,
//! resolvers, overrides.

use std::path::Path;
use std::time::Duration;

use super::*;

#[test]
fn an_address_is_reached_over_its_own_transport() {
    for (url, transport) in [
        ("unix:///s.sock", Transport::Unix),
        ("tcp://127.0.0.1:5", Transport::Tcp),
        ("quic://10.0.0.1:7443", Transport::Quic),
    ] {
        let target = Target::parse(url).unwrap();
        let plan = only_plan(decide(&target, Known::NotLookedUp, &facts(), None));
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
    let plan = only_plan(decide(
        &target,
        Known::NotLookedUp,
        &facts(),
        forced(Transport::Tcp),
    ));
    assert_eq!(
        plan.selection.reason.to_string(),
        "the caller named a tcp:// address (SWITCHYARD_TRANSPORT=tcp)"
    );
    let err = decide(
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
    let first = |forced| decide(&name(), Known::NotLookedUp, &with_parent, forced);
    assert_eq!(first(None).unwrap(), Decision::Parent { pid: 7 });
    assert_eq!(
        first(forced(Transport::Pipe)).unwrap(),
        Decision::Parent { pid: 7 }
    );
    // Another transport demanded: the name is looked up instead.
    assert_eq!(first(forced(Transport::Tcp)).unwrap(), Decision::LookUp);
    // Without a parent serving it, the name is looked up.
    let other = decide(
        &Target::Name("billing".into()),
        Known::NotLookedUp,
        &with_parent,
        None,
    );
    assert_eq!(other.unwrap(), Decision::LookUp);
    assert_eq!(
        decide(&name(), Known::NotLookedUp, &facts(), None).unwrap(),
        Decision::LookUp
    );
}

#[test]
fn demanding_pipes_without_a_parent_serving_the_name_says_why() {
    let err = select(Connect {
        target: &name(),
        known: Known::NotLookedUp,
        facts: &facts(),
        forced: forced(Transport::Pipe),
    });
    assert!(
        matches!(
            err,
            Err(ConnectError::PipeWithoutParent { parent: None, .. })
        ),
        "{err:?}"
    );
    let err = decide(
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
    let err = decide(
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
            pin: Some(pin),
            name: None,
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
        addresses: [
            "tcp://10.0.0.5:7000",
            "quic://10.0.0.5:7443",
            "unix:///local.sock",
            "quic://10.0.0.6:7443",
        ]
        .map(|url| url.parse().unwrap())
        .into(),
        source: "the discovery file /d.toml".into(),
    }
}

#[test]
fn resolved_addresses_are_tried_unix_then_quic_then_tcp() {
    let r = resolved();
    let Decision::Connect(plans) = decide(&name(), Known::Resolved(&r), &facts(), None).unwrap()
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
    let Decision::Connect(plans) = decide(
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
        addresses: vec![Endpoint::Tcp("h:1".into())],
        source: "the resolver".into(),
    };
    let err = decide(
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
    // Parsed where the resolver's text enters.
    let err = Status::from(
        Resolved::from_urls("calculator", ["tcp://nohost"], "the resolver").unwrap_err(),
    );
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
    let err = decide(
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
