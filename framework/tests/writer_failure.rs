//! A server whose link stops taking writes ends the connection: the calls
//! waiting on it fail at once with Unavailable, instead of waiting for
//! answers that can no longer be written until their deadlines, and the
//! server's introspection records why.

use std::io;
use std::time::Duration;

use switchyard::debug::IntrospectionClient;
use switchyard::transport::memory::{self, MemoryLink};
use switchyard::transport::{Link, LinkTx, PeerInfo, Transport};
use switchyard::{Channel, Code, Server};

/// Hands out blobs.
#[switchyard::service]
pub trait Blobs {
    /// `len` bytes.
    async fn blob(&self, len: u32) -> Vec<u8>;
}

struct Zeroes;

impl Blobs for Zeroes {
    async fn blob(&self, len: u32) -> Vec<u8> {
        vec![0; len as usize]
    }
}

/// Sends larger than this fail, as a link whose peer stopped reading or
/// whose kernel refused a write would.
const FAIL_ABOVE: usize = 4096;

/// A memory link whose sending half fails large writes.
struct FailingLink(MemoryLink);

struct FailingTx<T>(T);

impl<T: LinkTx> LinkTx for FailingTx<T> {
    async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        if frames.len() > FAIL_ABOVE {
            return Err(io::Error::other("injected write failure"));
        }
        self.0.send(frames).await
    }

    async fn close(&mut self) -> io::Result<()> {
        self.0.close().await
    }
}

impl Link for FailingLink {
    type Tx = FailingTx<<MemoryLink as Link>::Tx>;
    type Rx = <MemoryLink as Link>::Rx;

    fn transport(&self) -> Transport {
        self.0.transport()
    }

    fn peer(&self) -> PeerInfo {
        self.0.peer()
    }

    fn split(self, frame_limit: u32) -> (Self::Tx, Self::Rx) {
        let (tx, rx) = self.0.split(frame_limit);
        (FailingTx(tx), rx)
    }
}

#[tokio::test]
async fn a_failed_server_write_fails_the_waiting_call_at_once() {
    let server = Server::builder()
        .add_service(BlobsServer::new(Zeroes))
        .no_unix()
        .unpublished()
        .start()
        .await
        .unwrap();
    let (client_end, server_end) = memory::pair();
    server.serve_link(FailingLink(server_end));
    let deadline = Duration::from_secs(60);
    let channel = Channel::builder()
        .timeout(deadline)
        .connect_link(client_end)
        .await
        .unwrap();
    let client = BlobsClient::new(channel);
    assert_eq!(client.blob(10).await.unwrap().len(), 10);
    // The answer cannot be written: the call must not wait out its
    // deadline (the outer limit is far below it).
    let failed = tokio::time::timeout(Duration::from_secs(20), client.blob(100_000))
        .await
        .expect("the call ended long before its deadline");
    let status = failed.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    // The server says why it closed the connection.
    let (introspection_end, server_end) = memory::pair();
    server.serve_link(server_end);
    let snapshot = IntrospectionClient::new(
        Channel::builder()
            .connect_link(introspection_end)
            .await
            .unwrap(),
    )
    .snapshot()
    .await
    .unwrap();
    let events: Vec<_> = snapshot
        .connections
        .iter()
        .flat_map(|c| c.events.iter())
        .map(|e| format!("{e:?}"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.contains("write failed") && e.contains("injected write failure")),
        "{events:#?}"
    );
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown completes");
}
