//! Moving a connection onto shared memory after the handshake: a client
//! that reached a server by a network address (`tcp://`, `quic://`) learns from the
//! server's hello that it runs on the same host and in the same IPC
//! namespace, and where its Unix socket is; it then sets up shared memory
//! over that socket and uses it instead, saying so in its selection.

use std::sync::Arc;

use super::connection::{Connection, ConnectionConfig};
use crate::protocol::hello::Locality;
use crate::select::{Selection, Transport};
use crate::transport::shm;

/// The shared-memory connection that replaces `conn`, if the server is on
/// this host and the set-up works; `None` keeps `conn` (the reason is on
/// its events).
pub(crate) async fn to_shm(
    conn: &Arc<Connection>,
    config: &ConnectionConfig,
) -> Option<Arc<Connection>> {
    if conn.locality != Locality::SameHostSameIpc {
        return None;
    }
    let Some(path) = conn
        .peer_hello
        .endpoints
        .iter()
        .find_map(|e| e.strip_prefix("unix://"))
    else {
        conn.stats.event(
            "not upgraded",
            "the server is on this host but lists no Unix socket to set up shared memory over",
        );
        return None;
    };
    let via = conn.selection.transport;
    let selection = Selection {
        transport: Transport::Shm,
        reason: format!(
            "upgraded: reached {} over {via}, whose handshake showed the server on this host \
             (same boot id and IPC namespace), so the connection moved to shared memory set up \
             over its Unix socket {path}",
            conn.url
        ),
        rejected: vec![(
            via,
            format!(
                "the server is on this host: shared memory is faster ({via} only carried the \
                 handshake)"
            ),
        )],
    };
    let link = tokio::time::timeout(
        config.handshake_timeout,
        shm::connect(std::path::Path::new(path), shm::DEFAULT_CAPACITY),
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
                format!("shared memory over {path} failed ({status}); staying on {via}"),
            );
            None
        }
    }
}
