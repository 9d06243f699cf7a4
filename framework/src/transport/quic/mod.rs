//! QUIC (quinn, rustls with the ring provider): across machines, always
//! encrypted, with one stream per call so that calls do not wait for each
//! other.
//!
//! # Streams
//!
//! Upward the link is like every other: whole frames in, whole frames out.
//! Underneath, the sending half splits what it is given at frame boundaries
//! and puts each frame on a stream of its own call:
//!
//! | frame | stream |
//! |-------|--------|
//! | Request | a new bidirectional stream, opened by the caller; it stays open for the call's Cancel |
//! | OneWay | a new bidirectional stream, finished after the frame |
//! | Cancel | the stream of its Request, which is then finished |
//! | Response | the stream its Request came on, which is then finished |
//! | Data, End, Credit from the caller | the stream of its Request, behind it |
//! | Data, Credit from the callee (`FLAG_FROM_CALLEE`) | the stream its Request came on, kept open until the Response |
//! | Hello, Ping, Pong, GoAway | the sender's control stream |
//!
//! Each side has one control stream, a unidirectional stream it opens with
//! its first connection-level frame; a Cancel or Response whose call has no
//! open stream any more goes there too. Both sides may start calls. A side
//! sends its calls only after the peer's hello has arrived, and the peer
//! sends its hello before anything else, so each side still receives the
//! hello first.
//!
//! The receiving half reads every stream, each through its own
//! [`FrameDecoder`](crate::protocol::frame::FrameDecoder) with the frame
//! limit, and hands over frames as they complete. Frames of one call
//! arrive in the order they were sent; frames of different calls need not:
//! a small response overtakes a large one sent before it, and a lost packet
//! holds up only the streams whose data it carried. Streams are flow
//! controlled one by one ([`QuicConfig::stream_window`]), and a peer may
//! have at most [`QuicConfig::max_streams`] calls' streams open at once;
//! opening one more waits until a call ends.
//!
//! # Ends
//!
//! Closing the sending half finishes every stream it writes, waits until
//! the peer has acknowledged the streams it opened, then finishes the
//! control stream: so the receiver, when its peer's control stream ends,
//! knows every stream there will be and ends cleanly (`Ok(false)`) once
//! they have all ended. Dropping the half does the same in the background.
//! The connection itself closes when both halves are gone. A stream that
//! ends inside a frame is reported as
//! [`TruncatedFrame`](crate::transport::LinkError::TruncatedFrame) once the
//! others have ended; bytes that are not frames, at once.
//!
//! # TLS
//!
//! TLS 1.3 with the ALPN protocol `switchyard/1`. A listener presents an
//! [`Identity`]: a self-signed certificate made when it starts
//! ([`QuicListener::bind`]) or one loaded from PEM files
//! ([`Identity::from_pem_files`]). Clients trust the server by pinning the
//! SHA-256 [`Fingerprint`] of its certificate
//! ([`QuicListener::fingerprint`]); a mismatch fails [`connect`] with
//! [`ConnectError::FingerprintMismatch`], naming both fingerprints.
//!
//! # Floods of connection attempts
//!
//! A client's first packet (an Initial, 1200 bytes or more) may come from
//! a spoofed address; QUIC lets a server send such an address up to three
//! times what it received until the address is validated. A listener
//! therefore ([`QuicConfig::address_validation`], default
//! [`AddressValidation::Always`]) answers an Initial from an address that
//! is not validated with a Retry (about 110 bytes, no state kept), and
//! starts a handshake only when the client comes back with the Retry's
//! token. At most [`QuicConfig::max_handshakes`] handshakes are under way
//! at once: attempts beyond them are ignored, and the client sends its
//! Initial again on its own timer. A handshake that does not finish within
//! [`QuicConfig::handshake_timeout`] is dropped with its state. Attempts
//! the listener has not looked at yet are capped at [`PENDING_INITIALS`],
//! with at most [`PENDING_BYTES`] of further packets buffered for them.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use quinn::{Connection, ConnectionError, Endpoint, VarInt};
use tokio::sync::mpsc;

use super::{Link, Listener, PeerInfo, Transport};

mod calls;
mod config;
mod env;
mod rx;
mod tls;
mod trust;
mod tx;

pub use config::{AddressValidation, ConfigError, QuicConfig};
pub use env::{
    TLS_CA_ENV, TLS_CERT_ENV, TLS_CLIENT_CA_ENV, TLS_KEY_ENV, identity_from_env, roots_from_env,
};
pub use rx::QuicRx;
pub use tls::{ALPN, Fingerprint, FingerprintParseError, Identity, IdentityError};
pub use trust::{CaRoots, ClientTls, ServerTls, Trust};
pub use tx::QuicTx;

/// How many connection attempts quinn keeps for the listener to look at
/// (each a few KiB: the Initial and its keys); more are dropped unseen
/// and their clients send them again.
pub const PENDING_INITIALS: usize = 2048;

/// How many bytes of packets that followed an Initial quinn buffers for all
/// attempts the listener has not looked at yet (64 KiB for one).
pub const PENDING_BYTES: u64 = 4 << 20;

/// How often, at most, the listener warns that its handshakes are at their
/// limit.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The `quic://` URL of an address.
pub fn url(addr: SocketAddr) -> String {
    super::Endpoint::Quic {
        host_port: addr.to_string(),
        pin: None,
        name: None,
    }
    .to_string()
}

/// Why a [`QuicListener`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The address did not resolve.
    #[error("cannot listen on {addr}: {source}")]
    Resolve {
        /// The address asked for.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The UDP socket could not be bound.
    #[error("cannot bind a UDP socket on {addr}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The certificate or key is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl From<BindError> for io::Error {
    fn from(err: BindError) -> Self {
        let kind = match &err {
            BindError::Resolve { source, .. } | BindError::Socket { source, .. } => source.kind(),
            BindError::Config(_) | BindError::Identity(_) => io::ErrorKind::InvalidInput,
        };
        Self::new(kind, err)
    }
}

/// A QUIC endpoint accepting connections.
pub struct QuicListener {
    endpoint: Endpoint,
    addr: SocketAddr,
    /// How long a closed link's streams may take to drain.
    linger: Duration,
    fingerprint: Fingerprint,
    /// Handshakes under way, so that a slow client holds up no other; each
    /// ends with its client's address.
    handshakes: FuturesUnordered<BoxFuture<'static, (IpAddr, io::Result<Connection>)>>,
    /// Handshakes under way by client address.
    per_address: HashMap<IpAddr, usize>,
    /// How many of them one address may have.
    max_per_address: usize,
    /// When a client must prove its address first.
    validation: AddressValidation,
    /// How many handshakes may be under way.
    max_handshakes: usize,
    /// How long one may take.
    handshake_timeout: Duration,
    /// What the listener did with connection attempts.
    counts: Arc<AttemptTally>,
    /// When the listener last warned that its handshakes were at their
    /// limit, and how many attempts it ignored since.
    cap_warned: Option<std::time::Instant>,
    ignored_since_warning: u64,
}

/// What a [`QuicListener`] did with the connection attempts it saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptCounts {
    /// Answered with a Retry: the address was not validated.
    pub retried: u64,
    /// Ignored: the handshakes were at their limit.
    pub ignored: u64,
    /// Ignored: the client's address had as many handshakes under way as
    /// one address may.
    pub ignored_per_address: u64,
    /// Handshakes started.
    pub started: u64,
    /// Handshakes that did not finish within the handshake timeout.
    pub timed_out: u64,
}

/// A listener's [`AttemptCounts`] as they change, readable from elsewhere
/// (the debug endpoint) while the listener accepts.
#[derive(Debug, Default)]
pub struct AttemptTally {
    retried: AtomicU64,
    ignored: AtomicU64,
    ignored_per_address: AtomicU64,
    started: AtomicU64,
    timed_out: AtomicU64,
}

impl AttemptTally {
    /// The counts now.
    pub fn counts(&self) -> AttemptCounts {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AttemptCounts {
            retried: get(&self.retried),
            ignored: get(&self.ignored),
            ignored_per_address: get(&self.ignored_per_address),
            started: get(&self.started),
            timed_out: get(&self.timed_out),
        }
    }

    /// The counts as named events (for the debug endpoint).
    pub fn events(&self) -> Vec<(&'static str, u64)> {
        let counts = self.counts();
        vec![
            ("retried", counts.retried),
            ("ignored_at_limit", counts.ignored),
            ("ignored_per_address", counts.ignored_per_address),
            ("handshakes_started", counts.started),
            ("handshakes_timed_out", counts.timed_out),
        ]
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl std::fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicListener")
            .field("addr", &self.addr)
            .field("fingerprint", &self.fingerprint)
            .field("handshakes", &self.handshakes.len())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl QuicListener {
    /// Binds `addr` (`host:port`; port 0 picks a free port) with a fresh
    /// self-signed certificate and the default settings. Clients need
    /// [`fingerprint`](Self::fingerprint) to connect.
    pub async fn bind(addr: &str) -> Result<Self, BindError> {
        let identity = Identity::self_signed(&["localhost"])?;
        Self::bind_with(addr, &identity, &QuicConfig::default()).await
    }

    /// Binds `addr` presenting `identity`, with `config`.
    pub async fn bind_with(
        addr: &str,
        identity: &Identity,
        config: &QuicConfig,
    ) -> Result<Self, BindError> {
        Self::bind_tls(addr, &ServerTls::new(identity.clone()), config).await
    }

    /// Binds `addr` with the TLS settings `tls` (which may require client
    /// certificates) and `config`.
    pub async fn bind_tls(
        addr: &str,
        tls: &ServerTls,
        config: &QuicConfig,
    ) -> Result<Self, BindError> {
        let identity = &tls.identity;
        let resolve = |source| BindError::Resolve {
            addr: addr.to_owned(),
            source,
        };
        let wanted = tokio::net::lookup_host(addr)
            .await
            .map_err(resolve)?
            .next()
            .ok_or_else(|| {
                resolve(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the name resolved to no address",
                ))
            })?;
        let server = quinn_server_config(tls, config)?;
        let socket = |source| BindError::Socket {
            addr: wanted,
            source,
        };
        let endpoint = Endpoint::server(server, wanted).map_err(socket)?;
        let addr = endpoint.local_addr().map_err(socket)?;
        tracing::debug!(%addr, fingerprint = %identity.fingerprint(), "QUIC listener bound");
        Ok(Self {
            endpoint,
            addr,
            linger: config.idle_timeout,
            fingerprint: identity.fingerprint(),
            handshakes: FuturesUnordered::new(),
            per_address: HashMap::new(),
            max_per_address: config.max_handshakes_per_address,
            validation: config.address_validation,
            max_handshakes: config.max_handshakes,
            handshake_timeout: config.handshake_timeout,
            counts: Arc::default(),
            cap_warned: None,
            ignored_since_warning: 0,
        })
    }

    /// What this listener did with the connection attempts it has seen so
    /// far.
    pub fn attempt_counts(&self) -> AttemptCounts {
        self.counts.counts()
    }

    /// The same counts, readable while the listener accepts elsewhere.
    pub fn attempt_tally(&self) -> Arc<AttemptTally> {
        Arc::clone(&self.counts)
    }

    /// How many handshakes are under way.
    pub fn handshakes_under_way(&self) -> usize {
        self.handshakes.len()
    }

    /// Decides what becomes of a connection attempt: a Retry if its address
    /// must be validated first, nothing if the handshakes are at their
    /// limit, else a handshake bounded by the handshake timeout.
    fn admit(&mut self, incoming: quinn::Incoming) {
        let from = incoming.remote_address();
        let under_way = self.handshakes.len();
        let incoming = if !incoming.remote_address_validated() && self.validation.retry(under_way) {
            match incoming.retry() {
                Ok(()) => {
                    bump(&self.counts.retried);
                    tracing::trace!(%from, "QUIC attempt answered with a Retry");
                    return;
                }
                // Only an attempt that already carries a Retry's token
                // cannot be retried, and such an address is validated:
                // cannot happen, but if it did, go on as without a Retry.
                Err(err) => err.into_incoming(),
            }
        } else {
            incoming
        };
        if under_way >= self.max_handshakes {
            // Nothing is sent back: the client (if there is one at that
            // address) sends its Initial again later.
            incoming.ignore();
            bump(&self.counts.ignored);
            self.ignored_since_warning += 1;
            let now = std::time::Instant::now();
            if self
                .cap_warned
                .is_none_or(|at| now.duration_since(at) >= CAP_WARNING_EVERY)
            {
                tracing::warn!(
                    listener = %url(self.addr),
                    max_handshakes = self.max_handshakes,
                    ignored = self.ignored_since_warning,
                    "QUIC handshakes at their limit: ignoring new connection attempts until some \
                     finish (their clients send them again); raise QuicConfig::max_handshakes if \
                     genuine clients arrive in bursts this large"
                );
                self.cap_warned = Some(now);
                self.ignored_since_warning = 0;
            }
            return;
        }
        let ip = from.ip();
        let by_address = self.per_address.get(&ip).copied().unwrap_or(0);
        if by_address >= self.max_per_address {
            incoming.ignore();
            bump(&self.counts.ignored_per_address);
            tracing::debug!(
                %from,
                max = self.max_per_address,
                "QUIC attempt ignored: its address has as many handshakes under way as one may \
                 (QuicConfig::max_handshakes_per_address)"
            );
            return;
        }
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(err) => {
                tracing::debug!(%from, %err, "QUIC attempt could not be accepted");
                return;
            }
        };
        bump(&self.counts.started);
        *self.per_address.entry(ip).or_default() += 1;
        let timeout = self.handshake_timeout;
        self.handshakes.push(Box::pin(async move {
            let result = match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(err)) => Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("QUIC handshake with {from} failed: {err}"),
                )),
                // Dropping the handshake closes the connection: quinn
                // frees its state once the close has had time to arrive.
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "QUIC handshake with {from} did not finish within {timeout:?} \
                         (QuicConfig::handshake_timeout)"
                    ),
                )),
            };
            (ip, result)
        }));
    }

    /// A handshake from `ip` ended.
    fn handshake_ended(&mut self, ip: IpAddr) {
        if let Some(count) = self.per_address.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&ip);
            }
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SHA-256 fingerprint of the certificate this listener presents:
    /// what clients pin (hex when printed).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

impl Listener for QuicListener {
    type Link = QuicLink;

    async fn accept(&mut self) -> io::Result<QuicLink> {
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else {
                        return Err(io::Error::new(
                            io::ErrorKind::NotConnected,
                            "the QUIC endpoint was closed",
                        ));
                    };
                    self.admit(incoming);
                }
                Some((ip, handshake)) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    self.handshake_ended(ip);
                    match handshake {
                        Ok(conn) => return Ok(QuicLink::new(conn, None, self.linger)),
                        // One peer's failed handshake (wrong ALPN, no or a
                        // bad client certificate, junk, silence) is that
                        // peer's problem: the listener goes on at once.
                        Err(err) => {
                            if err.kind() == io::ErrorKind::TimedOut {
                                bump(&self.counts.timed_out);
                            }
                            tracing::debug!(%err, "QUIC handshake failed");
                        }
                    }
                }
            }
        }
    }

    fn local_url(&self) -> String {
        url(self.addr)
    }
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The target is not `host:port` or did not resolve.
    #[error("cannot resolve {target}: {source}; give host:port, e.g. 10.0.0.5:7000")]
    Resolve {
        /// The target as given.
        target: String,
        /// Why.
        source: io::Error,
    },
    /// No local UDP socket could be opened.
    #[error("cannot open a UDP socket for QUIC: {0}")]
    Socket(io::Error),
    /// The endpoint is not a `quic://` one.
    #[error("the quic connector cannot open {0}; give it a quic://host:port endpoint")]
    NotQuic(String),
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server presented a certificate other than the pinned one.
    #[error(
        "the server at {addr} presented a certificate whose SHA-256 fingerprint did not match \
         the pin: expected {expected}, seen {seen}; pin the server's current fingerprint (a \
         server with a self-signed certificate gets a new one each time it starts) or check \
         that this address is the server you mean"
    )]
    FingerprintMismatch {
        /// The server's address.
        addr: SocketAddr,
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// What the server presented.
        seen: Fingerprint,
    },
    /// The server's certificate is not issued by the trusted authorities
    /// for the name connected to.
    #[error(
        "the server at {addr} presented a certificate that the certificate authorities in \
         {roots} do not vouch for ({reason}); check that its certificate is issued by that CA \
         for the name or address you connected to"
    )]
    Untrusted {
        /// The server's address.
        addr: SocketAddr,
        /// Where the trusted roots came from.
        roots: String,
        /// What the verifier said.
        reason: String,
    },
    /// This side's TLS settings are unusable.
    #[error(transparent)]
    Tls(IdentityError),
    /// The connection could not be started or the handshake failed.
    #[error("the QUIC handshake with {addr} failed: {reason}")]
    Handshake {
        /// The server's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl From<ConnectError> for io::Error {
    fn from(err: ConnectError) -> Self {
        let kind = match &err {
            ConnectError::Resolve { source, .. } | ConnectError::Socket(source) => source.kind(),
            ConnectError::Config(_) | ConnectError::NotQuic(_) => io::ErrorKind::InvalidInput,
            ConnectError::FingerprintMismatch { .. } | ConnectError::Untrusted { .. } => {
                io::ErrorKind::PermissionDenied
            }
            ConnectError::Tls(_) => io::ErrorKind::InvalidInput,
            ConnectError::Handshake { .. } => io::ErrorKind::ConnectionRefused,
        };
        Self::new(kind, err)
    }
}

/// Connects to `host_port` (names are resolved; each address is tried in
/// turn) with the default settings, trusting only the server whose
/// certificate has the fingerprint `pin`.
pub async fn connect(host_port: &str, pin: &Fingerprint) -> Result<QuicLink, ConnectError> {
    connect_with(host_port, pin, &QuicConfig::default()).await
}

/// Connects as [`connect`] does, with `config`.
pub async fn connect_with(
    host_port: &str,
    pin: &Fingerprint,
    config: &QuicConfig,
) -> Result<QuicLink, ConnectError> {
    connect_tls(host_port, &ClientTls::pinned(*pin), config).await
}

/// Opens QUIC links with one client's TLS settings and transport
/// configuration.
#[derive(Clone, Debug)]
pub struct QuicConnector {
    tls: ClientTls,
    config: QuicConfig,
}

impl QuicConnector {
    /// Connects trusting and presenting as `tls` says, with `config`.
    pub fn new(tls: ClientTls, config: QuicConfig) -> Self {
        Self { tls, config }
    }
}

impl crate::transport::Connector for QuicConnector {
    type Link = QuicLink;
    type Error = ConnectError;

    async fn connect(
        &self,
        endpoint: &crate::transport::Endpoint,
    ) -> Result<QuicLink, ConnectError> {
        match endpoint {
            crate::transport::Endpoint::Quic {
                host_port, name, ..
            } => connect_named(host_port, name.as_deref(), &self.tls, &self.config).await,
            other => Err(ConnectError::NotQuic(other.to_string())),
        }
    }
}

/// Connects to `host_port` (names are resolved; each address is tried in
/// turn until one answers) with the TLS settings `tls` and `config`.
pub async fn connect_tls(
    host_port: &str,
    tls: &ClientTls,
    config: &QuicConfig,
) -> Result<QuicLink, ConnectError> {
    connect_named(host_port, None, tls, config).await
}

/// [`connect_tls`], checking the server's certificate against `name`
/// instead of the host when one is given.
async fn connect_named(
    host_port: &str,
    name: Option<&str>,
    tls: &ClientTls,
    config: &QuicConfig,
) -> Result<QuicLink, ConnectError> {
    let resolve = |source| ConnectError::Resolve {
        target: host_port.to_owned(),
        source,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port)
        .await
        .map_err(resolve)?
        .collect();
    let transport = Arc::new(config.transport()?);
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    // The name the server is asked for. A pin does not look at it; CA trust
    // checks the certificate against it (an IP address against IP SANs).
    let server_name = match name {
        Some(name) => name,
        None if host.is_empty() => "switchyard",
        None => host,
    };
    let mut last = resolve(io::Error::new(
        io::ErrorKind::NotFound,
        "the name resolved to no address",
    ));
    for addr in addrs {
        match connect_addr(addr, server_name, tls, &transport, config.idle_timeout).await {
            Ok(link) => return Ok(link),
            Err(
                err @ (ConnectError::FingerprintMismatch { .. } | ConnectError::Untrusted { .. }),
            ) => {
                return Err(err);
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

async fn connect_addr(
    addr: SocketAddr,
    server_name: &str,
    tls: &ClientTls,
    transport: &Arc<quinn::TransportConfig>,
    linger: Duration,
) -> Result<QuicLink, ConnectError> {
    let handshake = |reason: String| ConnectError::Handshake { addr, reason };
    let (client, pinned) = client_config(tls, transport)?;
    let local = match addr {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let endpoint = Endpoint::client(local).map_err(ConnectError::Socket)?;
    let connecting = endpoint
        .connect_with(client, addr, server_name)
        .map_err(|err| handshake(err.to_string()))?;
    match connecting.await {
        Ok(conn) => Ok(QuicLink::new(conn, Some(endpoint), linger)),
        Err(err) => Err(
            match (pinned.as_ref().and_then(|p| p.mismatch()), &tls.trust) {
                (Some(seen), Trust::Pin(pin)) => ConnectError::FingerprintMismatch {
                    addr,
                    expected: *pin,
                    seen,
                },
                (_, Trust::Roots(roots)) if is_certificate_error(&err) => ConnectError::Untrusted {
                    addr,
                    roots: roots.source().to_owned(),
                    reason: err.to_string(),
                },
                _ => handshake(format!("{err}{}", tls_alert_hint(&err))),
            },
        ),
    }
}

/// Whether the handshake failed because this side refused the server's
/// certificate.
fn is_certificate_error(err: &ConnectionError) -> bool {
    matches!(err, ConnectionError::TransportError(e) if e.to_string().contains("certificate"))
}

/// What a TLS alert from the peer means for the user, if we know.
fn tls_alert_hint(err: &ConnectionError) -> &'static str {
    let ConnectionError::ConnectionClosed(close) = err else {
        return "";
    };
    match u64::from(close.error_code) {
        // certificate_required (116): mutual TLS without a client certificate.
        0x174 => {
            "; the server requires a client certificate (mutual TLS): give the client an \
             identity (ChannelBuilder::tls_identity, or SWITCHYARD_TLS_CERT and \
             SWITCHYARD_TLS_KEY)"
        }
        // certificate_expired (45): the clock, or a certificate to renew.
        0x12d => {
            "; the server says this client's certificate has expired: issue a new one (or \
             check the clocks)"
        }
        // certificate_revoked (44).
        0x12c => "; the server says this client's certificate was revoked: issue a new one",
        // bad_certificate (42), unsupported_certificate (43), unknown_ca (48),
        // certificate_unknown (46).
        0x12a | 0x12b | 0x130 | 0x12e => {
            "; the server refused this client's certificate: it must be issued by a CA the \
             server trusts for clients"
        }
        // no_application_protocol (120).
        0x178 => "; the peer does not speak switchyard/1 (ALPN): is this a switchyard server?",
        _ => "",
    }
}

bench_internal! {
    /// The quinn configuration of a [`QuicListener`] presenting `identity` with
    /// `config`: TLS 1.3 on ring, ALPN [`ALPN`], and the transport parameters
    /// of `config`. For speaking plain quinn with exactly this transport's
    /// settings, as the bench lab (`switchyard-bench`) does for its raw baseline.
    pub fn quinn_server_config(
        tls: &ServerTls,
        config: &QuicConfig,
    ) -> Result<quinn::ServerConfig, BindError> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(
            tls.identity.server_config(tls.client_roots.as_ref())?,
        )
        .map_err(|err| {
            IdentityError::Rejected(rustls::Error::General(format!(
                "no TLS 1.3 cipher suite QUIC can use: {err}"
            )))
        })?;
        config.check_listener()?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server
            .transport_config(Arc::new(config.transport()?))
            .max_incoming(PENDING_INITIALS)
            .incoming_buffer_size(64 << 10)
            .incoming_buffer_size_total(PENDING_BYTES);
        Ok(server)
    }
}

bench_internal! {
    /// The quinn configuration [`connect_tls`] uses with `tls` and `config`
    /// (see [`quinn_server_config`]); only the bench lab and the tests use it.
    pub fn quinn_client_config(
        tls: &ClientTls,
        config: &QuicConfig,
    ) -> Result<quinn::ClientConfig, ConnectError> {
        let transport = Arc::new(config.transport()?);
        client_config(tls, &transport).map(|(client, _)| client)
    }
}

/// The quinn client configuration for `tls`, and, when it pins, the
/// verifier that keeps what the server presented.
fn client_config(
    tls: &ClientTls,
    transport: &Arc<quinn::TransportConfig>,
) -> Result<(quinn::ClientConfig, Option<Arc<tls::PinnedServer>>), ConnectError> {
    let (crypto, pinned) = tls::client_config(tls).map_err(ConnectError::Tls)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|err| {
        ConnectError::Tls(IdentityError::Rejected(rustls::Error::General(format!(
            "no TLS 1.3 cipher suite QUIC can use: {err}"
        ))))
    })?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::clone(transport));
    Ok((client, pinned))
}

/// An established QUIC connection.
#[derive(Debug)]
pub struct QuicLink {
    conn: Connection,
    /// A client's own endpoint, kept as long as the connection.
    endpoint: Option<Endpoint>,
    peer: PeerInfo,
    linger: Duration,
    /// The limits its stream receivers hold partial frames under.
    intake: super::intake::IntakeLimits,
}

impl QuicLink {
    fn new(conn: Connection, endpoint: Option<Endpoint>, linger: Duration) -> Self {
        let peer = PeerInfo {
            addr: url(conn.remote_address()),
            pid: None,
            uid: None,
        };
        Self {
            conn,
            endpoint,
            peer,
            linger,
            intake: super::intake::IntakeLimits::default(),
        }
    }
}

impl Link for QuicLink {
    type Tx = QuicTx;
    type Rx = QuicRx;

    fn transport(&self) -> Transport {
        Transport::Quic
    }

    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn identity(&self) -> Option<super::PeerIdentity> {
        trust::peer_identity(&self.conn)
    }

    fn tune(&mut self, tuning: &super::LinkTuning) {
        self.intake = tuning.intake.clone();
    }

    fn split(self, frame_limit: u32) -> (QuicTx, QuicRx) {
        let calls = Arc::default();
        let (opened, incoming) = mpsc::unbounded_channel();
        let tx = QuicTx::new(
            self.conn.clone(),
            Arc::clone(&calls),
            opened,
            self.linger,
            self.endpoint.clone(),
        );
        let rx = QuicRx::new(self.conn, calls, incoming, frame_limit, self.endpoint)
            .with_limits(self.intake);
        (tx, rx)
    }
}

/// Whether the connection ended the way a link does when its peer is done
/// with it (every handle dropped), rather than by a failure.
fn clean_close(err: &ConnectionError) -> bool {
    match err {
        ConnectionError::ApplicationClosed(close) => close.error_code == VarInt::from_u32(0),
        ConnectionError::LocallyClosed => true,
        _ => false,
    }
}

/// What a lost connection means for a caller.
fn connection_error(err: &ConnectionError) -> io::Error {
    let kind = match err {
        // A TLS alert (crypto error codes 0x100-0x1ff): refused, not lost.
        ConnectionError::ConnectionClosed(close)
            if (0x100..0x200).contains(&u64::from(close.error_code)) =>
        {
            io::ErrorKind::PermissionDenied
        }
        ConnectionError::TimedOut => io::ErrorKind::TimedOut,
        ConnectionError::Reset => io::ErrorKind::ConnectionReset,
        ConnectionError::LocallyClosed => io::ErrorKind::NotConnected,
        _ => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(
        kind,
        format!("the QUIC connection ended: {err}{}", tls_alert_hint(err)),
    )
}
