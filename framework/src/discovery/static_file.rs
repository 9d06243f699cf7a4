//! A static discovery file: TOML mapping service names to addresses.
//!
//! ```toml
//! # Addresses are tried QUIC first, then TCP; within one transport, in
//! # the order given. Host names are resolved by DNS when connecting.
//! [services.calculator]
//! addresses = ["quic://10.0.0.5:7443", "tcp://10.0.0.5:7000"]
//! # Optional: the SHA-256 fingerprint of the server's certificate, for
//! # quic:// addresses that carry no ?pin= of their own.
//! pin = "3f1c…"
//!
//! [services.billing]
//! addresses = ["quic://billing.default.svc.cluster.local:7443"]
//!
//! # Several replicas of one service: one table each, with its own
//! # addresses (and pin). A channel spreads calls over them
//! # (ChannelBuilder::balance).
//! [[services.inventory.replicas]]
//! addresses = ["quic://10.0.0.5:7443", "tcp://10.0.0.5:7000"]
//! [[services.inventory.replicas]]
//! addresses = ["tcp://10.0.0.6:7000"]
//! ```
//!
//! The file is read when it is opened and again whenever it has changed
//! since (its modification time); a channel looks again every
//! [`resolve_interval`](crate::ChannelBuilder::resolve_interval), so an
//! edit adds or drops replicas of a running channel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

use super::resolver::{ResolveFuture, Resolved, Resolver};
use crate::protocol::status::Status;
use crate::transport::Endpoint;

/// Why a static discovery file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StaticFileError {
    /// The file could not be read.
    #[error("could not read the discovery file {}: {source}; check the path ({})", path.display(), super::resolver::DISCOVERY_ENV)]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error(
        "the discovery file {} is not valid: {reason}; expected tables like \
         [services.calculator] with addresses = [\"quic://host:port\", \"tcp://host:port\"], \
         or [[services.calculator.replicas]] tables with addresses each",
        path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    services: BTreeMap<String, ServiceModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceModel {
    /// The addresses of a service with one replica.
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default)]
    pin: Option<String>,
    /// One table per replica.
    #[serde(default)]
    replicas: Option<Vec<ReplicaModel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaModel {
    addresses: Vec<String>,
    #[serde(default)]
    pin: Option<String>,
}

/// A [`Resolver`] reading a TOML file (format in the module docs).
#[derive(Debug)]
pub struct StaticFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    modified: Option<SystemTime>,
    /// Each name's replicas, each with its addresses.
    services: BTreeMap<String, Vec<Vec<Endpoint>>>,
}

impl StaticFile {
    /// Opens and checks `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StaticFileError> {
        let path = path.into();
        let loaded = load(&path)?;
        Ok(Self {
            path,
            loaded: Mutex::new(loaded),
        })
    }

    /// Parses `text` as the contents of a discovery file at `path` (which
    /// is not read): for tests and for configurations held elsewhere.
    pub fn from_toml(path: impl Into<PathBuf>, text: &str) -> Result<Self, StaticFileError> {
        let path = path.into();
        let services = parse(&path, text)?;
        Ok(Self {
            path,
            loaded: Mutex::new(Loaded {
                modified: None,
                services,
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The replicas of `name`, each with its addresses, reading the file
    /// again if it changed.
    pub fn lookup(&self, name: &str) -> Result<Option<Vec<Vec<Endpoint>>>, StaticFileError> {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if loaded.modified.is_some() && modified(&self.path) != loaded.modified {
            *loaded = load(&self.path)?;
        }
        Ok(loaded.services.get(&name.to_ascii_lowercase()).cloned())
    }
}

impl Resolver for StaticFile {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            let replicas = self
                .lookup(name)
                .map_err(|err| Status::failed_precondition(err.to_string()))?;
            let source = format!("the discovery file {}", self.path.display());
            Ok(replicas.map(|replicas| {
                replicas
                    .into_iter()
                    .map(|addresses| Resolved {
                        addresses,
                        source: source.clone(),
                    })
                    .collect()
            }))
        })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(path: &Path) -> Result<Loaded, StaticFileError> {
    let modified = modified(path);
    let text = std::fs::read_to_string(path).map_err(|source| StaticFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Loaded {
        modified,
        services: parse(path, &text)?,
    })
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, Vec<Vec<Endpoint>>>, StaticFileError> {
    let invalid = |reason: String| StaticFileError::Parse {
        path: path.to_owned(),
        reason,
    };
    let model: FileModel = toml::from_str(text).map_err(|err| invalid(err.to_string()))?;
    let mut services = BTreeMap::new();
    for (name, service) in model.services {
        let replicas = match (service.addresses, service.replicas) {
            (Some(addresses), None) => vec![ReplicaModel {
                addresses,
                pin: service.pin,
            }],
            (None, Some(replicas)) if service.pin.is_none() => replicas,
            (None, Some(_)) => {
                return Err(invalid(format!(
                    "services.{name}: give each replica its own pin, not the service"
                )));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "services.{name} has both addresses and replicas; list the addresses in \
                     a replica table"
                )));
            }
            (None, None) => {
                return Err(invalid(format!("services.{name} lists no addresses")));
            }
        };
        if replicas.is_empty() {
            return Err(invalid(format!("services.{name} lists no replicas")));
        }
        let mut parsed = Vec::with_capacity(replicas.len());
        for replica in replicas {
            parsed.push(parse_addresses(&name, replica, &invalid)?);
        }
        services.insert(name.to_ascii_lowercase(), parsed);
    }
    Ok(services)
}

/// One replica's addresses, checked as a connect would check them.
fn parse_addresses(
    name: &str,
    replica: ReplicaModel,
    invalid: &dyn Fn(String) -> StaticFileError,
) -> Result<Vec<Endpoint>, StaticFileError> {
    if replica.addresses.is_empty() {
        return Err(invalid(format!("services.{name} lists no addresses")));
    }
    let mut addresses = Vec::with_capacity(replica.addresses.len());
    for address in replica.addresses {
        let scheme = Endpoint::scheme_of(&address);
        if !matches!(scheme, Some("quic" | "tcp" | "unix")) {
            return Err(invalid(format!(
                "services.{name}: {address:?} is not a quic://, tcp:// or unix:// address"
            )));
        }
        let quic = scheme == Some("quic");
        let address = match &replica.pin {
            Some(pin) if quic && !address.contains("?pin=") => format!("{address}?pin={pin}"),
            _ => address,
        };
        // The same checks a connect would make, now, and only now.
        let endpoint = address
            .parse::<Endpoint>()
            .map_err(|err| invalid(format!("services.{name}: {err}")))?;
        addresses.push(endpoint);
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_file_maps_names_to_addresses_and_pins() {
        let file = StaticFile::from_toml(
            "/x.toml",
            &format!(
                "[services.Calculator]\naddresses = [\"tcp://10.0.0.5:7000\", \
                 \"quic://10.0.0.5:7443\"]\npin = \"{PIN}\"\n"
            ),
        )
        .unwrap();
        assert_eq!(
            file.lookup("calculator").unwrap().unwrap(),
            vec![vec![
                Endpoint::Tcp("10.0.0.5:7000".into()),
                Endpoint::Quic {
                    host_port: "10.0.0.5:7443".into(),
                    pin: Some(PIN.into()),
                    name: None,
                }
            ]]
        );
        assert_eq!(file.lookup("other").unwrap(), None);
    }

    #[test]
    fn replicas_each_have_their_addresses_and_pin() {
        let file = StaticFile::from_toml(
            "/x.toml",
            &format!(
                "[[services.inventory.replicas]]\naddresses = [\"quic://10.0.0.5:7443\", \
                 \"tcp://10.0.0.5:7000\"]\npin = \"{PIN}\"\n\
                 [[services.inventory.replicas]]\naddresses = [\"tcp://10.0.0.6:7000\"]\n"
            ),
        )
        .unwrap();
        assert_eq!(
            file.lookup("inventory").unwrap().unwrap(),
            vec![
                vec![
                    Endpoint::Quic {
                        host_port: "10.0.0.5:7443".into(),
                        pin: Some(PIN.into()),
                        name: None,
                    },
                    Endpoint::Tcp("10.0.0.5:7000".into()),
                ],
                vec![Endpoint::Tcp("10.0.0.6:7000".into())],
            ]
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, says) in [
            ("[services.a]\naddresses = []\n", "no addresses"),
            (
                "[services.a]\naddresses = [\"http://x:1\"]\n",
                "not a quic://",
            ),
            ("[services.a]\naddresses = [\"tcp://x\"]\n", "needs a port"),
            ("[services.a]\naddress = [\"tcp://x:1\"]\n", "unknown field"),
            ("[services.a\n", "parse error"),
            ("[services.a]\nreplicas = []\n", "no replicas"),
            (
                "[services.a]\naddresses = [\"tcp://x:1\"]\n[[services.a.replicas]]\n\
                 addresses = [\"tcp://y:1\"]\n",
                "both addresses and replicas",
            ),
            (
                "[[services.a.replicas]]\naddresses = [\"tcp://y\"]\n",
                "needs a port",
            ),
        ] {
            let err = StaticFile::from_toml("/bad.toml", text).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(says), "{text:?}: {message}");
            assert!(message.contains("/bad.toml"), "{message}");
        }
    }

    #[test]
    fn an_edited_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discovery.toml");
        std::fs::write(&path, "[services.a]\naddresses = [\"tcp://h:1\"]\n").unwrap();
        let file = StaticFile::open(&path).unwrap();
        assert_eq!(
            file.lookup("a").unwrap().unwrap(),
            vec![vec![Endpoint::Tcp("h:1".into())]]
        );
        // A different length and a later time: the change is seen.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "[services.a]\naddresses = [\"tcp://other:22\"]\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(
            file.lookup("a").unwrap().unwrap(),
            vec![vec![Endpoint::Tcp("other:22".into())]]
        );
        let missing = StaticFile::open(dir.path().join("none.toml")).unwrap_err();
        assert!(missing.to_string().contains("none.toml"), "{missing}");
    }
}
