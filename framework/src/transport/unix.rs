//! Unix-domain stream sockets: the same-host fallback, and the transport the
//! shared-memory handshake rides on.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener as TokioUnixListener, UnixStream};

use super::intake::IntakeLimits;
use super::socket_tx::SocketTx;
use super::stream::StreamRx;
use super::{Link, LinkTuning, Listener, PeerInfo, Transport};

/// A connected Unix socket.
#[derive(Debug)]
pub struct UnixLink {
    stream: UnixStream,
    peer: PeerInfo,
    /// Bytes already read from the stream (while looking at how it starts).
    prefix: Vec<u8>,
    /// The limits its receiver holds partial frames under.
    intake: IntakeLimits,
}

impl UnixLink {
    fn new(stream: UnixStream, path: &Path) -> Self {
        let peer = peer_of(&stream, path);
        Self {
            stream,
            peer,
            prefix: Vec::new(),
            intake: IntakeLimits::default(),
        }
    }

    /// A link over `stream`, connected to the socket published at `path`.
    pub fn connected(stream: UnixStream, path: &Path) -> Self {
        Self::new(stream, path)
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
            intake: IntakeLimits::default(),
        }
    }
}

impl Link for UnixLink {
    type Tx = SocketTx<OwnedWriteHalf>;
    type Rx = StreamRx<OwnedReadHalf>;

    fn transport(&self) -> Transport {
        Transport::Unix
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
            StreamRx::with_prefix(read, frame_limit, &self.prefix).with_limits(self.intake),
        )
    }
}

/// The `unix://` URL of a socket path.
pub fn url(path: &Path) -> String {
    super::Endpoint::Unix(path.to_owned()).to_string()
}

/// Connects to the socket at `path`.
pub async fn connect(path: &Path) -> io::Result<UnixLink> {
    let stream = UnixStream::connect(path).await?;
    Ok(UnixLink::new(stream, path))
}

/// Connects through `via` (for example a `/proc/self/fd/<dir>/<name>` path
/// that does not depend on what a directory path points at now) to the
/// socket published as `shown`.
pub async fn connect_via(via: &Path, shown: &Path) -> io::Result<UnixLink> {
    let stream = UnixStream::connect(via).await?;
    Ok(UnixLink::new(stream, shown))
}

/// Opens Unix-socket links; optionally through another path (a
/// `/proc/self/fd/<dir>/<name>` path that does not depend on what a
/// directory path points at now) and checking who answered.
#[derive(Clone, Default)]
pub struct UnixConnector {
    through: Option<PathBuf>,
    check: Option<super::PeerCheck>,
}

impl std::fmt::Debug for UnixConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixConnector")
            .field("through", &self.through)
            .field("checks_peer", &self.check.is_some())
            .finish()
    }
}

impl UnixConnector {
    /// Connects to the endpoint's path.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects through `path` instead of the endpoint's path, which is
    /// still what the link shows.
    pub fn through(mut self, path: PathBuf) -> Self {
        self.through = Some(path);
        self
    }

    /// Refuses a socket whose peer `check` does not accept, before
    /// anything is sent to it.
    pub fn check(mut self, check: super::PeerCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Connects to the socket at `path` and checks who answered: the
    /// stream, and what the kernel says of the peer.
    pub async fn stream(&self, path: &Path) -> io::Result<UnixStream> {
        let stream = UnixStream::connect(self.through.as_deref().unwrap_or(path)).await?;
        if let Some(check) = &self.check {
            check(&peer_of(&stream, path))?;
        }
        Ok(stream)
    }
}

impl super::Connector for UnixConnector {
    type Link = UnixLink;
    type Error = io::Error;

    async fn connect(&self, endpoint: &super::Endpoint) -> io::Result<UnixLink> {
        let super::Endpoint::Unix(path) = endpoint else {
            return Err(super::wrong_endpoint(Transport::Unix, endpoint));
        };
        let stream = self.stream(path).await?;
        Ok(UnixLink::new(stream, path))
    }
}

/// What the kernel says of the peer of `stream`, connected to `path`
/// (SO_PEERCRED: the kernel's word on who is at the other end).
fn peer_of(stream: &UnixStream, path: &Path) -> PeerInfo {
    let cred = stream.peer_cred().ok();
    PeerInfo {
        addr: url(path),
        pid: cred
            .as_ref()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok()),
        uid: cred.as_ref().map(|c| c.uid()),
    }
}

/// Listens on a socket path; the socket file is removed when the listener
/// is dropped.
#[derive(Debug)]
pub struct UnixListener {
    listener: TokioUnixListener,
    path: PathBuf,
    /// When bound inside a directory handle: the handle and the name, which
    /// the socket is removed by.
    at: Option<(OwnedFd, String)>,
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
            at: None,
        })
    }

    /// Binds `name` inside the directory open at `dir`, never following a
    /// path to it (the socket is made through `/proc/self/fd/<dir>/<name>`),
    /// and publishes it as `shown`. A stale socket is replaced, a live one is
    /// `AddrInUse`, and anything else at `name` is `AlreadyExists`, as for
    /// [`bind`](Self::bind).
    pub fn bind_at(dir: BorrowedFd<'_>, name: &str, shown: &Path) -> io::Result<Self> {
        use rustix::fs::{AtFlags, FileType};
        let via = crate::discovery::runtime_dir::path_via_fd(dir, name);
        if !Path::new("/proc/self/fd").is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "binding inside the runtime directory by its handle needs /proc \
                 (/proc/self/fd/<dir>/<name>): mount procfs, or give the server a socket path \
                 of its own (ServerBuilder::unix_path)",
            ));
        }
        if let Ok(stat) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", shown.display()),
                ));
            }
            if std::os::unix::net::UnixStream::connect(&via).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a live server", shown.display()),
                ));
            }
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        }
        let listener = TokioUnixListener::bind(&via)?;
        let dir = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
        Ok(Self {
            listener,
            path: shown.to_owned(),
            at: Some((dir, name.to_owned())),
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
        match &self.at {
            Some((dir, name)) => {
                let _ = rustix::fs::unlinkat(dir, name.as_str(), rustix::fs::AtFlags::empty());
            }
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
