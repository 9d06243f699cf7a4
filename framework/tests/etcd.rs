//! The etcd resolver and registration against a real etcd (Debian's
//! `etcd-server`, started here on loopback ports): servers register under
//! leases; a channel lists them and follows its watch, so a replica
//! registered mid-run gets calls, and one withdrawn stops getting them,
//! well before the channel's resolve interval (30 s here) would have found
//! out; a graceful shutdown withdraws at once, a server that dies is
//! dropped when its lease expires; a lease etcd lost is taken again; a
//! record that is not a replica is skipped and shown; etcd unreachable at
//! start is a clear error, and mid-run the channel keeps its replicas and
//! says why. Each test prints the figures it measures.
//!
//! Skips, saying why, where `etcd` is not installed (`.ci/run` installs it).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard::discovery::{Etcd, Resolver};
use switchyard::{Balance, Channel, Code, Server, ServerHandle};

#[path = "common/which.rs"]
mod which;
use which::{Impl, WhichClient, WhichServer, spread};

/// A one-member etcd on loopback ports; killed when dropped.
struct EtcdProcess {
    child: Child,
    client: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdProcess {
    fn start(dir: &Path) -> Option<Self> {
        let exe = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(exe) = exe else {
            eprintln!(
                "skipping: etcd is not installed (Debian's etcd-server; .ci/run installs it)"
            );
            return None;
        };
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(exe)
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--name", "test"])
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let etcd = Self {
            child,
            client: SocketAddr::from(([127, 0, 0, 1], client)),
        };
        // Up once it answers a range.
        let start = Instant::now();
        while raw(etcd.client, "/v3/kv/range", r#"{"key":"AA=="}"#).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(etcd)
    }

    fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    fn etcd(&self) -> Etcd {
        Etcd::new(&self.url()).unwrap()
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request to etcd's gateway, as another tool would make it; the
/// body of a 200 answer.
fn raw(addr: SocketAddr, path: &str, body: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .starts_with("HTTP/1.1 200")
        .then(|| answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

/// Replica `id` over TCP on loopback, not in the local registry.
async fn replica(id: u32) -> ServerHandle {
    Server::builder()
        .add_service(WhichServer::new(Impl(id)))
        .unpublished()
        .no_unix()
        .tcp("127.0.0.1:0")
        .start()
        .await
        .expect("replica starts")
}

fn url(server: &ServerHandle) -> String {
    format!("tcp://{}", server.tcp_addr().unwrap())
}

/// Calls until replica `id` answers (or, with `gone`, until it has not
/// answered 20 calls in a row); how long that took.
async fn until_answering(client: &WhichClient, id: u32, gone: bool) -> Duration {
    let start = Instant::now();
    let mut without = 0;
    loop {
        let answered = client.which().await.expect("call");
        if !gone && answered == id {
            return start.elapsed();
        }
        without = if answered == id { 0 } else { without + 1 };
        if gone && without == 20 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "replica {id} never {}",
            if gone { "left" } else { "answered" }
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The channel to "inventory" through `etcd`, its resolve interval long
/// enough that only the watch can explain a change seen within seconds.
async fn channel(etcd: Etcd, dir: &Path) -> WhichClient {
    let channel = Channel::builder()
        .discovery(etcd)
        .runtime_dir(dir)
        .balance(Balance::RoundRobin)
        .resolve_interval(Duration::from_secs(30))
        .timeout(Duration::from_secs(5))
        .connect("inventory")
        .await
        .expect("connects through etcd");
    WhichClient::new(channel)
}

#[tokio::test]
async fn replicas_registered_in_etcd_are_followed_through_its_watch() {
    let dir = tempfile::tempdir().unwrap();
    let Some(etcd_process) = EtcdProcess::start(dir.path()) else {
        return;
    };
    let etcd = etcd_process.etcd();
    let one = replica(1).await;
    let two = replica(2).await;
    let _one_listed = etcd.register("inventory", [url(&one)]).await.unwrap();
    let two_listed = etcd.register("inventory", [url(&two)]).await.unwrap();
    assert!(
        two_listed
            .key()
            .starts_with("/switchyard/services/inventory/")
    );
    let client = channel(etcd.clone(), dir.path()).await;
    assert_eq!(spread(&client, 20).await, HashMap::from([(1, 10), (2, 10)]));
    let info = client.channel().info();
    assert!(
        info.replicas.iter().all(|r| r
            .reason
            .as_deref()
            .is_some_and(|why| why.contains("etcd at 127.0.0.1"))),
        "{info:#?}"
    );

    // A third registers: it takes calls at once, not in 30 s.
    let three = replica(3).await;
    let registered = Instant::now();
    let _three_listed = etcd.register("inventory", [url(&three)]).await.unwrap();
    until_answering(&client, 3, false).await;
    let took = registered.elapsed();
    println!("figure: a replica registered in etcd took its first call {took:?} later");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // The second is withdrawn while it still runs: it stops getting calls.
    let withdrawn = Instant::now();
    two_listed.revoke().await.unwrap();
    until_answering(&client, 2, true).await;
    println!(
        "figure: a replica withdrawn from etcd stopped getting calls {:?} later",
        withdrawn.elapsed()
    );
    assert!(withdrawn.elapsed() < Duration::from_secs(2));
    assert_eq!(client.channel().replicas().len(), 2);
    for server in [one, two, three] {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_graceful_shutdown_withdraws_at_once_and_a_dead_server_expires_with_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let Some(etcd_process) = EtcdProcess::start(dir.path()) else {
        return;
    };
    let etcd = etcd_process.etcd().lease_ttl(Duration::from_secs(2));
    let count = |etcd: Etcd| async move {
        etcd.resolve("inventory")
            .await
            .unwrap()
            .map_or(0, |replicas| replicas.len())
    };

    let mut graceful = replica(1).await;
    let listed = etcd.register("inventory", [url(&graceful)]).await.unwrap();
    graceful.withdraw_on_shutdown(listed);
    let dead = replica(2).await;
    let dead_listed = etcd.register("inventory", [url(&dead)]).await.unwrap();
    assert_eq!(count(etcd.clone()).await, 2);
    // Its lease is kept alive past its TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(etcd.clone()).await, 2);

    graceful.shutdown().await;
    assert_eq!(
        count(etcd.clone()).await,
        1,
        "a graceful shutdown withdraws the record before it returns"
    );

    // As if its process died: no keep-alive, no revoke.
    let died = Instant::now();
    drop(dead_listed);
    while count(etcd.clone()).await == 1 {
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "the record outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "figure: a registration with no keep-alive left etcd {:?} later (lease TTL 2 s)",
        died.elapsed()
    );
    assert!(died.elapsed() >= Duration::from_secs(1));
    dead.shutdown().await;
}

#[tokio::test]
async fn a_lease_etcd_lost_is_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some(etcd_process) = EtcdProcess::start(dir.path()) else {
        return;
    };
    let etcd = etcd_process.etcd().lease_ttl(Duration::from_secs(2));
    let server = replica(1).await;
    let listed = etcd.register("inventory", [url(&server)]).await.unwrap();
    let first = listed.lease();
    // Revoked behind its back (an operator, or etcd restored from an
    // older snapshot): the key goes, and comes back under a new lease.
    raw(
        etcd_process.client,
        "/v3/lease/revoke",
        &format!(r#"{{"ID":"{first}"}}"#),
    )
    .expect("revoke");
    // The revoke took the key with it; the keeper's next renewal finds the
    // lease gone and registers again.
    let start = Instant::now();
    while etcd.resolve("inventory").await.unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never registered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(listed.lease(), first);
    println!(
        "figure: a lost lease was replaced {:?} later (lease TTL 2 s, renewed every 667 ms)",
        start.elapsed()
    );
    listed.revoke().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn records_that_are_not_replicas_are_skipped_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let Some(etcd_process) = EtcdProcess::start(dir.path()) else {
        return;
    };
    let etcd = etcd_process.etcd();
    let server = replica(1).await;
    let _listed = etcd.register("inventory", [url(&server)]).await.unwrap();
    // Written by hand: "/switchyard/services/inventory/bad" = "tcp://h:1"
    // (not JSON), "…/shm" lists an address nothing dials.
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    for (key, value) in [
        ("bad", "tcp://h:1"),
        ("shm", r#"{"addresses":["shm:///x"]}"#),
    ] {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(&format!("/switchyard/services/inventory/{key}")),
            b64(value)
        );
        raw(etcd_process.client, "/v3/kv/put", &body).expect("put");
    }
    let client = channel(etcd.clone(), dir.path()).await;
    assert_eq!(spread(&client, 5).await, HashMap::from([(1, 5)]));
    let skipped = client.channel().info().skipped;
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0]
            .starts_with("etcd key /switchyard/services/inventory/bad: its value is not JSON"),
        "{skipped:?}"
    );
    assert!(skipped[1].contains("shm"), "{skipped:?}");
    let table = switchyard::debug::table::connections_table(&switchyard::debug::snapshot());
    assert!(
        table.contains("skipped: etcd key /switchyard/services/inventory/bad"),
        "{table}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn etcd_unreachable_is_a_clear_error_at_start_and_costs_nothing_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here.
    let nowhere = Etcd::new(&format!("http://127.0.0.1:{}", free_port())).unwrap();
    let err = Channel::builder()
        .discovery(nowhere.clone())
        .runtime_dir(dir.path())
        .connect("inventory")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        err.message().contains("is unreachable") && err.message().contains("is etcd running"),
        "{err}"
    );
    let server = replica(1).await;
    let err = nowhere
        .register("inventory", [url(&server)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let err = nowhere
        .register("inventory", ["not a url"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let Some(etcd_process) = EtcdProcess::start(dir.path()) else {
        server.shutdown().await;
        return;
    };
    let etcd = etcd_process.etcd();
    let _listed = etcd.register("inventory", [url(&server)]).await.unwrap();
    let channel = Channel::builder()
        .discovery(etcd)
        .runtime_dir(dir.path())
        .resolve_interval(Duration::from_millis(100))
        .connect("inventory")
        .await
        .unwrap();
    let client = WhichClient::new(channel);
    assert_eq!(client.which().await.unwrap(), 1);
    drop(etcd_process);
    let down = Instant::now();
    while client.channel().info().discovery_error.is_none() {
        assert!(down.elapsed() < Duration::from_secs(10), "never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = client.channel().info();
    let error = info.discovery_error.unwrap();
    assert!(error.contains("is unreachable"), "{error}");
    assert!(
        info.changes
            .iter()
            .any(|c| c.contains("keeping the 1 replica(s) known")),
        "{:?}",
        info.changes
    );
    for _ in 0..10 {
        assert_eq!(client.which().await.unwrap(), 1, "etcd down costs no call");
    }
    server.shutdown().await;
}
