//! TLS for QUIC: a server's identity (its certificate chain and key), the
//! SHA-256 fingerprint a client pins, and the rustls configurations of both
//! sides. TLS 1.3 only (QUIC has no other), the ring crypto provider only.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::trust::{CaRoots, ClientTls, Trust, client_verifier, server_verifier};

/// The ALPN protocol both sides insist on: a QUIC endpoint that does not
/// offer it is not a switchyard peer.
pub const ALPN: &[u8] = b"switchyard/1";

/// The SHA-256 digest of a DER-encoded certificate: what a client pins to
/// trust one server's certificate and nothing else.
///
/// Shown (`Display`) as 64 lower-case hex digits; parsed from hex with or
/// without `:` between bytes, in either case (the form `openssl x509
/// -fingerprint -sha256` prints is accepted).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(certificate_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, certificate_der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// A fingerprint from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a string is not a [`Fingerprint`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a SHA-256 fingerprint: expected 64 hex digits (optionally in pairs \
     separated by ':')"
)]
pub struct FingerprintParseError {
    input: String,
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || FingerprintParseError {
            input: s.to_owned(),
        };
        let digits: Vec<u8> = s.trim().bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 {
            return Err(error());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let hex = std::str::from_utf8(pair).map_err(|_| error())?;
            *byte = u8::from_str_radix(hex, 16).map_err(|_| error())?;
        }
        Ok(Self(bytes))
    }
}

/// Why a server identity could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Generating a self-signed certificate failed.
    #[error("could not generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read.
    #[error("could not read {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The certificate PEM holds no certificate, or a malformed one.
    #[error(
        "{what} holds no usable certificate ({reason}); expected a PEM block \
         -----BEGIN CERTIFICATE-----, the server's own certificate first"
    )]
    Certificate {
        /// Where the PEM came from.
        what: String,
        /// What the PEM parser said.
        reason: String,
    },
    /// The key PEM holds no private key, or a malformed one.
    #[error(
        "{what} holds no usable private key ({reason}); expected a PKCS#8, PKCS#1 or SEC1 PEM \
         block such as -----BEGIN PRIVATE KEY-----"
    )]
    Key {
        /// Where the PEM came from.
        what: String,
        /// What the PEM parser said.
        reason: String,
    },
    /// rustls refused the certificate and key together.
    #[error(
        "the certificate and key cannot be used for TLS: {0}; check that the key belongs to \
         the certificate and is an ECDSA, Ed25519 or RSA key"
    )]
    Rejected(rustls::Error),
}

impl From<IdentityError> for io::Error {
    fn from(err: IdentityError) -> Self {
        let kind = match &err {
            IdentityError::Read { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        Self::new(kind, err)
    }
}

/// What a side presents in the TLS handshake: its certificate chain (its
/// own certificate first) and private key. Every server has one; a client
/// has one for servers that require client certificates (mutual TLS).
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    fingerprint: Fingerprint,
}

impl Identity {
    /// A fresh self-signed certificate (ECDSA P-256) for `names` (DNS names
    /// or IP addresses; they matter little, since clients pin the
    /// fingerprint rather than check names).
    pub fn self_signed(names: &[&str]) -> Result<Self, IdentityError> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names)?;
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|e| {
            IdentityError::Key {
                what: "the generated key".to_owned(),
                reason: e.to_owned(),
            }
        })?;
        Ok(Self::new(vec![generated.cert.der().clone()], key))
    }

    /// An identity from PEM text: `cert_pem` holds the certificate chain,
    /// the server's own certificate first; `key_pem` its private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, IdentityError> {
        Self::parse(cert_pem, "the certificate PEM", key_pem, "the key PEM")
    }

    /// An identity from PEM files, as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, IdentityError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| IdentityError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        Self::parse(
            &cert_pem,
            &cert.display().to_string(),
            &key_pem,
            &key.display().to_string(),
        )
    }

    fn parse(
        cert_pem: &[u8],
        cert_what: &str,
        key_pem: &[u8],
        key_what: &str,
    ) -> Result<Self, IdentityError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Certificate {
                what: cert_what.to_owned(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(IdentityError::Certificate {
                what: cert_what.to_owned(),
                reason: "no certificate found".to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| IdentityError::Key {
            what: key_what.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(certs, key))
    }

    fn new(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        // Callers pass at least one certificate.
        let fingerprint = Fingerprint::of(certs.first().map_or(&[][..], |c| c.as_ref()));
        Self {
            certs,
            key,
            fingerprint,
        }
    }

    /// The fingerprint of the server's own certificate: what clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The rustls configuration of a server with this identity; with
    /// `client_roots`, clients must present a certificate they issued.
    pub(super) fn server_config(
        &self,
        client_roots: Option<&CaRoots>,
    ) -> Result<rustls::ServerConfig, IdentityError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(IdentityError::Rejected)?;
        let builder = match client_roots {
            Some(roots) => builder.with_client_cert_verifier(client_verifier(roots, provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(IdentityError::Rejected)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("certificates", &self.certs.len())
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The one crypto provider: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration of a client with `tls`, and, when it pins a
/// fingerprint, the verifier, which keeps what the server presented for the
/// error message.
pub(super) fn client_config(
    tls: &ClientTls,
) -> Result<(rustls::ClientConfig, Option<Arc<PinnedServer>>), IdentityError> {
    let provider = provider();
    let (verifier, pinned): (Arc<dyn ServerCertVerifier>, _) = match &tls.trust {
        Trust::Pin(pin) => {
            let pinned = Arc::new(PinnedServer {
                pin: *pin,
                provider: Arc::clone(&provider),
                seen: Mutex::new(None),
            });
            (pinned.clone(), Some(pinned))
        }
        Trust::Roots(roots) => (server_verifier(roots, Arc::clone(&provider))?, None),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(IdentityError::Rejected)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.certs.clone(), identity.key.clone_key())
            .map_err(IdentityError::Rejected)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((config, pinned))
}

/// Trusts the server whose end-entity certificate has the pinned SHA-256
/// fingerprint, whatever its name, issuer or validity period (the pin says
/// more than any of them), and checks that the server holds that
/// certificate's key: the handshake signature is verified with the
/// provider's algorithms, as rustls's own verifier does.
#[derive(Debug)]
pub(super) struct PinnedServer {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
    /// A fingerprint presented that was not the pin.
    seen: Mutex<Option<Fingerprint>>,
}

impl PinnedServer {
    /// The fingerprint the server presented, if it was not the pin.
    pub(super) fn mismatch(&self) -> Option<Fingerprint> {
        *self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if seen == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        tracing::debug!(expected = %self.pin, %seen, "server certificate does not match the pin");
        *self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(seen);
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse_as_hex() {
        let fingerprint = Fingerprint::of(b"not really a certificate");
        let hex = fingerprint.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<Fingerprint>(), Ok(fingerprint));
        let colons: Vec<String> = fingerprint
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(colons.join(":").parse::<Fingerprint>(), Ok(fingerprint));
        for bad in ["", "abc", &hex[1..], &format!("{}zz", &hex[2..])] {
            let err = bad.parse::<Fingerprint>().unwrap_err();
            assert!(err.to_string().contains("64 hex digits"), "{err}");
        }
    }

    #[test]
    fn an_identity_loads_from_pem_files() {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let identity = Identity::from_pem_files(&cert, &key).unwrap();
        assert_eq!(
            identity.fingerprint(),
            Fingerprint::of(generated.cert.der())
        );
        identity.server_config(None).expect("rustls takes it");
        assert!(format!("{identity:?}").contains("fingerprint"));

        // The key file is no certificate, the certificate file no key.
        let err = Identity::from_pem_files(&key, &key).unwrap_err();
        assert!(matches!(err, IdentityError::Certificate { .. }), "{err}");
        assert!(err.to_string().contains("key.pem"), "{err}");
        let err = Identity::from_pem_files(&cert, &cert).unwrap_err();
        assert!(matches!(err, IdentityError::Key { .. }), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = Identity::from_pem_files(&missing, &key).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::NotFound);

        // A key that is not the certificate's is refused when used.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let mismatched = Identity::from_pem(
            generated.cert.pem().as_bytes(),
            other.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let err = mismatched.server_config(None).unwrap_err();
        assert!(err.to_string().contains("key belongs"), "{err}");
    }

    #[test]
    fn self_signed_identities_differ() {
        let a = Identity::self_signed(&["localhost"]).unwrap();
        let b = Identity::self_signed(&["localhost"]).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.clone().fingerprint(), a.fingerprint());
    }
}
