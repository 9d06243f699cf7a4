//! `quic://` addresses and names across machines as a user reaches them:
//! `Channel::connect` with a pinned fingerprint, CA trust, mutual TLS with
//! the client's identity visible to the handler, the static discovery file
//! with QUIC-then-TCP fallback, the same-host upgrade to shared memory, and
//! the reconnect backoff.

#![cfg(feature = "quic")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard::discovery::StaticFile;
use switchyard::transport::quic::{CaRoots, Identity};
use switchyard::{Backoff, Channel, Code, Context, Server, ServerHandle, Transport};

/// Says who is calling.
#[switchyard::service]
pub trait Whoami {
    /// The caller's certificate names, or "anonymous".
    async fn whoami(&self) -> String;
}

struct Answer;

impl Whoami for Answer {
    async fn whoami(&self) -> String {
        let ctx = Context::current().expect("a handler has a context");
        match ctx.peer_identity() {
            Some(id) => format!("{} via {}", id.dns_names.join(","), ctx.transport()),
            None => format!("anonymous via {}", ctx.transport()),
        }
    }
}

const TIME_LIMIT: Duration = Duration::from_secs(60);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIME_LIMIT, test)
        .await
        .expect("did not finish in time (hang?)")
}

/// A server over QUIC (and TCP when `tcp`), with no Unix socket unless
/// `unix`, in its own runtime directory.
async fn server(
    dir: &Path,
    unix: bool,
    tcp: bool,
    tune: impl FnOnce(switchyard::ServerBuilder) -> switchyard::ServerBuilder,
) -> ServerHandle {
    let mut builder = Server::builder()
        .add_service(WhoamiServer::new(Answer))
        .runtime_dir(dir)
        .unpublished()
        .message_queues(false)
        .quic("127.0.0.1:0");
    if !unix {
        builder = builder.no_unix();
    }
    if tcp {
        builder = builder.tcp("127.0.0.1:0");
    }
    tune(builder).start().await.expect("server starts")
}

fn runtime() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A CA, and certificates it issued for `names`, as PEM files in `dir`.
struct Pki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca: rcgen::Issuer::new(params, key),
        }
    }

    fn roots(&self) -> CaRoots {
        CaRoots::from_pem(self.ca_pem.as_bytes(), "the test CA").unwrap()
    }

    fn issue(&self, names: &[&str]) -> Identity {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_quic_address_connects_and_stays_on_quic_without_a_unix_socket() {
    bounded(async {
        let dir = runtime();
        let server = server(dir.path(), false, false, |b| b).await;
        let url = server.quic_url().expect("quic url");
        assert!(url.contains("?pin="), "{url}");
        assert!(
            server.endpoints().iter().any(|e| e.starts_with("quic://")),
            "{:?}",
            server.endpoints()
        );
        let channel = Channel::connect(&url).await.expect("connects");
        let client = WhoamiClient::new(channel.clone());
        assert_eq!(client.whoami().await.unwrap(), "anonymous via quic");
        let selection = channel.selection();
        assert_eq!(selection.transport, Transport::Quic, "{selection}");
        assert!(
            selection.reason.to_string().contains("quic://"),
            "{selection}"
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_address_on_this_host_moves_to_shared_memory_unless_quic_is_demanded() {
    bounded(async {
        let dir = runtime();
        let server = server(dir.path(), true, false, |b| b).await;
        let url = server.quic_url().unwrap();
        let channel = Channel::connect(&url).await.expect("connects");
        let client = WhoamiClient::new(channel.clone());
        let answer = client.whoami().await.unwrap();
        let selection = channel.selection();
        assert_eq!(selection.transport, Transport::Shm, "{selection}");
        assert!(
            selection
                .reason
                .to_string()
                .contains("upgraded: reached quic://"),
            "{selection}"
        );
        assert_eq!(answer, "anonymous via shm");
        let kept = Channel::builder()
            .prefer(Transport::Quic)
            .connect(&url)
            .await
            .unwrap();
        assert_eq!(
            WhoamiClient::new(kept.clone()).whoami().await.unwrap(),
            "anonymous via quic"
        );
        assert_eq!(kept.selection().transport, Transport::Quic);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pins_missing_trust_and_foreign_cas_fail_with_clear_errors() {
    bounded(async {
        let dir = runtime();
        let server = server(dir.path(), false, false, |b| b).await;
        let addr = server.quic_addr().unwrap();
        let right = server.quic_fingerprint().unwrap().to_string();
        let wrong = "ab".repeat(32);
        let err = Channel::connect(&format!("quic://{addr}?pin={wrong}"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        assert!(err.message().contains(&wrong), "{err}");
        assert!(err.message().contains(&right), "{err}");

        // No pin and no CA (this test binary never sets SWITCHYARD_TLS_CA).
        let err = Channel::connect(&format!("quic://{addr}"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(err.message().contains("?pin="), "{err}");
        assert!(err.message().contains("SWITCHYARD_TLS_CA"), "{err}");

        let err = Channel::connect(&format!("quic://{addr}?pin=xyz"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");

        // A CA that did not issue the server's (self-signed) certificate.
        let foreign = Pki::new("someone else");
        let err = Channel::builder()
            .tls_ca(foreign.roots())
            .connect(&format!("quic://{addr}"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        assert!(err.message().contains("the test CA"), "{err}");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_shows_the_client_identity_and_refuses_clients_without_one() {
    bounded(async {
        let pki = Pki::new("switchyard test CA");
        let dir = runtime();
        let server_identity = pki.issue(&["localhost", "127.0.0.1"]);
        // With a Unix socket: a client with a certificate still stays on
        // QUIC (shared memory would lose its identity).
        let server = server(dir.path(), true, false, |b| {
            b.tls_identity(server_identity)
                .require_client_certs(pki.roots())
        })
        .await;
        let addr = server.quic_addr().unwrap();
        // CA trust: the certificate names 127.0.0.1, which is connected to.
        let channel = Channel::builder()
            .tls_ca(pki.roots())
            .tls_identity(pki.issue(&["gateway.cluster.test"]))
            .connect(&format!("quic://{addr}"))
            .await
            .expect("connects with a client certificate");
        assert_eq!(
            WhoamiClient::new(channel).whoami().await.unwrap(),
            "gateway.cluster.test via quic"
        );

        // No client certificate: refused, saying so.
        let refused = async {
            let channel = Channel::builder()
                .tls_ca(pki.roots())
                .connect(&format!("quic://{addr}"))
                .await?;
            WhoamiClient::new(channel).whoami().await
        }
        .await
        .unwrap_err();
        eprintln!("no client certificate: {refused}");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
        assert!(
            refused.message().contains("client certificate"),
            "{refused}"
        );

        // A client certificate from another CA: refused.
        let other = Pki::new("another CA");
        let refused = async {
            let channel = Channel::builder()
                .tls_ca(pki.roots())
                .tls_identity(other.issue(&["intruder"]))
                .connect(&format!("quic://{addr}"))
                .await?;
            WhoamiClient::new(channel).whoami().await
        }
        .await
        .unwrap_err();
        eprintln!("foreign client certificate: {refused}");
        assert!(refused.message().contains("refused"), "{refused}");
        server.shutdown().await;

        // Plain TCP beside mutual TLS would let any client around it.
        let err = Server::builder()
            .add_service(WhoamiServer::new(Answer))
            .runtime_dir(dir.path())
            .unpublished()
            .no_unix()
            .message_queues(false)
            .quic("127.0.0.1:0")
            .tcp("127.0.0.1:0")
            .require_client_certs(pki.roots())
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(err.message().contains("allow_plaintext_tcp"), "{err}");
        let allowed = Server::builder()
            .add_service(WhoamiServer::new(Answer))
            .runtime_dir(dir.path())
            .unpublished()
            .no_unix()
            .message_queues(false)
            .quic("127.0.0.1:0")
            .tcp("127.0.0.1:0")
            .require_client_certs(pki.roots())
            .allow_plaintext_tcp()
            .start()
            .await
            .expect("allowed explicitly");
        allowed.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_identity_admits_callers_by_their_certificate_names() {
    use switchyard::layers::RequireIdentity;
    bounded(async {
        let pki = Pki::new("switchyard test CA");
        let dir = runtime();
        let server_identity = pki.issue(&["localhost", "127.0.0.1"]);
        // A Unix socket too: a same-host caller without a certificate
        // reaches the layer there, and is refused by it.
        let server = server(dir.path(), true, false, |b| {
            b.tls_identity(server_identity)
                .require_client_certs(pki.roots())
                .layer(RequireIdentity::dns_name("gateway.cluster.test"))
        })
        .await;
        let addr = server.quic_addr().unwrap();
        let as_name = |name: &'static str| {
            let roots = pki.roots();
            let identity = pki.issue(&[name]);
            async move {
                let channel = Channel::builder()
                    .tls_ca(roots)
                    .tls_identity(identity)
                    .connect(&format!("quic://{addr}"))
                    .await?;
                WhoamiClient::new(channel).whoami().await
            }
        };
        assert_eq!(
            as_name("gateway.cluster.test").await.unwrap(),
            "gateway.cluster.test via quic"
        );
        let refused = as_name("batch.cluster.test").await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
        assert!(
            refused.message().contains("batch.cluster.test"),
            "{refused}"
        );
        // Over the Unix socket: no certificate at all.
        let unix = server.unix_path().unwrap().display().to_string();
        let channel = Channel::builder()
            .prefer(Transport::Unix)
            .connect(&format!("unix://{unix}"))
            .await
            .unwrap();
        let refused = WhoamiClient::new(channel).whoami().await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
        assert!(
            refused.message().contains("client certificate"),
            "{refused}"
        );
        server.shutdown().await;
    })
    .await;
}

fn discovery(dir: &Path, name: &str, addresses: &[String]) -> std::path::PathBuf {
    let path = dir.join("discovery.toml");
    let list: Vec<String> = addresses.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        &path,
        format!("[services.{name}]\naddresses = [{}]\n", list.join(", ")),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_the_discovery_file_picks_quic_and_falls_back_to_tcp() {
    bounded(async {
        let dir = runtime();
        let server = server(dir.path(), false, true, |b| b).await;
        let quic = server.quic_url().unwrap();
        let tcp = format!("tcp://{}", server.tcp_addr().unwrap());
        // TCP listed first: QUIC is still tried first.
        let file = discovery(dir.path(), "who", &[tcp.clone(), quic]);
        let client_dir = runtime();
        let channel = Channel::builder()
            .runtime_dir(client_dir.path())
            .discovery_file(&file)
            .prefer(Transport::Quic)
            .connect("who")
            .await
            .expect("connects by name");
        let selection = channel.selection();
        assert_eq!(selection.transport, Transport::Quic, "{selection}");
        assert!(
            selection.reason.to_string().contains("discovery.toml"),
            "{selection}"
        );

        // A QUIC address nobody answers on (a UDP port with no listener,
        // as when UDP is dropped): after the attempt timeout, TCP.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let pin = server.quic_fingerprint().unwrap();
        let dead = format!("quic://{}?pin={pin}", silent.local_addr().unwrap());
        let file = discovery(dir.path(), "who", &[dead.clone(), tcp.clone()]);
        let channel = Channel::builder()
            .runtime_dir(client_dir.path())
            .resolver(Arc::new(StaticFile::open(&file).unwrap()))
            .attempt_timeout(Duration::from_millis(300))
            .connect("who")
            .await
            .expect("falls back to tcp");
        let answer = WhoamiClient::new(channel.clone()).whoami().await.unwrap();
        let selection = channel.selection();
        // On this host the TCP connection moves on to shared memory only if
        // the server has a Unix socket; it has none here.
        eprintln!("fallback: {selection}");
        assert_eq!(selection.transport, Transport::Tcp, "{selection}");
        assert_eq!(answer, "anonymous via tcp");
        assert!(
            selection.reason.to_string().starts_with("fell back to tcp"),
            "{selection}"
        );
        assert!(selection.reason.to_string().contains("UDP"), "{selection}");
        assert!(
            selection
                .rejected
                .iter()
                .any(|(t, why)| *t == Transport::Quic && why.to_string().contains(&dead[..20])),
            "{selection}"
        );

        // Unknown names say where they were looked for.
        let err = Channel::builder()
            .runtime_dir(client_dir.path())
            .discovery_file(&file)
            .connect("nobody")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err}");
        assert!(err.message().contains("discovery.toml"), "{err}");
        drop(silent);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_backs_off_and_recovers() {
    bounded(async {
        let dir = runtime();
        let first = server(dir.path(), false, false, |b| b).await;
        let file = discovery(dir.path(), "who", &[first.quic_url().unwrap()]);
        let backoff = Backoff {
            initial: Duration::from_millis(400),
            ..Backoff::default()
        };
        let channel = Channel::builder()
            .runtime_dir(dir.path())
            .discovery_file(&file)
            .reconnect_backoff(backoff)
            .attempt_timeout(Duration::from_millis(300))
            .connect_timeout(Duration::from_millis(600))
            .timeout(Duration::from_secs(5))
            .connect("who")
            .await
            .unwrap();
        let client = WhoamiClient::new(channel.clone());
        client.whoami().await.unwrap();
        first.shutdown().await;

        // The connection ends; the call after it tries to reconnect at once
        // and fails (nobody listens); the one after that waits out the
        // backoff by failing at once, saying when the next attempt is.
        let mut failures = Vec::new();
        for _ in 0..3 {
            failures.push(client.whoami().await.unwrap_err());
        }
        let fast = failures
            .iter()
            .find(|s| s.message().contains("next attempt is in"))
            .unwrap_or_else(|| panic!("no backoff message in {failures:?}"));
        eprintln!("backoff: {fast}");
        assert_eq!(fast.code(), Code::Unavailable, "{fast}");
        assert!(fast.message().contains("reconnecting to who"), "{fast}");

        // A new server on another port; the file says so; after the backoff
        // the next attempt finds it.
        let second = server(dir.path(), false, false, |b| b).await;
        discovery(dir.path(), "who", &[second.quic_url().unwrap()]);
        let started = std::time::Instant::now();
        loop {
            match client.whoami().await {
                Ok(answer) => {
                    assert_eq!(answer, "anonymous via quic");
                    break;
                }
                Err(status) if started.elapsed() < Duration::from_secs(20) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("never reconnected: {status}"),
            }
        }
        second.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_checks_the_certificate_against_a_name_while_dialling_an_address() {
    bounded(async {
        let pki = Pki::new("switchyard test CA");
        let dir = runtime();
        // The certificate names the service, not the address (a pod found
        // through a headless Service).
        let identity = pki.issue(&["inventory.switchyard.test"]);
        let server = server(dir.path(), false, false, |b| b.tls_identity(identity)).await;
        let addr = server.quic_addr().unwrap();
        let err = Channel::builder()
            .tls_ca(pki.roots())
            .connect(&format!("quic://{addr}"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        let channel = Channel::builder()
            .tls_ca(pki.roots())
            .connect(&format!("quic://{addr}?name=inventory.switchyard.test"))
            .await
            .expect("the certificate names inventory.switchyard.test");
        assert_eq!(
            WhoamiClient::new(channel).whoami().await.unwrap(),
            "anonymous via quic"
        );
        let err = Channel::builder()
            .tls_ca(pki.roots())
            .connect(&format!("quic://{addr}?name=payments.switchyard.test"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        let err = Channel::connect(&format!("quic://{addr}?name=not%20a%20name"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("is not a DNS name"), "{err}");
        server.shutdown().await;
    })
    .await;
}
