//! Peer links: both ends serve and call over one link (a pipe between a
//! parent and its child). One driver reads the link: requests go to this
//! side's services, responses to this side's pending calls.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::client::{Connection, ConnectionConfig};
use crate::protocol::frame::Kind;
use crate::protocol::hello::Role;
use crate::protocol::status::Status;
use crate::select::Selection;
pub(crate) use crate::server::connection::End;
use crate::server::connection::{Established, drive, server_hello};
use crate::server::{Phase, ServerShared};
use crate::session::{Outbound, hello_frame, read_hello, status_frame};
use crate::transport::{Link, LinkTx};

/// An open peer link.
#[derive(Debug)]
pub(crate) struct PeerLink {
    /// This side's calls to the other side.
    pub(crate) conn: Arc<Connection>,
    /// Becomes `true` when the link has ended.
    pub(crate) ended: watch::Receiver<bool>,
    /// Stops the link (closing this side's pipe ends).
    pub(crate) stop: tokio::task::AbortHandle,
}

/// Aborts a task when dropped, so a stopped driver takes its writer along.
struct AbortOnDrop(tokio::task::JoinHandle<std::io::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a closure when dropped.
struct OnExit(Option<Box<dyn FnOnce() + Send>>);

impl Drop for OnExit {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Exchanges hellos on `link` (both sides send theirs at once), then serves
/// `shared`'s services and this side's calls over it until it ends. When it
/// ends, pending calls fail with the status `describe_end` makes.
pub(crate) async fn open_peer<L, D, F>(
    shared: Arc<ServerShared>,
    link: L,
    selection: Selection,
    config: &ConnectionConfig,
    describe_end: D,
) -> Result<PeerLink, Status>
where
    L: Link,
    D: FnOnce(End) -> F + Send + 'static,
    F: Future<Output = Status> + Send,
{
    let peer = link.peer();
    let url = peer.addr.clone();
    let (mut tx, mut rx) = link.split(shared.config.frame_limit);
    let hello = server_hello(&shared, Role::Peer);
    tx.send(&hello_frame(&hello))
        .await
        .map_err(|err| Status::unavailable(format!("could not send hello to {url}: {err}")))?;
    let mut frames = Vec::new();
    let peer_hello =
        match read_hello(&mut rx, Role::Peer, config.handshake_timeout, &mut frames).await {
            Ok(hello) => hello,
            Err(status) => {
                let _ = tx.send(&status_frame(Kind::GoAway, 0, &status)).await;
                return Err(Status::new(
                    status.code(),
                    format!("handshake with {url}: {}", status.message()),
                ));
            }
        };
    let (outgoing, writer) = Outbound::new(tx);
    let writer = AbortOnDrop(tokio::spawn(writer));
    let conn = Connection::established(
        selection.clone(),
        peer.clone(),
        &hello,
        peer_hello.clone(),
        outgoing.clone(),
        config,
        None,
    );
    let (ended_tx, ended) = watch::channel(false);
    let established = Established {
        peer,
        identity: None,
        hello,
        peer_hello,
        selection,
        frames,
        outgoing,
        client: Some(Arc::clone(&conn) as Arc<dyn crate::session::CallerSide>),
        tenancy: None,
    };
    let caller = Arc::clone(&conn);
    let stopped_caller = Arc::clone(&conn);
    let ended_on_stop = ended_tx.clone();
    let driver = tokio::spawn(async move {
        // Runs on every way out, abort included.
        let _on_exit = OnExit(Some(Box::new(move || {
            stopped_caller.close(Status::unavailable(
                "this side closed the pipe link; calls on it fail",
            ));
            let _ = ended_on_stop.send(true);
        })));
        // Nothing stops a peer link but its end: keep the phase sender.
        let (_serving, mut phase) = watch::channel(Phase::Serving);
        let end = drive(shared, established, &mut rx, &mut phase).await;
        let status = describe_end(end).await;
        caller.close(status);
        // Close our ends now, even while callers still hold the channel.
        drop(writer);
        drop(rx);
        let _ = ended_tx.send(true);
    });
    Ok(PeerLink {
        conn,
        ended,
        stop: driver.abort_handle(),
    })
}
