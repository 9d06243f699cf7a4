//! After the handshake: locality notes, the upgrade, the shm fallback.

use std::path::Path;

use super::*;

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
    let tcp = select(HandshakeNote {
        selection: named(Transport::Tcp),
        local: &host(),
        peer: &host(),
    });
    assert_eq!(
        tcp.reason.to_string(),
        "the caller named a tcp:// address; the handshake shows the peer is on this host (same \
         host: boot id and IPC namespace match)"
    );
    let elsewhere = HostIdentity {
        boot_id: "boot-2".into(),
        ..host()
    };
    let quic = select(HandshakeNote {
        selection: named(Transport::Quic),
        local: &host(),
        peer: &elsewhere,
    });
    assert_eq!(
        quic.reason.to_string(),
        "the caller named a quic:// address; another host: boot ids differ"
    );
    let unix = select(HandshakeNote {
        selection: named(Transport::Unix),
        local: &host(),
        peer: &host(),
    });
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
    let decision = select(MoveToShm {
        current: &over_tcp(),
        url: "tcp://127.0.0.1:7000",
        locality: Locality::SameHostSameIpc,
        peer_endpoints: &endpoints,
        forced: None,
        presented_certificate: false,
    });
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
    let stay =
        |current: &Selection, locality, peer_endpoints: &[Endpoint], forced, cert| match select(
            MoveToShm {
                current,
                url: "x",
                locality,
                peer_endpoints,
                forced,
                presented_certificate: cert,
            },
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
    let fallback = select(ShmFallback {
        planned: &planned,
        error: "the server refused the offer".into(),
    });
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
