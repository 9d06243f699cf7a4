//! The DNS resolver against a real DNS server (Debian's `dnsmasq`, started
//! here on a loopback port): replicas come from a name's A records, each at
//! one port (a Kubernetes headless Service), or from SRV records with their
//! own ports; records added to or removed from the server reach a running
//! channel within its resolve interval plus a second; an SRV record whose
//! target has no address is skipped. The replicas are servers in this
//! process on 127.0.0.1, .2 and .3.
//!
//! Skips, saying why, where `dnsmasq` is not installed (`.ci/run` installs
//! it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::discovery::Dns;
use switchyard::{Balance, Channel, Server, ServerHandle};

#[path = "common/which.rs"]
mod which;
use which::{Impl, WhichClient, WhichServer, spread};

/// dnsmasq on 127.0.0.1 at a free port, answering from a hosts file
/// (reloaded on SIGHUP) and the given extra options; killed when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    hosts: PathBuf,
}

impl Dnsmasq {
    fn start(dir: &Path, hosts: &str, extra: &[String]) -> Option<Self> {
        let exe = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(exe) = exe else {
            eprintln!(
                "skipping: dnsmasq is not installed (Debian's dnsmasq-base; .ci/run installs it)"
            );
            return None;
        };
        let path = dir.join("hosts");
        std::fs::write(&path, hosts).unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = vec![
            "--keep-in-foreground".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            format!("--port={port}"),
            "--listen-address=127.0.0.1".to_owned(),
            "--bind-interfaces".to_owned(),
            "--no-resolv".to_owned(),
            // Authoritative for .test: a name it does not know is NXDOMAIN
            // (as a cluster's DNS answers), not REFUSED.
            "--local=/test/".to_owned(),
            "--no-hosts".to_owned(),
            format!("--addn-hosts={}", path.display()),
            "--local-ttl=0".to_owned(),
            "--pid-file=".to_owned(),
            "--log-facility=-".to_owned(),
        ];
        if rustix::process::geteuid().is_root() {
            // Stay root: the hosts file is in a directory only we can read.
            args.push("--user=root".to_owned());
        }
        args.extend_from_slice(extra);
        let child = Command::new(exe)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts");
        let dnsmasq = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            hosts: path,
        };
        // Up once it answers on TCP.
        let start = Instant::now();
        while std::net::TcpStream::connect(dnsmasq.addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "dnsmasq never listened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(dnsmasq)
    }

    /// Replaces the hosts file and has dnsmasq read it again.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replica `id` on 127.0.0.`id`:`port`, over TCP only.
async fn replica(id: u32, port: u16) -> ServerHandle {
    Server::builder()
        .add_service(WhichServer::new(Impl(id)))
        .unpublished()
        .no_unix()
        .tcp(format!("127.0.0.{id}:{port}"))
        .start()
        .await
        .expect("replica starts")
}

/// A port free on 127.0.0.1, .2 and .3 (checked by binding each).
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if (2..=3).all(|i| std::net::TcpListener::bind(format!("127.0.0.{i}:{port}")).is_ok()) {
            return port;
        }
    }
}

/// Waits up to 10 s until the channel lists exactly `ids` as ready.
async fn until_replicas(client: &WhichClient, port: u16, ids: &[u32]) -> Duration {
    let want: Vec<String> = ids
        .iter()
        .map(|id| format!("tcp://127.0.0.{id}:{port}"))
        .collect();
    let start = Instant::now();
    loop {
        let replicas = client.channel().replicas();
        let ready: Vec<String> = replicas
            .iter()
            .filter(|r| r.state == "ready")
            .map(|r| r.key.clone())
            .collect();
        if ready == want && replicas.len() == ids.len() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never exactly {want:?}: {replicas:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn replicas_follow_a_names_a_records_as_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dns) = Dnsmasq::start(
        dir.path(),
        "127.0.0.1 inventory.test\n127.0.0.2 inventory.test\n",
        &[],
    ) else {
        return;
    };
    let port = free_port();
    let servers = futures_util::future::join_all((1..=3).map(|id| replica(id, port))).await;
    let resolver = Dns::with_server(dns.addr, port).unwrap().suffix("test");
    let channel = Channel::builder()
        .resolver(Arc::new(resolver))
        .runtime_dir(dir.path())
        .balance(Balance::RoundRobin)
        .resolve_interval(Duration::from_millis(200))
        .timeout(Duration::from_secs(5))
        .connect("inventory")
        .await
        .expect("connects through DNS");
    let client = WhichClient::new(channel);
    until_replicas(&client, port, &[1, 2]).await;
    let info = client.channel().info();
    assert!(
        info.source
            .as_deref()
            .is_some_and(|s| s.contains("inventory.test") && s.contains(&dns.addr.to_string())),
        "{info:#?}"
    );
    assert!(
        info.replicas[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("DNS (inventory.test")),
        "{info:#?}"
    );
    assert_eq!(spread(&client, 40).await, HashMap::from([(1, 20), (2, 20)]));

    dns.set_hosts("127.0.0.1 inventory.test\n127.0.0.2 inventory.test\n127.0.0.3 inventory.test\n");
    let took = until_replicas(&client, port, &[1, 2, 3]).await;
    println!("a replica added to DNS got calls after {took:?} (resolve interval 200 ms)");
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert_eq!(spread(&client, 30).await.get(&3), Some(&10));

    dns.set_hosts("127.0.0.2 inventory.test\n127.0.0.3 inventory.test\n");
    let took = until_replicas(&client, port, &[2, 3]).await;
    println!("a replica removed from DNS stopped getting calls after {took:?}");
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert_eq!(spread(&client, 30).await.get(&1), None);

    // The name gone from DNS: the channel keeps what it knew, and says so.
    dns.set_hosts("");
    let start = Instant::now();
    while client.channel().info().discovery_error.is_none() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let info = client.channel().info();
    assert_eq!(info.replicas.len(), 2, "{info:#?}");
    assert_eq!(spread(&client, 10).await.len(), 2);
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn srv_records_give_each_replica_its_port_and_targets_without_address_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_port(), free_port());
    let srv = [
        format!("--srv-host=_which._tcp.inventory.test,r1.test,{a}"),
        format!("--srv-host=_which._tcp.inventory.test,r2.test,{b}"),
        format!("--srv-host=_which._tcp.inventory.test,gone.test,{b}"),
    ];
    let Some(dns) = Dnsmasq::start(dir.path(), "127.0.0.1 r1.test\n127.0.0.2 r2.test\n", &srv)
    else {
        return;
    };
    let one = replica(1, a).await;
    let two = replica(2, b).await;
    let resolver = Dns::with_server(dns.addr, 0)
        .unwrap()
        .srv("which")
        .suffix("test");
    let channel = Channel::builder()
        .resolver(Arc::new(resolver))
        .runtime_dir(dir.path())
        .balance(Balance::RoundRobin)
        .connect("inventory")
        .await
        .expect("connects through SRV records");
    let mut keys: Vec<String> = channel.replicas().into_iter().map(|r| r.key).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("tcp://127.0.0.1:{a}"),
            format!("tcp://127.0.0.2:{b}")
        ]
    );
    // The record whose target has no address is skipped, and shown.
    let skipped = channel.info().skipped;
    assert!(
        skipped.len() == 1 && skipped[0].starts_with("SRV gone.test."),
        "{skipped:?}"
    );
    let table = switchyard::debug::table::connections_table(&switchyard::debug::snapshot());
    assert!(table.contains("  skipped: SRV gone.test."), "{table}");
    let client = WhichClient::new(channel);
    assert_eq!(spread(&client, 20).await, HashMap::from([(1, 10), (2, 10)]));
    // A name DNS does not know is NOT_FOUND, saying where it was looked up.
    let err = Channel::builder()
        .resolver(Arc::new(
            Dns::with_server(dns.addr, 0)
                .unwrap()
                .srv("which")
                .suffix("test"),
        ))
        .runtime_dir(dir.path())
        .connect("payments")
        .await
        .unwrap_err();
    assert_eq!(err.code(), switchyard::Code::NotFound, "{err}");
    one.shutdown().await;
    two.shutdown().await;
}

/// A CA, and a certificate it issued for `name`.
fn ca_and_certificate(
    name: &str,
) -> (
    switchyard::transport::quic::CaRoots,
    switchyard::transport::quic::Identity,
) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        switchyard::transport::quic::CaRoots::from_pem(ca_pem.as_bytes(), "the test CA").unwrap(),
        switchyard::transport::quic::Identity::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn over_quic_each_address_is_dialled_and_checked_against_the_name_it_was_found_under() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dns) = Dnsmasq::start(
        dir.path(),
        "127.0.0.1 inventory.test\n127.0.0.2 inventory.test\n",
        &[],
    ) else {
        return;
    };
    // A UDP port free on both addresses.
    let port = loop {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if std::net::UdpSocket::bind(format!("127.0.0.2:{port}")).is_ok() {
            break port;
        }
    };
    // The certificates name the service, not the pods' addresses (as
    // deploy/k8s's do).
    let (roots, identity) = ca_and_certificate("inventory.test");
    let mut servers = Vec::new();
    for id in 1..=2 {
        servers.push(
            Server::builder()
                .add_service(WhichServer::new(Impl(id)))
                .unpublished()
                .no_unix()
                .message_queues(false)
                .quic(format!("127.0.0.{id}:{port}"))
                .tls_identity(identity.clone())
                .start()
                .await
                .expect("replica starts"),
        );
    }
    let channel = Channel::builder()
        .discovery(
            Dns::with_server(dns.addr, port)
                .unwrap()
                .suffix("test")
                .quic(),
        )
        .tls_ca(roots)
        .runtime_dir(dir.path())
        .balance(Balance::RoundRobin)
        .connect("inventory")
        .await
        .expect("connects over QUIC, checking inventory.test");
    let mut keys: Vec<String> = channel.replicas().into_iter().map(|r| r.key).collect();
    keys.sort();
    assert_eq!(
        keys,
        [1, 2].map(|id| format!("quic://127.0.0.{id}:{port}?name=inventory.test"))
    );
    let client = WhichClient::new(channel);
    assert_eq!(spread(&client, 10).await, HashMap::from([(1, 5), (2, 5)]));
    for server in servers {
        server.shutdown().await;
    }
}
