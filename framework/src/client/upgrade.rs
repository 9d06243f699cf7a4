//! Moving a connection onto shared memory after the handshake: a client
//! that reached a server by a network address (`tcp://`, `quic://`) learns from the
//! server's hello that it runs on the same host and in the same IPC
//! namespace, and where its Unix socket is; it then sets up shared memory
//! over that socket and uses it instead, saying so in its selection.

use std::sync::Arc;

use super::connection::{Connection, ConnectionConfig};
use crate::select::{self, Forced, Upgrade};
use crate::transport::{Endpoint, shm};

/// The shared-memory connection that replaces `conn`, if
/// [`select::upgrade`] moves it and the set-up works; `None` keeps `conn`
/// (the reason is on its events).
pub(crate) async fn to_shm(
    conn: &Arc<Connection>,
    config: &ConnectionConfig,
    forced: Option<Forced>,
    presented_certificate: bool,
) -> Option<Arc<Connection>> {
    let peer_endpoints = Endpoint::parse_all(&conn.peer_hello.endpoints);
    let decision = select::upgrade(
        &conn.selection,
        &conn.url,
        conn.locality,
        &peer_endpoints,
        forced,
        presented_certificate,
    );
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
    let link = tokio::time::timeout(
        config.handshake_timeout,
        shm::connect(&path, shm::DEFAULT_CAPACITY),
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
