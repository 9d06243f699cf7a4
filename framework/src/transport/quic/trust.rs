//! Whom a QUIC endpoint trusts: a client trusts a server by a pinned
//! certificate fingerprint or by certificate authorities; a server that asks
//! for client certificates (mutual TLS) trusts clients by certificate
//! authorities. Also what a verified peer certificate says about its holder
//! ([`PeerIdentity`](crate::transport::PeerIdentity)).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::tls::{Fingerprint, Identity, IdentityError};
use crate::transport::PeerIdentity;

/// The certificates of the certificate authorities a side trusts, loaded
/// from PEM.
#[derive(Clone)]
pub struct CaRoots {
    certs: Vec<CertificateDer<'static>>,
    /// Where they came from, for messages.
    source: String,
}

impl CaRoots {
    /// Roots from PEM text holding one or more certificates; `what` names
    /// the source in messages.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self, IdentityError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Certificate {
                what: what.to_owned(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(IdentityError::Certificate {
                what: what.to_owned(),
                reason: "no certificate found".to_owned(),
            });
        }
        let roots = Self {
            certs,
            source: what.to_owned(),
        };
        // Refuse what rustls would refuse now rather than at the handshake.
        roots.store()?;
        Ok(roots)
    }

    /// Roots from a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Self, IdentityError> {
        let pem = std::fs::read(path).map_err(|source| IdentityError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem, &path.display().to_string())
    }

    /// Where the roots came from (a path, or what the caller said).
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(super) fn store(&self) -> Result<RootCertStore, IdentityError> {
        let mut store = RootCertStore::empty();
        for cert in &self.certs {
            store
                .add(cert.clone())
                .map_err(|err| IdentityError::Certificate {
                    what: self.source.clone(),
                    reason: format!("not a usable CA certificate: {err}"),
                })?;
        }
        Ok(store)
    }
}

impl fmt::Debug for CaRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaRoots")
            .field("source", &self.source)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

/// How a client decides that a server is the one it means.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Exactly the certificate with this SHA-256 fingerprint, whatever its
    /// names or issuer (for self-signed development certificates).
    Pin(Fingerprint),
    /// Any certificate issued by these authorities for the name (or IP
    /// address) connected to.
    Roots(CaRoots),
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pin(pin) => write!(f, "the pinned fingerprint {pin}"),
            Self::Roots(roots) => write!(f, "the certificate authorities in {}", roots.source),
        }
    }
}

/// A client's TLS settings: how it trusts the server, and the identity it
/// presents when the server asks for one (mutual TLS).
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// How the server is trusted.
    pub trust: Trust,
    /// The client's certificate and key, for servers that require them.
    pub identity: Option<Identity>,
}

impl ClientTls {
    /// Trusting only the server whose certificate has this fingerprint.
    pub fn pinned(pin: Fingerprint) -> Self {
        Self {
            trust: Trust::Pin(pin),
            identity: None,
        }
    }

    /// Trusting servers whose certificates these authorities issued.
    pub fn roots(roots: CaRoots) -> Self {
        Self {
            trust: Trust::Roots(roots),
            identity: None,
        }
    }

    /// The same, presenting `identity` to servers that ask for one.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }
}

/// A server's TLS settings: what it presents, and whom it accepts.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server's certificate and key.
    pub identity: Identity,
    /// When set, every client must present a certificate these authorities
    /// issued (mutual TLS); handlers see it as
    /// [`Context::peer_identity`](crate::Context::peer_identity).
    pub client_roots: Option<CaRoots>,
}

impl ServerTls {
    /// Presenting `identity`, accepting any client.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            client_roots: None,
        }
    }

    /// The same, requiring client certificates issued by `roots`.
    pub fn require_client_certs(mut self, roots: CaRoots) -> Self {
        self.client_roots = Some(roots);
        self
    }
}

/// What the verified certificate chain of a peer says: the fingerprint of
/// its own certificate and the names in it.
pub(super) fn peer_identity(conn: &quinn::Connection) -> Option<PeerIdentity> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let leaf = chain.first()?;
    let (dns_names, uri_names) = match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => (
            cert.valid_dns_names().map(str::to_owned).collect(),
            cert.valid_uri_names().map(str::to_owned).collect(),
        ),
        Err(_) => (Vec::new(), Vec::new()),
    };
    Some(PeerIdentity {
        fingerprint: Fingerprint::of(leaf).to_string(),
        dns_names,
        uri_names,
    })
}

/// The rustls verifier of client certificates issued by `roots`.
pub(super) fn client_verifier(
    roots: &CaRoots,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, IdentityError> {
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots.store()?), provider)
        .build()
        .map_err(|err| IdentityError::Certificate {
            what: roots.source.clone(),
            reason: format!("cannot verify clients with it: {err}"),
        })
}

/// The rustls verifier of server certificates issued by `roots`.
pub(super) fn server_verifier(
    roots: &CaRoots,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, IdentityError> {
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots.store()?),
            provider,
        )
        .build()
        .map_err(|err| IdentityError::Certificate {
            what: roots.source.clone(),
            reason: format!("cannot verify servers with it: {err}"),
        })?;
    Ok(verifier)
}
