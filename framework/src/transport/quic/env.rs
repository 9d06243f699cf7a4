//! TLS settings from the environment, so that a deployment (a container, a
//! pod) configures certificates without code: a server's identity, the CA
//! clients trust servers by, and the CA a server trusts clients by.

use std::path::Path;

use super::tls::{Identity, IdentityError};
use super::trust::CaRoots;

/// A PEM file holding this process's certificate chain: what a server
/// presents, and what a client presents to servers that require client
/// certificates. Set together with [`TLS_KEY_ENV`].
pub const TLS_CERT_ENV: &str = "SWITCHYARD_TLS_CERT";
/// A PEM file holding the private key of [`TLS_CERT_ENV`]'s certificate.
pub const TLS_KEY_ENV: &str = "SWITCHYARD_TLS_KEY";
/// A PEM file of CA certificates clients trust servers by (for addresses
/// that carry no `?pin=`).
pub const TLS_CA_ENV: &str = "SWITCHYARD_TLS_CA";
/// A PEM file of CA certificates a server requires client certificates to
/// be issued by (mutual TLS).
pub const TLS_CLIENT_CA_ENV: &str = "SWITCHYARD_TLS_CLIENT_CA";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The identity named by [`TLS_CERT_ENV`] and [`TLS_KEY_ENV`], if set.
pub fn identity_from_env() -> Result<Option<Identity>, IdentityError> {
    match (var(TLS_CERT_ENV), var(TLS_KEY_ENV)) {
        (Some(cert), Some(key)) => {
            Identity::from_pem_files(Path::new(&cert), Path::new(&key)).map(Some)
        }
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(IdentityError::Certificate {
            what: format!("{TLS_CERT_ENV} and {TLS_KEY_ENV}"),
            reason: "only one of the two is set; set both (the certificate and its key) or \
                     neither"
                .to_owned(),
        }),
    }
}

/// The CA certificates named by the variable `name` ([`TLS_CA_ENV`] or
/// [`TLS_CLIENT_CA_ENV`]), if set.
pub fn roots_from_env(name: &str) -> Result<Option<CaRoots>, IdentityError> {
    var(name)
        .map(|path| CaRoots::from_pem_file(Path::new(&path)))
        .transpose()
}
