//! A server's QUIC listener: its address, TLS (a certificate from PEM files
//! or one made at start, optionally requiring client certificates) and
//! connection parameters, and the `quic://…?pin=` URL it publishes.

use std::net::SocketAddr;

use crate::protocol::status::Status;
use crate::transport::Endpoint;
use crate::transport::quic::{
    self, CaRoots, Fingerprint, Identity, QuicConfig, QuicListener, ServerTls,
};

/// What [`ServerBuilder`](super::ServerBuilder) keeps for QUIC.
#[derive(Clone, Debug, Default)]
pub(crate) struct QuicSetting {
    /// Where to listen; `None`: no QUIC.
    pub(crate) addr: Option<String>,
    pub(crate) identity: Option<Identity>,
    pub(crate) client_roots: Option<CaRoots>,
    pub(crate) config: QuicConfig,
    /// A plaintext TCP listener may sit beside QUIC with mutual TLS.
    pub(crate) allow_plaintext_tcp: bool,
}

/// A bound QUIC listener and what to publish about it.
pub(crate) struct Bound {
    pub(crate) listener: QuicListener,
    pub(crate) addr: SocketAddr,
    pub(crate) fingerprint: Fingerprint,
    /// `quic://addr?pin=<fingerprint>`.
    pub(crate) endpoint: Endpoint,
}

impl QuicSetting {
    /// Binds the listener, if QUIC is asked for. The identity is the
    /// builder's, else the PEM files named by `SWITCHYARD_TLS_CERT` and
    /// `SWITCHYARD_TLS_KEY`, else a self-signed certificate made now; client
    /// certificates are required if the builder or
    /// `SWITCHYARD_TLS_CLIENT_CA` names a CA.
    /// Refuses a plaintext TCP listener beside QUIC that requires client
    /// certificates (unless allowed): checked before anything is bound.
    pub(crate) fn check_tcp(&self, tcp: Option<&str>) -> Result<(), Status> {
        let (Some(_), Some(tcp), false) = (&self.addr, tcp, self.allow_plaintext_tcp) else {
            return Ok(());
        };
        let roots = match &self.client_roots {
            Some(roots) => Some(roots.clone()),
            None => quic::roots_from_env(quic::TLS_CLIENT_CA_ENV)
                .map_err(|e| Status::failed_precondition(e.to_string()))?,
        };
        match roots {
            Some(roots) => Err(Status::failed_precondition(format!(
                "this server requires client certificates on QUIC (CA {}), but its TCP listener \
                 on {tcp} carries calls without TLS, so any client could go around them; drop \
                 ServerBuilder::tcp (clients then reach it over QUIC only) or call \
                 ServerBuilder::allow_plaintext_tcp() if only trusted peers can reach that port",
                roots.source()
            ))),
            None => Ok(()),
        }
    }

    pub(crate) async fn bind(&self) -> Result<Option<Bound>, Status> {
        let Some(addr) = &self.addr else {
            return Ok(None);
        };
        let refused = |err: &dyn std::fmt::Display| {
            Status::failed_precondition(format!("could not serve QUIC on {addr}: {err}"))
        };
        let identity = match &self.identity {
            Some(identity) => identity.clone(),
            None => match quic::identity_from_env().map_err(|e| refused(&e))? {
                Some(identity) => identity,
                None => {
                    let host = crate::sys::host_identity().hostname;
                    let mut names = vec!["localhost"];
                    if !host.is_empty() {
                        names.push(&host);
                    }
                    Identity::self_signed(&names).map_err(|e| refused(&e))?
                }
            },
        };
        let client_roots = match &self.client_roots {
            Some(roots) => Some(roots.clone()),
            None => quic::roots_from_env(quic::TLS_CLIENT_CA_ENV).map_err(|e| refused(&e))?,
        };
        let tls = ServerTls {
            identity,
            client_roots,
        };
        let listener = QuicListener::bind_tls(addr, &tls, &self.config)
            .await
            .map_err(|err| match err {
                quic::BindError::Resolve { .. } | quic::BindError::Socket { .. } => {
                    Status::unavailable(format!(
                        "could not listen on quic://{addr}: {err}; pick another address or port 0"
                    ))
                }
                // The certificate, key, CA or settings: fix those, not the port.
                _ => Status::failed_precondition(format!("could not serve QUIC on {addr}: {err}")),
            })?;
        let bound_addr = listener.local_addr();
        let fingerprint = listener.fingerprint();
        Ok(Some(Bound {
            endpoint: Endpoint::Quic {
                host_port: bound_addr.to_string(),
                pin: Some(fingerprint.to_string()),
                name: None,
            },
            addr: bound_addr,
            fingerprint,
            listener,
        }))
    }
}

/// Builder methods for QUIC, documented on [`ServerBuilder`](super::ServerBuilder).
impl super::ServerBuilder {
    /// Also listens on QUIC at `addr` (`"0.0.0.0:7443"`; port 0 picks a
    /// free port), with TLS: see [`tls_identity`](Self::tls_identity). The
    /// published endpoint carries the certificate's fingerprint
    /// (`quic://addr?pin=…`), which clients pin.
    pub fn quic(mut self, addr: impl Into<String>) -> Self {
        self.quic.addr = Some(addr.into());
        self
    }

    /// The certificate QUIC clients see (default: the PEM files named by
    /// `SWITCHYARD_TLS_CERT` and `SWITCHYARD_TLS_KEY`, else a self-signed
    /// certificate made at start, whose fingerprint
    /// [`ServerHandle::quic_fingerprint`](super::ServerHandle::quic_fingerprint)
    /// gives).
    pub fn tls_identity(mut self, identity: Identity) -> Self {
        self.quic.identity = Some(identity);
        self
    }

    /// Requires every QUIC client to present a certificate issued by these
    /// CAs (mutual TLS; default: the file named by
    /// `SWITCHYARD_TLS_CLIENT_CA`, if set). Handlers see the client's
    /// identity as [`Context::peer_identity`](crate::Context::peer_identity).
    pub fn require_client_certs(mut self, roots: CaRoots) -> Self {
        self.quic.client_roots = Some(roots);
        self
    }

    /// QUIC connection parameters (streams, idle timeout, keep-alive) and
    /// the listener's defences against floods of connection attempts: by
    /// default every client whose address is not validated is first sent a
    /// Retry, so a spoofed address is never sent more than about a tenth of
    /// what came from it ([`QuicConfig::address_validation`]); at most 256
    /// handshakes are under way at once, further attempts being ignored
    /// until some finish ([`QuicConfig::max_handshakes`]); and a handshake
    /// is dropped, with its state, after 5 s
    /// ([`QuicConfig::handshake_timeout`]). None of them touches an
    /// established connection.
    pub fn quic_config(mut self, config: QuicConfig) -> Self {
        self.quic.config = config;
        self
    }

    /// Allows a TCP listener beside QUIC that requires client certificates.
    /// TCP carries calls without TLS, so by default such a server refuses to
    /// start: a client without a certificate would simply call over TCP.
    /// Allow it only where the TCP port is reachable by trusted peers alone.
    pub fn allow_plaintext_tcp(mut self) -> Self {
        self.quic.allow_plaintext_tcp = true;
        self
    }
}
