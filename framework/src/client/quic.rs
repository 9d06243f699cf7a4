//! A channel's QUIC settings: how it trusts servers, the identity it
//! presents for mutual TLS, and the connection parameters; and what a failed
//! QUIC connect means for a caller.

use crate::protocol::status::Status;
use crate::transport::quic::{
    self, CaRoots, ClientTls, ConnectError, Fingerprint, Identity, QuicConfig, Trust,
};

/// What [`ChannelBuilder`](super::ChannelBuilder) keeps for QUIC.
#[derive(Clone, Debug, Default)]
pub(crate) struct QuicSettings {
    /// Trust for addresses that carry no pin of their own.
    pub(crate) trust: Option<Trust>,
    /// Presented to servers that require client certificates.
    pub(crate) identity: Option<Identity>,
    pub(crate) config: QuicConfig,
}

impl QuicSettings {
    /// The TLS settings for `quic://host_port`, whose address carried `pin`
    /// (hex) or none. Trust, first found: a pin the caller wrote in the
    /// target; the builder's `tls_pin`/`tls_ca`; the CA named by
    /// `SWITCHYARD_TLS_CA`; a pin from the registry or a resolver. (So a
    /// catalog handing out addresses cannot override a configured CA.)
    pub(crate) fn client_tls(
        &self,
        host_port: &str,
        pin: Option<&str>,
        caller_pin: bool,
    ) -> Result<ClientTls, Status> {
        let invalid = |err: &dyn std::fmt::Display| Status::failed_precondition(err.to_string());
        let pinned = pin
            .map(|pin| pin.parse::<Fingerprint>().map_err(|e| invalid(&e)))
            .transpose()?;
        let trust = match (pinned, caller_pin, &self.trust) {
            (Some(pin), true, _) => Trust::Pin(pin),
            (_, _, Some(trust)) => trust.clone(),
            (pinned, _, None) => {
                match (
                    quic::roots_from_env(quic::TLS_CA_ENV).map_err(|e| invalid(&e))?,
                    pinned,
                ) {
                    (Some(roots), _) => Trust::Roots(roots),
                    (None, Some(pin)) => Trust::Pin(pin),
                    (None, None) => {
                        return Err(Status::failed_precondition(format!(
                            "quic://{host_port}: no way to trust the server: add \
                             ?pin=<fingerprint> to the address (the server prints its \
                             fingerprint and publishes it in the registry), or trust a CA \
                             (ChannelBuilder::tls_ca or {})",
                            quic::TLS_CA_ENV
                        )));
                    }
                }
            }
        };
        let identity = match &self.identity {
            Some(identity) => Some(identity.clone()),
            None => quic::identity_from_env().map_err(|e| invalid(&e))?,
        };
        Ok(ClientTls { trust, identity })
    }
}

/// The status for a failed QUIC connect to `host_port`.
pub(crate) fn connect_status(host_port: &str, err: ConnectError) -> Status {
    match &err {
        ConnectError::FingerprintMismatch { .. } | ConnectError::Untrusted { .. } => {
            Status::unauthenticated(err.to_string())
        }
        ConnectError::Config(_) | ConnectError::Tls(_) => {
            Status::failed_precondition(err.to_string())
        }
        _ => Status::unavailable(format!(
            "could not connect to quic://{host_port}: {err}; is the server running and \
             listening there, and does UDP reach it?"
        )),
    }
}

/// Builder methods for QUIC, documented on [`ChannelBuilder`](super::ChannelBuilder).
impl super::ChannelBuilder {
    /// Trusts, for `quic://` addresses that carry no `?pin=`, exactly the
    /// server certificate with this SHA-256 fingerprint.
    pub fn tls_pin(mut self, pin: Fingerprint) -> Self {
        self.quic.trust = Some(Trust::Pin(pin));
        self
    }

    /// Trusts, for `quic://` addresses that carry no `?pin=`, server
    /// certificates these CAs issued for the name connected to (default:
    /// the file named by `SWITCHYARD_TLS_CA`).
    pub fn tls_ca(mut self, roots: CaRoots) -> Self {
        self.quic.trust = Some(Trust::Roots(roots));
        self
    }

    /// Presents this certificate to servers that require client
    /// certificates (mutual TLS); default: the files named by
    /// `SWITCHYARD_TLS_CERT` and `SWITCHYARD_TLS_KEY`, if set.
    pub fn tls_identity(mut self, identity: Identity) -> Self {
        self.quic.identity = Some(identity);
        self
    }

    /// QUIC connection parameters (streams, idle timeout, keep-alive).
    pub fn quic_config(mut self, config: QuicConfig) -> Self {
        self.quic.config = config;
        self
    }
}
