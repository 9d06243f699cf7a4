//! TCP with `TCP_NODELAY`: across hosts when QUIC is not available, and
//! wherever a caller names a `tcp://` address.

use std::io;
use std::net::SocketAddr;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener as TokioTcpListener, TcpStream};

use super::stream::{StreamRx, StreamTx};
use super::{Link, Listener, PeerInfo, Transport};

/// A connected TCP socket.
#[derive(Debug)]
pub struct TcpLink {
    stream: TcpStream,
    peer: PeerInfo,
}

impl TcpLink {
    fn new(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let peer = PeerInfo {
            addr: url(stream.peer_addr()?),
            pid: None,
            uid: None,
        };
        Ok(Self { stream, peer })
    }
}

impl Link for TcpLink {
    type Tx = StreamTx<OwnedWriteHalf>;
    type Rx = StreamRx<OwnedReadHalf>;

    fn transport(&self) -> Transport {
        Transport::Tcp
    }

    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn split(self, frame_limit: u32) -> (Self::Tx, Self::Rx) {
        let (read, write) = self.stream.into_split();
        (StreamTx::new(write), StreamRx::new(read, frame_limit))
    }
}

/// The `tcp://` URL of an address.
pub fn url(addr: SocketAddr) -> String {
    format!("tcp://{addr}")
}

/// Connects to `host:port` (names are resolved; each address is tried in
/// turn).
pub async fn connect(host_port: &str) -> io::Result<TcpLink> {
    TcpLink::new(TcpStream::connect(host_port).await?)
}

/// A bound TCP listener.
#[derive(Debug)]
pub struct TcpListener {
    listener: TokioTcpListener,
    addr: SocketAddr,
}

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: &str) -> io::Result<Self> {
        let listener = TokioTcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Listener for TcpListener {
    type Link = TcpLink;

    async fn accept(&mut self) -> io::Result<TcpLink> {
        let (stream, _) = self.listener.accept().await?;
        TcpLink::new(stream)
    }

    fn local_url(&self) -> String {
        url(self.addr)
    }
}
