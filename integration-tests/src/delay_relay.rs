//! A relay that delays traffic, for kernels without `tc netem`: it listens
//! on a local address and forwards to an upstream one, holding every UDP
//! datagram, or every chunk of a TCP stream, for a fixed time in each
//! direction. Order within a TCP stream is kept; datagrams may reorder
//! only as much as the timer does. Runs on the tokio runtime it is started
//! on (and in that thread's network namespace); stops when dropped.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A running relay; dropping it stops every task it started.
#[derive(Debug)]
pub struct DelayRelay {
    addr: SocketAddr,
    _tasks: JoinSet<()>,
}

impl DelayRelay {
    /// Relays UDP from a port on `listen`'s address to `upstream`.
    pub async fn udp(
        listen: SocketAddr,
        upstream: SocketAddr,
        delay: Duration,
    ) -> io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        let addr = socket.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(relay_udp(socket, upstream, delay));
        Ok(Self {
            addr,
            _tasks: tasks,
        })
    }

    /// Relays TCP connections from a port on `listen`'s address to
    /// `upstream`.
    pub async fn tcp(
        listen: SocketAddr,
        upstream: SocketAddr,
        delay: Duration,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(relay_tcp(client, upstream, delay));
            }
        });
        Ok(Self {
            addr,
            _tasks: tasks,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Sends each `(due, datagram)` to `to` through `socket` once it is due.
async fn send_when_due(
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    mut queue: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
) {
    while let Some((due, datagram)) = queue.recv().await {
        tokio::time::sleep_until(due).await;
        let _ = match to {
            Some(to) => socket.send_to(&datagram, to).await,
            None => socket.send(&datagram).await,
        };
    }
}

/// Where datagrams from one client go: its own upstream socket.
type Upstream = mpsc::UnboundedSender<(Instant, Vec<u8>)>;

/// Opens the upstream socket for the client at `from`, and the tasks that
/// carry its datagrams both ways.
async fn open_upstream(
    socket: &Arc<UdpSocket>,
    from: SocketAddr,
    upstream: SocketAddr,
    delay: Duration,
    tasks: &mut JoinSet<()>,
) -> io::Result<Upstream> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let out = UdpSocket::bind(local).await?;
    out.connect(upstream).await?;
    let out = Arc::new(out);
    let (to_upstream, queue) = mpsc::unbounded_channel();
    tasks.spawn(send_when_due(Arc::clone(&out), None, queue));
    let (to_client, back) = mpsc::unbounded_channel();
    tasks.spawn(send_when_due(Arc::clone(socket), Some(from), back));
    tasks.spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(len) = out.recv(&mut buf).await {
            let due = Instant::now() + delay;
            if to_client.send((due, buf[..len].to_vec())).is_err() {
                return;
            }
        }
    });
    Ok(to_upstream)
}

async fn relay_udp(socket: Arc<UdpSocket>, upstream: SocketAddr, delay: Duration) {
    // One upstream socket per client address, so answers find their way.
    let mut peers: HashMap<SocketAddr, Upstream> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok((len, from)) = socket.recv_from(&mut buf).await {
        let due = Instant::now() + delay;
        let peer = match peers.entry(from) {
            std::collections::hash_map::Entry::Occupied(peer) => peer.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                match open_upstream(&socket, from, upstream, delay, &mut tasks).await {
                    Ok(peer) => slot.insert(peer),
                    Err(_) => continue,
                }
            }
        };
        let _ = peer.send((due, buf[..len].to_vec()));
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (chunks, mut queue) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = queue.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The reading side ended: pass the end on, after the delay too.
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if chunks
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

async fn relay_tcp(client: TcpStream, upstream: SocketAddr, delay: Duration) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, delay),
        pump(server_read, client_write, delay)
    );
}
