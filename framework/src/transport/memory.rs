//! An in-process link pair: the reference implementation the conformance
//! suite checks the others against, and a way to run a client and a server
//! in one process without a socket.

use std::io;

use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::stream::{StreamRx, StreamTx};
use super::{Link, Listener, PeerInfo, Transport};

/// Bytes buffered in each direction before a sender waits.
const BUFFER: usize = 1 << 20;

/// One end of an in-process link.
#[derive(Debug)]
pub struct MemoryLink {
    stream: DuplexStream,
}

/// Two connected ends.
pub fn pair() -> (MemoryLink, MemoryLink) {
    let (a, b) = tokio::io::duplex(BUFFER);
    (MemoryLink { stream: a }, MemoryLink { stream: b })
}

impl Link for MemoryLink {
    type Tx = StreamTx<WriteHalf<DuplexStream>>;
    type Rx = StreamRx<ReadHalf<DuplexStream>>;

    fn transport(&self) -> Transport {
        Transport::Memory
    }

    fn peer(&self) -> PeerInfo {
        PeerInfo {
            addr: "memory://".into(),
            pid: Some(std::process::id()),
            uid: Some(crate::sys::uid()),
        }
    }

    fn split(self, frame_limit: u32) -> (Self::Tx, Self::Rx) {
        let (read, write) = tokio::io::split(self.stream);
        (StreamTx::new(write), StreamRx::new(read, frame_limit))
    }
}

/// Accepts in-process links made by [`MemoryConnector::connect`].
#[derive(Debug)]
pub struct MemoryListener {
    incoming: mpsc::UnboundedReceiver<MemoryLink>,
}

/// Makes in-process links to one [`MemoryListener`].
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    outgoing: mpsc::UnboundedSender<MemoryLink>,
}

/// A listener and the connector that reaches it.
pub fn listener() -> (MemoryListener, MemoryConnector) {
    let (outgoing, incoming) = mpsc::unbounded_channel();
    (MemoryListener { incoming }, MemoryConnector { outgoing })
}

impl MemoryConnector {
    /// Opens a link to the listener.
    pub fn connect(&self) -> io::Result<MemoryLink> {
        let (ours, theirs) = pair();
        self.outgoing.send(theirs).map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the in-memory listener is gone",
            )
        })?;
        Ok(ours)
    }
}

impl Listener for MemoryListener {
    type Link = MemoryLink;

    async fn accept(&mut self) -> io::Result<MemoryLink> {
        self.incoming.recv().await.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "every in-memory connector is gone",
            )
        })
    }

    fn local_url(&self) -> String {
        "memory://".into()
    }
}
