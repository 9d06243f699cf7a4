//! A [`Resolver`] that finds a name's replicas in DNS, as a Kubernetes
//! headless Service publishes them: every address of the name's A and AAAA
//! records is a replica, at a port given here ([`Dns::system`],
//! [`Dns::with_server`]), or every target of its SRV records, at the port
//! each record gives ([`Dns::srv`]). A channel looks the name up again
//! every [`resolve_interval`](crate::ChannelBuilder::resolve_interval), so
//! replicas added to or removed from DNS get calls or stop getting them
//! within that period (plus the records' TTL, which this resolver caps at
//! the same interval).
//!
//! ```no_run
//! # async fn run() -> Result<(), switchyard::Status> {
//! use std::sync::Arc;
//! use switchyard::discovery::Dns;
//! use switchyard::{Balance, Channel};
//!
//! // inventory.default.svc.cluster.local's pods, each at port 7000 over TCP.
//! let dns = Dns::system(7000)?.suffix("default.svc.cluster.local");
//! let channel = Channel::builder()
//!     .resolver(Arc::new(dns))
//!     .balance(Balance::RoundRobin)
//!     .connect("inventory")
//!     .await?;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::resolver::{ResolveFuture, Resolved, Resolver};
use crate::protocol::status::Status;
use crate::transport::{Endpoint, Transport};

/// How a name becomes replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Records {
    /// A and AAAA records, each address at this port.
    Addresses { port: u16 },
    /// SRV records of `_<service>._<tcp|udp>.<name>`.
    Srv { service: String },
}

/// Finds replicas in DNS (see the [module docs](self)).
pub struct Dns {
    resolver: TokioResolver,
    records: Records,
    transport: Transport,
    suffix: Option<String>,
    /// Who answers, for reasons and errors.
    server: String,
    /// Per name, what its last lookup skipped and why.
    skipped: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("records", &self.records)
            .field("transport", &self.transport)
            .field("suffix", &self.suffix)
            .field("server", &self.server)
            .finish()
    }
}

/// The longest a record is trusted before it is asked for again.
const MAX_TTL: Duration = Duration::from_secs(1);

fn options() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    // Replicas come and go: a record is asked for again soon, and an
    // answer that a name has none is not remembered.
    opts.positive_max_ttl = Some(MAX_TTL);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts
}

impl Dns {
    /// The system's DNS servers (`/etc/resolv.conf`, with its search
    /// domains: inside Kubernetes, `inventory` finds the headless Service
    /// of the pod's namespace); each A/AAAA address is a replica at
    /// `port`, over TCP.
    pub fn system(port: u16) -> Result<Self, Status> {
        let (config, mut opts) =
            hickory_resolver::system_conf::read_system_conf().map_err(|err| {
                Status::failed_precondition(format!(
                    "cannot read the system's DNS configuration (/etc/resolv.conf): {err}; give a \
                 server with Dns::with_server"
                ))
            })?;
        let defaults = options();
        opts.positive_max_ttl = defaults.positive_max_ttl;
        opts.negative_max_ttl = defaults.negative_max_ttl;
        let server = config.name_servers().first().map_or_else(
            || "the system's DNS".to_owned(),
            |ns| format!("the DNS server {}", ns.ip),
        );
        let resolver = build(config, opts)?;
        Ok(Self {
            resolver,
            records: Records::Addresses { port },
            transport: Transport::Tcp,
            suffix: None,
            server,
            skipped: Default::default(),
        })
    }

    /// The DNS server at `server` alone (no hosts file, no search
    /// domains); each A/AAAA address is a replica at `port`, over TCP.
    pub fn with_server(server: SocketAddr, port: u16) -> Result<Self, Status> {
        let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
            .into_iter()
            .map(|mut connection| {
                connection.port = server.port();
                connection
            })
            .collect();
        let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            server.ip(),
            true,
            connections,
        )]);
        let mut opts = options();
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        Ok(Self {
            resolver: build(config, opts)?,
            records: Records::Addresses { port },
            transport: Transport::Tcp,
            suffix: None,
            server: format!("the DNS server {server}"),
            skipped: Default::default(),
        })
    }

    /// Reads SRV records instead: `_<service>._tcp.<name>` (`_udp` for
    /// QUIC); each target is a replica at the port its record gives, every
    /// address of the target one replica.
    pub fn srv(mut self, service: impl Into<String>) -> Self {
        self.records = Records::Srv {
            service: service.into(),
        };
        self
    }

    /// Connects to the replicas over QUIC instead of TCP. Each replica is
    /// dialled at its address, and its certificate checked (under CA trust)
    /// against the DNS name it was found under: the looked-up name for
    /// A/AAAA records, the record's target for SRV
    /// (`quic://10.0.0.5:7443?name=inventory.default.svc.cluster.local`).
    pub fn quic(mut self) -> Self {
        self.transport = Transport::Quic;
        self
    }

    /// Appends `domain` to every name looked up (`inventory` becomes
    /// `inventory.<domain>`).
    pub fn suffix(mut self, domain: impl Into<String>) -> Self {
        self.suffix = Some(domain.into().trim_matches('.').to_owned());
        self
    }

    /// The DNS name `name` is looked up as.
    fn dns_name(&self, name: &str) -> String {
        let base = match &self.suffix {
            Some(domain) if !domain.is_empty() => format!("{name}.{domain}"),
            _ => name.to_owned(),
        };
        match &self.records {
            Records::Addresses { .. } => base,
            Records::Srv { service } => {
                let proto = if self.transport == Transport::Quic {
                    "udp"
                } else {
                    "tcp"
                };
                format!("_{service}._{proto}.{base}")
            }
        }
    }

    /// The endpoint of a replica at `ip:port`, found under the DNS name
    /// `found_as` (over QUIC, what its certificate must name).
    fn endpoint(&self, ip: IpAddr, port: u16, found_as: &str) -> Endpoint {
        let host_port = SocketAddr::new(ip, port).to_string();
        match self.transport {
            Transport::Quic => Endpoint::Quic {
                host_port,
                pin: None,
                name: Some(found_as.trim_end_matches('.').to_ascii_lowercase()),
            },
            _ => Endpoint::Tcp(host_port),
        }
    }

    /// The addresses of `host`, sorted; `Ok(None)` when the name does not
    /// exist or has none.
    async fn addresses(&self, host: &str) -> Result<Option<Vec<IpAddr>>, Status> {
        match self.resolver.lookup_ip(host).await {
            Ok(found) => {
                let mut ips: Vec<IpAddr> = found.iter().collect();
                ips.sort();
                ips.dedup();
                Ok(Some(ips))
            }
            Err(err) if err.is_nx_domain() || err.is_no_records_found() => Ok(None),
            Err(err) => Err(self.failed(host, &err)),
        }
    }

    fn failed(&self, host: &str, err: &NetError) -> Status {
        Status::unavailable(format!(
            "looking {host:?} up at {} failed: {err}; is the DNS server reachable?",
            self.server
        ))
    }

    async fn lookup(&self, name: &str) -> Result<Option<Vec<Resolved>>, Status> {
        let dns_name = self.dns_name(name);
        let source = format!("DNS ({dns_name} at {})", self.server);
        let one = |endpoint: Endpoint| Resolved {
            addresses: vec![endpoint],
            source: source.clone(),
        };
        match &self.records {
            Records::Addresses { port } => Ok(self.addresses(&dns_name).await?.map(|ips| {
                ips.into_iter()
                    .map(|ip| one(self.endpoint(ip, *port, &dns_name)))
                    .collect()
            })),
            Records::Srv { .. } => {
                let records = match self.resolver.srv_lookup(dns_name.as_str()).await {
                    Ok(records) => records,
                    Err(err) if err.is_nx_domain() || err.is_no_records_found() => {
                        return Ok(None);
                    }
                    Err(err) => return Err(self.failed(&dns_name, &err)),
                };
                let mut replicas = Vec::new();
                let mut skipped = Vec::new();
                for record in records.answers() {
                    let RData::SRV(srv) = &record.data else {
                        continue;
                    };
                    let target = srv.target.to_utf8();
                    if srv.port == 0 {
                        tracing::warn!(%dns_name, %target, "skipping an SRV record with port 0");
                        skipped.push(format!("SRV {target} port 0: no replica listens there"));
                        continue;
                    }
                    // One target that cannot be resolved costs its replica,
                    // not the others.
                    match self.addresses(&target).await {
                        Ok(Some(ips)) if !ips.is_empty() => replicas.extend(
                            ips.into_iter()
                                .map(|ip| one(self.endpoint(ip, srv.port, &target))),
                        ),
                        Ok(_) => {
                            tracing::warn!(
                                %dns_name,
                                %target,
                                "skipping an SRV record whose target has no address"
                            );
                            skipped.push(format!("SRV {target}: the target has no address"));
                        }
                        Err(status) => {
                            tracing::warn!(
                                %dns_name,
                                %target,
                                %status,
                                "skipping an SRV record whose target cannot be resolved"
                            );
                            skipped.push(format!("SRV {target}: {}", status.message()));
                        }
                    }
                }
                replicas.sort_by_key(|r| r.urls());
                replicas.dedup_by(|a, b| a.addresses == b.addresses);
                self.skipped
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(name.to_owned(), skipped);
                Ok(Some(replicas))
            }
        }
    }
}

/// A resolver over tokio with `config` and `opts`.
fn build(config: ResolverConfig, opts: ResolverOpts) -> Result<TokioResolver, Status> {
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|err| {
            Status::failed_precondition(format!(
                "cannot set up the DNS resolver: {err}; check the server given to \
                 Dns::with_server, or the nameserver lines of /etc/resolv.conf"
            ))
        })
}

impl Resolver for Dns {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(self.lookup(name))
    }

    fn skipped(&self, name: &str) -> Vec<String> {
        self.skipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_built_from_the_suffix_and_the_srv_service() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
            let dns = Dns::with_server(server, 7000)
                .unwrap()
                .suffix("default.svc.cluster.local.");
            assert_eq!(
                dns.dns_name("inventory"),
                "inventory.default.svc.cluster.local"
            );
            assert_eq!(
                dns.endpoint("10.0.0.5".parse().unwrap(), 7000, "inventory.test"),
                Endpoint::Tcp("10.0.0.5:7000".into())
            );
            let srv = Dns::with_server(server, 0).unwrap().srv("grpc").quic();
            assert_eq!(srv.dns_name("inventory"), "_grpc._udp.inventory");
            assert_eq!(
                srv.endpoint("::1".parse().unwrap(), 7443, "R1.test.")
                    .to_string(),
                "quic://[::1]:7443?name=r1.test"
            );
        });
    }
}
