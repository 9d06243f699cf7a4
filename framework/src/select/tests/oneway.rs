//! One-way routing and the track of each call.

use super::*;

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
    match select(OnewayRoute { facts, forced }) {
        OnewayVerdict::Connection(why) => why.to_string(),
        OnewayVerdict::Queue(name) => panic!("expected the connection, got the queue {name}"),
    }
}

#[test]
fn one_way_calls_take_the_queue_on_the_same_host_namespace_and_user() {
    assert_eq!(
        select(OnewayRoute {
            facts: &oneway_facts(),
            forced: None
        }),
        OnewayVerdict::Queue("/sy-1000-0a-log".into())
    );
    // Demanding the queue is no obstacle, and with no server connected the
    // queue alone decides.
    assert_eq!(
        select(OnewayRoute {
            facts: &oneway_facts(),
            forced: forced(Transport::MessageQueue)
        }),
        OnewayVerdict::Queue("/sy-1000-0a-log".into())
    );
    let standalone = OnewayFacts {
        locality: None,
        server_uid: None,
        ..oneway_facts()
    };
    assert_eq!(
        select(OnewayRoute {
            facts: &standalone,
            forced: None
        }),
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
        select(OnewaySelection {
            track: queue,
            connection: Some(Transport::Shm)
        })
        .to_string(),
        "mqueue: same host, IPC namespace and user: the server's queue /sy-q takes one-way calls \
         (up to 8192 bytes each; larger ones go over the connection) and keeps them across a \
         server restart (not shm: one-way calls need no response; the queue keeps them if the \
         server restarts)"
    );
    assert_eq!(
        select(OnewaySelection {
            track: queue,
            connection: None
        })
        .to_string(),
        "mqueue: no live server is reachable, but its queue /sy-q is: one-way calls wait in the \
         kernel until the server is back"
    );
    let why = Rejection::QueueNotKept {
        queue: "/sy-q".into(),
    };
    assert_eq!(
        select(OnewaySelection {
            track: OnewayTrack::Connection(&why),
            connection: Some(Transport::Tcp)
        })
        .to_string(),
        "tcp: one-way calls ride the connection (not mqueue: the server keeps no queue /sy-q \
         (message queues are off or unavailable there))"
    );
    assert_eq!(
        select(OnewaySelection {
            track: OnewayTrack::Connection(&why),
            connection: None
        })
        .transport,
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
    let call = |kind| select(CallTrack { kind, tracks: shm });
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
        select(CallTrack {
            kind: CallKind::OneWay { bytes: 10 },
            tracks: tcp
        }),
        Transport::Tcp
    );
    assert_eq!(
        select(CallTrack {
            kind: CallKind::Unary { bytes: 1 << 20 },
            tracks: tcp
        }),
        Transport::Tcp
    );
}
