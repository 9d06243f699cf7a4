//! Selections with one outcome, and reasons compared with their text.

use super::*;

#[test]
fn selections_with_one_outcome_say_why() {
    let texts = [
        (
            select(Fixed::Accepted(Transport::Shm)),
            "shm: the client set up shared memory over this server's Unix socket",
        ),
        (
            select(Fixed::Accepted(Transport::Tcp)),
            "tcp: the client connected to this server's tcp listener",
        ),
        (
            select(Fixed::QueueOwned { queue: "/sy-q" }),
            "mqueue: one-way calls queued in /sy-q, owned by this server",
        ),
        (
            select(Fixed::QueueStandIn {
                target: "log",
                queue: "/sy-q",
            }),
            "mqueue: no live process publishes \"log\", but its queue /sy-q is there: one-way \
             calls wait in the kernel until the server is back; other calls reconnect",
        ),
        (
            select(Fixed::CallerLink(Transport::Memory)),
            "memory: the caller supplied a memory link",
        ),
        (
            select(Fixed::SpawnedChild {
                program: "worker",
                pid: 9,
            }),
            "pipe: this process spawned worker (pid 9) with inherited pipes",
        ),
        (
            select(Fixed::ParentPipe { ppid: 3 }),
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
