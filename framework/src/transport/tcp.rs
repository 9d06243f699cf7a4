//! TCP with `TCP_NODELAY`: across hosts when QUIC is not available, and
//! wherever a caller names a `tcp://` address.

use std::io;
use std::net::SocketAddr;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener as TokioTcpListener, TcpStream};

use super::intake::IntakeLimits;
use super::socket_tx::SocketTx;
use super::stream::StreamRx;
use super::{Link, LinkTuning, Listener, PeerInfo, Transport};

/// A connected TCP socket.
#[derive(Debug)]
pub struct TcpLink {
    stream: TcpStream,
    peer: PeerInfo,
    /// The limits its receiver holds partial frames under.
    intake: IntakeLimits,
}

impl TcpLink {
    fn new(stream: TcpStream) -> io::Result<Self> {
        let addr = stream.peer_addr()?;
        Self::accepted(stream, addr)
    }

    /// A link over a stream whose peer is `addr` (as `accept` returned it:
    /// asking the socket again fails once the peer has reset it).
    fn accepted(stream: TcpStream, addr: SocketAddr) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let peer = PeerInfo {
            addr: url(addr),
            pid: None,
            uid: None,
        };
        Ok(Self {
            stream,
            peer,
            intake: IntakeLimits::default(),
        })
    }
}

impl Link for TcpLink {
    type Tx = SocketTx<OwnedWriteHalf>;
    type Rx = StreamRx<OwnedReadHalf>;

    fn transport(&self) -> Transport {
        Transport::Tcp
    }

    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn tune(&mut self, tuning: &LinkTuning) {
        self.intake = tuning.intake.clone();
    }

    fn split(self, frame_limit: u32) -> (Self::Tx, Self::Rx) {
        let (read, write) = self.stream.into_split();
        (
            SocketTx::new(write),
            StreamRx::new(read, frame_limit).with_limits(self.intake),
        )
    }
}

/// The `tcp://` URL of an address.
pub fn url(addr: SocketAddr) -> String {
    super::Endpoint::Tcp(addr.to_string()).to_string()
}

/// Connects to `host:port` (names are resolved; each address is tried in
/// turn).
pub async fn connect(host_port: &str) -> io::Result<TcpLink> {
    TcpLink::new(TcpStream::connect(host_port).await?)
}

/// Connections the kernel completes and queues before the server accepts
/// them (capped by `net.core.somaxconn`): room for a burst of new clients,
/// or of resets, without refusing anyone while the accept loop catches up.
const BACKLOG: u32 = 1024;

/// A bound TCP listener.
#[derive(Debug)]
pub struct TcpListener {
    listener: TokioTcpListener,
    addr: SocketAddr,
}

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: &str) -> io::Result<Self> {
        let mut last = None;
        for candidate in tokio::net::lookup_host(addr).await? {
            match Self::bind_one(candidate) {
                Ok(listener) => return Ok(listener),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr:?} resolves to no address"),
            )
        }))
    }

    /// Binds one address with a listen backlog of [`BACKLOG`].
    fn bind_one(addr: SocketAddr) -> io::Result<Self> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
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
        let (stream, addr) = self.listener.accept().await?;
        TcpLink::accepted(stream, addr)
    }

    fn local_url(&self) -> String {
        url(self.addr)
    }
}

/// Opens TCP links.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl super::Connector for TcpConnector {
    type Link = TcpLink;
    type Error = io::Error;

    async fn connect(&self, endpoint: &super::Endpoint) -> io::Result<TcpLink> {
        match endpoint {
            super::Endpoint::Tcp(host_port) => connect(host_port).await,
            other => Err(super::wrong_endpoint(Transport::Tcp, other)),
        }
    }
}
