//! Moving a connection onto shared memory after the handshake: a client
//! that reached a server by a network address (`tcp://`, `quic://`) learns from the
//! server's hello that it runs on the same host and in the same IPC
//! namespace, and where its Unix socket is; it then sets up shared memory
//! over that socket and uses it instead, saying so in its selection.

use std::sync::Arc;

use super::connection::{Connection, ConnectionConfig};
use crate::protocol::hello::Hello;
use crate::select::{self, Forced, Upgrade, select};
use crate::transport::unix::UnixConnector;
use crate::transport::{Connector, Endpoint, PeerCheck, PeerInfo, shm};

/// The shared-memory connection that replaces `conn`, if
/// [`select`] moves it ([`select::MoveToShm`]) and the set-up works; `None` keeps `conn`
/// (the reason is on its events).
pub(crate) async fn to_shm(
    conn: &Arc<Connection>,
    config: &ConnectionConfig,
    forced: Option<Forced>,
    presented_certificate: bool,
) -> Option<Arc<Connection>> {
    let decision = select(select::MoveToShm {
        current: &conn.selection,
        url: &conn.url,
        locality: conn.locality,
        peer_endpoints: &conn.peer_hello.endpoints,
        forced,
        presented_certificate,
    });
    let (path, selection) = match decision {
        Upgrade::Move { socket, selection } => (socket, selection),
        Upgrade::Stay(why) => {
            if let Some(why) = why {
                conn.stats.event("not upgraded", why.to_string());
            }
            return None;
        }
    };
    let via = conn.selection.transport;
    // The socket must belong to the process whose hello named it: a server
    // may not send this client's calls to another process's socket.
    let connector = shm::ShmConnector::new(
        UnixConnector::new().check(hello_sender(&conn.peer_hello)),
        shm::DEFAULT_CAPACITY,
    );
    let link = tokio::time::timeout(
        config.handshake_timeout,
        connector.connect(&Endpoint::Shm(path.clone())),
    )
    .await;
    let opened = match link {
        Ok(Ok(link)) => Connection::open(link, selection, config).await,
        Ok(Err(err)) => Err(crate::Status::unavailable(err.to_string())),
        Err(_) => Err(crate::Status::unavailable("the set-up timed out")),
    };
    match opened {
        Ok(upgraded) => {
            tracing::debug!(from = %conn.url, to = %upgraded.url, "moved to shared memory");
            conn.close(crate::Status::unavailable(
                "this connection moved to shared memory",
            ));
            Some(upgraded)
        }
        Err(status) => {
            conn.stats.event(
                "not upgraded",
                format!(
                    "shared memory over {} failed ({status}); staying on {via}",
                    path.display()
                ),
            );
            None
        }
    }
}

/// Accepts the peer of a socket only if the kernel says it is the process
/// (pid and uid) whose `hello` named the socket.
fn hello_sender(hello: &Hello) -> PeerCheck {
    let (pid, uid) = (hello.pid, hello.uid);
    Arc::new(move |peer: &PeerInfo| {
        // A pid of 0: a process outside our pid namespace; the uid still counts.
        let pid_ok = matches!(peer.pid, Some(found) if found == pid || found == 0);
        if pid_ok && peer.uid == Some(uid) {
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "the server's hello names {addr} as its socket and itself as pid {pid} (uid \
                 {uid}), but the process there is pid {found_pid} (uid {found_uid}); not \
                 moving to it",
                addr = peer.addr,
                found_pid = peer
                    .pid
                    .map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
                found_uid = peer
                    .uid
                    .map_or_else(|| "unknown".to_owned(), |u| u.to_string()),
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(pid: u32, uid: u32) -> Hello {
        Hello {
            role: crate::protocol::hello::Role::Server,
            host: crate::protocol::hello::HostIdentity::default(),
            pid,
            uid,
            process_name: "server".into(),
            max_frame: 1024,
            max_in_flight: 1,
            services: Vec::new(),
            queues: Vec::new(),
            endpoints: Vec::new(),
            codecs: 0,
            features: 0,
        }
    }

    fn peer(pid: Option<u32>, uid: Option<u32>) -> PeerInfo {
        PeerInfo {
            addr: "unix:///run/s.sock".into(),
            pid,
            uid,
        }
    }

    #[test]
    fn only_the_process_that_sent_the_hello_gets_the_connection() {
        let check = hello_sender(&hello(42, 1000));
        assert!(check(&peer(Some(42), Some(1000))).is_ok());
        // Outside our pid namespace the kernel says 0: the uid still counts.
        assert!(check(&peer(Some(0), Some(1000))).is_ok());
        for (pid, uid) in [
            (Some(43), Some(1000)),
            (Some(42), Some(1001)),
            (None, Some(1000)),
            (Some(42), None),
        ] {
            let err = check(&peer(pid, uid)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(err.to_string().contains("not moving to it"), "{err}");
            assert!(err.to_string().contains("pid 42 (uid 1000)"), "{err}");
        }
    }
}
