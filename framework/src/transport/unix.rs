//! Unix-domain stream sockets: the same-host fallback, and the transport the
//! shared-memory handshake rides on.

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener as TokioUnixListener, UnixStream};

use super::stream::{StreamRx, StreamTx};
use super::{Link, Listener, PeerInfo, Transport};

/// A connected Unix socket.
#[derive(Debug)]
pub struct UnixLink {
    stream: UnixStream,
    peer: PeerInfo,
    /// Bytes already read from the stream (while looking at how it starts).
    prefix: Vec<u8>,
}

impl UnixLink {
    fn new(stream: UnixStream, path: &Path) -> Self {
        // SO_PEERCRED: the kernel's word on who is at the other end.
        let cred = stream.peer_cred().ok();
        let peer = PeerInfo {
            addr: url(path),
            pid: cred
                .as_ref()
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok()),
            uid: cred.as_ref().map(|c| c.uid()),
        };
        Self {
            stream,
            peer,
            prefix: Vec::new(),
        }
    }

    /// The socket and what is known of the peer.
    pub fn into_parts(self) -> (UnixStream, PeerInfo) {
        (self.stream, self.peer)
    }

    /// A link over a socket whose first bytes (`prefix`) were already read.
    pub fn from_parts(stream: UnixStream, peer: PeerInfo, prefix: Vec<u8>) -> Self {
        Self {
            stream,
            peer,
            prefix,
        }
    }
}

impl Link for UnixLink {
    type Tx = StreamTx<OwnedWriteHalf>;
    type Rx = StreamRx<OwnedReadHalf>;

    fn transport(&self) -> Transport {
        Transport::Unix
    }

    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn split(self, frame_limit: u32) -> (Self::Tx, Self::Rx) {
        let (read, write) = self.stream.into_split();
        (
            StreamTx::new(write),
            StreamRx::with_prefix(read, frame_limit, &self.prefix),
        )
    }
}

/// The `unix://` URL of a socket path.
pub fn url(path: &Path) -> String {
    format!("unix://{}", path.display())
}

/// Connects to the socket at `path`.
pub async fn connect(path: &Path) -> io::Result<UnixLink> {
    let stream = UnixStream::connect(path).await?;
    Ok(UnixLink::new(stream, path))
}

/// Listens on a socket path; the socket file is removed when the listener
/// is dropped.
#[derive(Debug)]
pub struct UnixListener {
    listener: TokioUnixListener,
    path: PathBuf,
}

impl UnixListener {
    /// Binds `path`. A stale socket file left by a dead process is replaced;
    /// a socket someone is still listening on is an `AddrInUse` error, and a
    /// path that is not a socket is never removed (`AlreadyExists`).
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a live server", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = TokioUnixListener::bind(path)?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Listener for UnixListener {
    type Link = UnixLink;

    async fn accept(&mut self) -> io::Result<UnixLink> {
        let (stream, _) = self.listener.accept().await?;
        Ok(UnixLink::new(stream, &self.path))
    }

    fn local_url(&self) -> String {
        url(&self.path)
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
