//! Authentication: a bearer token ([`RequireBearer`] on a server,
//! [`Bearer`] on a channel) and the client certificate of mutual TLS
//! ([`RequireIdentity`]).
//!
//! Tokens are compared in constant time and never appear in logs, the
//! debug endpoint or metrics (the metadata's `Debug` output redacts the
//! `authorization` entry).

use subtle::ConstantTimeEq;

use super::{Call, Layer, LayerFuture, Next, Side};
use crate::protocol::status::Status;

/// The metadata key a bearer token travels under, as in HTTP and gRPC.
pub const AUTHORIZATION: &str = "authorization";

/// Which calls a layer applies to: all, or the services and methods named.
#[derive(Clone, Debug, Default)]
struct Scope {
    services: Vec<String>,
    methods: Vec<String>,
}

impl Scope {
    /// A server layer's step: calls it covers pass `check` or are refused
    /// with its status; the rest go on untouched.
    fn guard<'a>(
        &self,
        call: Call,
        next: Next<'a>,
        check: impl FnOnce(&Call) -> Result<(), Status>,
    ) -> LayerFuture<'a> {
        if call.side() == Side::Server
            && self.covers(&call)
            && let Err(status) = check(&call)
        {
            return super::refuse(status);
        }
        next.run(call)
    }

    fn covers(&self, call: &Call) -> bool {
        let method = call.method();
        (self.services.is_empty() && self.methods.is_empty())
            || self.services.iter().any(|s| s == method.service)
            || self.methods.iter().any(|m| m == method.full_name)
    }
}

/// A server layer that refuses calls without an accepted bearer token
/// (`authorization: Bearer <token>` metadata) with UNAUTHENTICATED. Over
/// every transport, shared memory included: the same host is not the same
/// user.
pub struct RequireBearer {
    /// The tokens accepted (several while one is being rotated), or why
    /// there are none.
    tokens: Result<Vec<Vec<u8>>, String>,
    scope: Scope,
}

impl std::fmt::Debug for RequireBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireBearer")
            .field("tokens", &self.tokens.as_ref().map(Vec::len))
            .field("scope", &self.scope)
            .finish()
    }
}

impl RequireBearer {
    /// Accepts `token`. An empty token accepts nothing: every call is
    /// refused, saying the server has no token set.
    pub fn new(token: impl AsRef<[u8]>) -> Self {
        let token = token.as_ref();
        Self {
            tokens: if token.is_empty() {
                Err("the server was given an empty token".to_owned())
            } else {
                Ok(vec![token.to_vec()])
            },
            scope: Scope::default(),
        }
    }

    /// Accepts the token in the environment variable `var`. Unset or empty,
    /// it accepts nothing (every call is refused, saying which variable to
    /// set), so that a missing secret never opens the server.
    pub fn from_env(var: &str) -> Self {
        match std::env::var(var) {
            Ok(token) if !token.is_empty() => Self::new(token),
            _ => {
                tracing::error!(
                    var,
                    "RequireBearer: the variable is not set or empty; every call will be refused"
                );
                Self {
                    tokens: Err(format!(
                        "the server's {var} environment variable is not set, so it accepts no \
                         token; its operator must set it"
                    )),
                    scope: Scope::default(),
                }
            }
        }
    }

    /// Also accepts `token` (during a rotation, old and new).
    pub fn or(mut self, token: impl AsRef<[u8]>) -> Self {
        let token = token.as_ref();
        if !token.is_empty() {
            match &mut self.tokens {
                Ok(tokens) => tokens.push(token.to_vec()),
                Err(_) => self.tokens = Ok(vec![token.to_vec()]),
            }
        }
        self
    }

    /// Applies to the calls of service `name` (and to any other service or
    /// method named so); without any, it applies to every call.
    pub fn for_service(mut self, name: impl Into<String>) -> Self {
        self.scope.services.push(name.into());
        self
    }

    /// Applies to the method `full_name` (`"Inventory.put"`).
    pub fn for_method(mut self, full_name: impl Into<String>) -> Self {
        self.scope.methods.push(full_name.into());
        self
    }

    fn check(&self, call: &Call) -> Result<(), Status> {
        let method = call.method().full_name;
        let tokens = self.tokens.as_ref().map_err(|why| {
            Status::unauthenticated(format!("{method} needs a bearer token, but {why}"))
        })?;
        let Some(value) = call.metadata().get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "{method} needs a bearer token: the call carries no `{AUTHORIZATION}` metadata; \
                 give the channel one (ChannelBuilder::layer(layers::Bearer::new(token)))"
            )));
        };
        let Some(presented) = bearer_token(value) else {
            return Err(Status::unauthenticated(format!(
                "{method}: the `{AUTHORIZATION}` metadata is not `Bearer <token>`"
            )));
        };
        // Every accepted token is compared, each in constant time.
        let accepted = tokens.iter().fold(subtle::Choice::from(0), |any, token| {
            any | token.as_slice().ct_eq(presented)
        });
        if bool::from(accepted) {
            Ok(())
        } else {
            Err(Status::unauthenticated(format!(
                "{method}: the bearer token was not accepted; check the token the client uses"
            )))
        }
    }
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && value.len() > 7).then(|| &value[7..])
}

impl Layer for RequireBearer {
    fn name(&self) -> &str {
        "require-bearer"
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        self.scope.guard(call, next, |call| self.check(call))
    }
}

/// A channel layer that sends a bearer token with every call
/// (`authorization: Bearer <token>`), unless the call already carries one.
pub struct Bearer {
    /// The metadata value, or why there is none.
    value: Result<Vec<u8>, String>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("token", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Bearer {
    /// Sends `token`.
    pub fn new(token: impl AsRef<[u8]>) -> Self {
        let token = token.as_ref();
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(token);
        Self {
            value: if token.is_empty() {
                Err("the channel was given an empty token".to_owned())
            } else {
                Ok(value)
            },
        }
    }

    /// Sends the token in the environment variable `var`. Unset or empty,
    /// calls fail on this side with UNAUTHENTICATED saying which variable
    /// to set.
    pub fn from_env(var: &str) -> Self {
        match std::env::var(var) {
            Ok(token) if !token.is_empty() => Self::new(token),
            _ => Self {
                value: Err(format!(
                    "the {var} environment variable is not set, so this client has no token \
                     to send; set it"
                )),
            },
        }
    }
}

impl Layer for Bearer {
    fn name(&self) -> &str {
        "bearer"
    }

    fn call<'a>(&'a self, mut call: Call, next: Next<'a>) -> LayerFuture<'a> {
        if call.side() == Side::Client && call.metadata().get(AUTHORIZATION).is_none() {
            match &self.value {
                Ok(value) => {
                    // The key is valid, so the insert cannot fail.
                    let _ = call.metadata_mut().insert(AUTHORIZATION, value.clone());
                }
                Err(why) => {
                    return super::refuse(Status::unauthenticated(format!(
                        "{}: {why}",
                        call.method().full_name
                    )));
                }
            }
        }
        next.run(call)
    }
}

/// A server layer that admits only callers whose client certificate
/// (mutual TLS over QUIC) has one of the names or fingerprints given:
/// UNAUTHENTICATED without a certificate, PERMISSION_DENIED with another.
#[derive(Clone, Debug, Default)]
pub struct RequireIdentity {
    dns_names: Vec<String>,
    uri_names: Vec<String>,
    fingerprints: Vec<String>,
    scope: Scope,
}

impl RequireIdentity {
    /// Admits a certificate with the DNS name `name`.
    pub fn dns_name(name: impl Into<String>) -> Self {
        Self::default().or_dns_name(name)
    }

    /// Admits a certificate with the URI name `uri` (a SPIFFE id, say).
    pub fn uri(uri: impl Into<String>) -> Self {
        Self::default().or_uri(uri)
    }

    /// Admits the certificate whose SHA-256 is `hex` (64 hex digits).
    pub fn fingerprint(hex: impl Into<String>) -> Self {
        Self::default().or_fingerprint(hex)
    }

    /// Also admits the DNS name `name`.
    pub fn or_dns_name(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }

    /// Also admits the URI name `uri`.
    pub fn or_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri_names.push(uri.into());
        self
    }

    /// Also admits the certificate whose SHA-256 is `hex`.
    pub fn or_fingerprint(mut self, hex: impl Into<String>) -> Self {
        self.fingerprints.push(hex.into().to_ascii_lowercase());
        self
    }

    /// Applies to the calls of service `name` only (and to any other
    /// service or method named so).
    pub fn for_service(mut self, name: impl Into<String>) -> Self {
        self.scope.services.push(name.into());
        self
    }

    /// Applies to the method `full_name` only.
    pub fn for_method(mut self, full_name: impl Into<String>) -> Self {
        self.scope.methods.push(full_name.into());
        self
    }

    fn check(&self, call: &Call) -> Result<(), Status> {
        let method = call.method().full_name;
        let Some(identity) = call.peer_identity() else {
            return Err(Status::unauthenticated(format!(
                "{method} needs a client certificate (mutual TLS over QUIC), and this call came \
                 over {} without one; connect over QUIC with the client's certificate",
                call.transport()
                    .map_or("an unknown transport", |t| t.as_str())
            )));
        };
        let admitted = identity
            .dns_names
            .iter()
            .any(|name| self.dns_names.contains(name))
            || identity
                .uri_names
                .iter()
                .any(|uri| self.uri_names.contains(uri))
            || self
                .fingerprints
                .contains(&identity.fingerprint.to_ascii_lowercase());
        if admitted {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{method}: the client certificate (names {:?} {:?}) is not one this server admits",
                identity.dns_names, identity.uri_names
            )))
        }
    }
}

impl Layer for RequireIdentity {
    fn name(&self) -> &str {
        "require-identity"
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        self.scope.guard(call, next, |call| self.check(call))
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }
}
