//! The session's clocks, through the real driver: keepalive pings find a
//! peer whose link was cut without a FIN (on either side), and a server's
//! idle timeout lets a connection go without losing a call that crosses
//! its GoAway.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard::protocol::Decoded;
use switchyard::transport::memory::{self, MemoryLink};
use switchyard::transport::{Link, LinkError, LinkRx, LinkTx, PeerInfo, Transport};
use switchyard::{Channel, Code, Server};

/// Echoes.
#[switchyard::service]
pub trait Echo {
    /// `text`, back.
    async fn echo(&self, text: String) -> String;
    /// Sleeps `ms` first.
    async fn slow(&self, ms: u64) -> u64;
}

struct Echoer;

impl Echo for Echoer {
    async fn echo(&self, text: String) -> String {
        text
    }

    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// A memory link that can be cut as a cable is: from then on nothing goes
/// either way and no end-of-file comes.
struct CuttableLink {
    link: MemoryLink,
    cut: Arc<AtomicBool>,
}

struct CutTx<T> {
    tx: T,
    cut: Arc<AtomicBool>,
}

struct CutRx<R> {
    rx: R,
    cut: Arc<AtomicBool>,
}

impl<T: LinkTx> LinkTx for CutTx<T> {
    async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        if self.cut.load(Ordering::Acquire) {
            // Into the void, as into a cut cable.
            return Ok(());
        }
        self.tx.send(frames).await
    }

    async fn close(&mut self) -> io::Result<()> {
        if self.cut.load(Ordering::Acquire) {
            return Ok(());
        }
        self.tx.close().await
    }
}

impl<R: LinkRx> LinkRx for CutRx<R> {
    async fn recv(&mut self, out: &mut Vec<Decoded>) -> Result<bool, LinkError> {
        loop {
            if self.cut.load(Ordering::Acquire) {
                return std::future::pending().await;
            }
            let mut got = Vec::new();
            tokio::select! {
                received = self.rx.recv(&mut got) => {
                    if !self.cut.load(Ordering::Acquire) {
                        out.append(&mut got);
                        return received;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
}

impl Link for CuttableLink {
    type Tx = CutTx<<MemoryLink as Link>::Tx>;
    type Rx = CutRx<<MemoryLink as Link>::Rx>;

    fn transport(&self) -> Transport {
        self.link.transport()
    }

    fn peer(&self) -> PeerInfo {
        self.link.peer()
    }

    fn split(self, frame_limit: u32) -> (Self::Tx, Self::Rx) {
        let (tx, rx) = self.link.split(frame_limit);
        (
            CutTx {
                tx,
                cut: Arc::clone(&self.cut),
            },
            CutRx { rx, cut: self.cut },
        )
    }
}

fn server_builder() -> switchyard::ServerBuilder {
    Server::builder()
        .add_service(EchoServer::new(Echoer))
        .no_unix()
        .unpublished()
}

#[tokio::test]
async fn a_client_whose_server_went_silent_fails_its_calls_within_the_keepalive_bound() {
    let server = server_builder().start().await.unwrap();
    let (client_end, server_end) = memory::pair();
    let cut = Arc::new(AtomicBool::new(false));
    server.serve_link(server_end);
    let interval = Duration::from_millis(200);
    let timeout = Duration::from_millis(300);
    let channel = Channel::builder()
        .timeout(Duration::from_secs(60))
        .keepalive(interval, timeout)
        .connect_link(CuttableLink {
            link: client_end,
            cut: Arc::clone(&cut),
        })
        .await
        .unwrap();
    let client = EchoClient::new(channel);
    assert_eq!(client.echo("before".into()).await.unwrap(), "before");
    // A long call is in flight when the cable is cut.
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.slow(3_000).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cut_at = Instant::now();
    cut.store(true, Ordering::Release);
    let status = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the call ended long before its deadline")
        .unwrap()
        .unwrap_err();
    let took = cut_at.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("keepalive"), "{status}");
    // Bound: the interval, then the timeout, plus scheduling slack.
    assert!(
        took <= interval + timeout + Duration::from_secs(2),
        "took {took:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_drops_a_client_whose_link_was_cut_within_the_keepalive_bound() {
    let interval = Duration::from_millis(200);
    let timeout = Duration::from_millis(300);
    let server = server_builder()
        .keepalive(interval, timeout)
        .start()
        .await
        .unwrap();
    let (client_end, server_end) = memory::pair();
    let cut = Arc::new(AtomicBool::new(false));
    server.serve_link(CuttableLink {
        link: server_end,
        cut: Arc::clone(&cut),
    });
    let channel = Channel::builder().connect_link(client_end).await.unwrap();
    let client = EchoClient::new(channel);
    let marker = format!("cut-{}", std::process::id());
    assert_eq!(client.echo(marker.clone()).await.unwrap(), marker);
    cut.store(true, Ordering::Release);
    let cut_at = Instant::now();
    // The server's side of that connection closes, saying why.
    let closed = loop {
        let snapshot = switchyard::debug::snapshot();
        let silent = snapshot.connections.iter().find(|c| {
            c.role == "server"
                && c.closed_unix_ms.is_some()
                && c.events
                    .iter()
                    .any(|e| format!("{e:?}").contains("peer silent"))
        });
        if let Some(conn) = silent {
            break conn.clone();
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(10),
            "the cut connection is still open after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = cut_at.elapsed();
    assert!(
        took <= interval + timeout + Duration::from_secs(2),
        "took {took:?}; {closed:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_is_let_go_and_no_call_is_lost_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let server = server_builder()
        .unix_path(&path)
        .idle_timeout(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let channel = Channel::builder()
        .connect(&format!("unix://{}", path.display()))
        .await
        .unwrap();
    let client = EchoClient::new(channel);
    // Calls with pauses around the idle timeout: some find the connection
    // gone (a new one is made), some cross its GoAway (refused as never
    // started, and made again): none fails.
    for i in 0..40u64 {
        let text = format!("call {i}");
        assert_eq!(client.echo(text.clone()).await.unwrap(), text);
        tokio::time::sleep(Duration::from_millis(80 + (i * 7) % 50)).await;
    }
    let idled = switchyard::debug::snapshot()
        .connections
        .iter()
        .filter(|c| {
            c.role == "server" && c.events.iter().any(|e| format!("{e:?}").contains("idle"))
        })
        .count();
    assert!(idled > 0, "some connections went idle");
    server.shutdown().await;
}
