//! A QUIC listener's defences against floods of connection attempts
//! (reliability.md, hostile peers): an address that has not been validated
//! is sent only a Retry, handshakes beyond the cap are ignored and their
//! clients get in once slots free, and abandoned handshakes are dropped
//! after the handshake timeout. What a Retry costs a first connection is
//! printed, not asserted (speed is for benchmarks).

#![cfg(feature = "quic")]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard::transport::Listener;
use switchyard::transport::quic::{
    self, AddressValidation, ClientTls, Fingerprint, QuicConfig, QuicLink, QuicListener,
};
use tokio::net::UdpSocket;

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("did not finish in time (hang?)")
}

async fn listener(config: &QuicConfig) -> QuicListener {
    let identity = quic::Identity::self_signed(&["localhost"]).expect("an identity");
    QuicListener::bind_with("127.0.0.1:0", &identity, config)
        .await
        .expect("bind")
}

/// Runs the listener's accept loop for `time`; the listener back, with the
/// links it accepted.
async fn serve_for(mut listener: QuicListener, time: Duration) -> (QuicListener, Vec<QuicLink>) {
    let mut links = Vec::new();
    let until = tokio::time::Instant::now() + time;
    loop {
        tokio::select! {
            link = listener.accept() => links.push(link.expect("accept")),
            () = tokio::time::sleep_until(until) => return (listener, links),
        }
    }
}

/// `count` distinct client Initials for the listener with this `pin`, as a
/// quinn client sends them, caught on a socket that never answers.
async fn capture_initials(pin: Fingerprint, count: usize) -> Vec<Vec<u8>> {
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = sink.local_addr().unwrap();
    let config =
        quic::quinn_client_config(&ClientTls::pinned(pin), &QuicConfig::default()).unwrap();
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let attempts: Vec<_> = (0..count)
        .map(|_| {
            endpoint
                .connect_with(config.clone(), to, "localhost")
                .unwrap()
        })
        .collect();
    let mut seen = HashSet::new();
    let mut initials = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while initials.len() < count {
        let n = tokio::time::timeout(Duration::from_secs(5), sink.recv(&mut buf))
            .await
            .expect("the client's Initials")
            .unwrap();
        let datagram = &buf[..n];
        if n >= 1200 && datagram[0] & 0xf0 == 0xc0 {
            let len = usize::from(datagram[5]);
            if seen.insert(datagram[6..6 + len].to_vec()) {
                initials.push(datagram.to_vec());
            }
        }
    }
    drop(attempts);
    endpoint.close(0u32.into(), b"");
    initials
}

/// Sends `initials` to `to` from one socket that never answers; the
/// datagrams that came back within `wait`.
async fn replay(initials: &[Vec<u8>], to: SocketAddr, wait: Duration) -> Vec<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for initial in initials {
        socket.send_to(initial, to).await.unwrap();
    }
    let mut back = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let until = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
        back.push(buf[..n].to_vec());
    }
    back
}

/// Settings that let every attempt start a handshake at once (no Retry),
/// and drop a silent one after 2 s.
fn without_retry() -> QuicConfig {
    let mut config = QuicConfig::default();
    config.address_validation = AddressValidation::Never;
    config.handshake_timeout = Duration::from_secs(2);
    config
}

/// A listener with `config` that has seen `count` clients at one address
/// send their Initial and never answer, served for 400 ms: the listener,
/// its address and pin, and the datagrams that came back.
async fn after_silent_attempts(
    config: &QuicConfig,
    count: usize,
) -> (QuicListener, SocketAddr, Fingerprint, Vec<Vec<u8>>) {
    let listener = listener(config).await;
    let addr = listener.local_addr();
    let pin = listener.fingerprint();
    let initials = capture_initials(pin, count).await;
    let serving = tokio::spawn(serve_for(listener, Duration::from_millis(400)));
    let back = replay(&initials, addr, Duration::from_millis(300)).await;
    let (listener, _) = serving.await.unwrap();
    (listener, addr, pin, back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unvalidated_address_is_sent_only_a_retry() {
    bounded(async {
        let listener = listener(&QuicConfig::default()).await;
        let addr = listener.local_addr();
        let initials = capture_initials(listener.fingerprint(), 20).await;
        let serving = tokio::spawn(serve_for(listener, Duration::from_secs(2)));
        let back = replay(&initials, addr, Duration::from_millis(1500)).await;
        let sent: usize = initials.iter().map(Vec::len).sum();
        let received: usize = back.iter().map(Vec::len).sum();
        eprintln!(
            "{} Initials ({sent} bytes) got {} datagrams ({received} bytes) back: {:.3}x",
            initials.len(),
            back.len(),
            received as f64 / sent as f64
        );
        assert_eq!(back.len(), initials.len(), "one Retry for each Initial");
        for datagram in &back {
            // Long header, fixed bit, type Retry.
            assert_eq!(datagram[0] & 0xf0, 0xf0, "not a Retry: {datagram:02x?}");
        }
        assert!(received * 10 <= sent * 2, "{received} bytes for {sent}");
        let (listener, _) = serving.await.unwrap();
        let counts = listener.attempt_counts();
        assert_eq!(counts.retried, 20, "{counts:?}");
        assert_eq!(counts.started, 0, "{counts:?}");
        assert_eq!(listener.handshakes_under_way(), 0);
        // A genuine client answers the Retry and connects.
        let pin = listener.fingerprint();
        let serving = tokio::spawn(serve_for(listener, Duration::from_secs(3)));
        let link = quic::connect(&addr.to_string(), &pin)
            .await
            .expect("connect");
        let (listener, links) = serving.await.unwrap();
        assert_eq!(links.len(), 1);
        let counts = listener.attempt_counts();
        assert_eq!((counts.retried, counts.started), (21, 1), "{counts:?}");
        drop(link);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_beyond_the_cap_wait_and_abandoned_ones_are_dropped() {
    bounded(async {
        let mut config = without_retry();
        config.max_handshakes = 4;
        // Six clients that never answer: four handshakes, two ignored.
        let (listener, addr, pin, back) = after_silent_attempts(&config, 6).await;
        let counts = listener.attempt_counts();
        assert_eq!((counts.started, counts.ignored), (4, 2), "{counts:?}");
        assert_eq!(listener.handshakes_under_way(), 4);
        // Which attempts were answered: by the destination connection ID of
        // the long-header packets that came back.
        let answered: HashSet<_> = back
            .iter()
            .filter(|d| d.len() > 6 && d[0] & 0x80 != 0)
            .filter_map(|d| d.get(6..6 + usize::from(d[5])))
            .collect();
        assert_eq!(answered.len(), 4, "only the four handshakes are answered");

        // A genuine client now waits (its Initial is ignored) until the
        // abandoned handshakes time out, then gets in by sending it again.
        let serving = tokio::spawn(serve_for(listener, Duration::from_secs(6)));
        let started = Instant::now();
        let link = quic::connect(&addr.to_string(), &pin)
            .await
            .expect("connect");
        let waited = started.elapsed();
        let (listener, links) = serving.await.unwrap();
        let counts = listener.attempt_counts();
        eprintln!("the client beyond the cap connected after {waited:?}; {counts:?}");
        assert_eq!(links.len(), 1);
        assert_eq!(counts.timed_out, 4, "{counts:?}");
        assert!(
            counts.ignored >= 3,
            "the client was let in at once: {counts:?}"
        );
        assert_eq!(counts.started, 5, "{counts:?}");
        assert_eq!(listener.handshakes_under_way(), 0);
        drop(link);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_busy_a_retry_is_asked_for_only_above_the_threshold() {
    bounded(async {
        let mut config = QuicConfig::default();
        config.address_validation = AddressValidation::WhenBusy { handshakes: 2 };
        config.handshake_timeout = Duration::from_secs(2);
        let listener = listener(&config).await;
        let addr = listener.local_addr();
        let initials = capture_initials(listener.fingerprint(), 6).await;
        let serving = tokio::spawn(serve_for(listener, Duration::from_millis(400)));
        // Three handshakes start (0, 1 and 2 under way are not above 2);
        // the other three are answered with a Retry.
        let back = replay(&initials, addr, Duration::from_millis(300)).await;
        let (listener, _) = serving.await.unwrap();
        let counts = listener.attempt_counts();
        assert_eq!((counts.started, counts.retried), (3, 3), "{counts:?}");
        let retries = back.iter().filter(|d| d[0] & 0xf0 == 0xf0).count();
        assert_eq!(retries, 3, "three Retries came back");
        // Once the silent handshakes have timed out, a client connects
        // without a Retry.
        let pin = listener.fingerprint();
        let serving = tokio::spawn(serve_for(listener, Duration::from_secs(4)));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let link = quic::connect(&addr.to_string(), &pin)
            .await
            .expect("connect");
        let (listener, links) = serving.await.unwrap();
        assert_eq!(links.len(), 1);
        let counts = listener.attempt_counts();
        assert_eq!(counts.timed_out, 3, "{counts:?}");
        assert_eq!((counts.started, counts.retried), (4, 3), "{counts:?}");
        drop(link);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_retry_costs_a_first_connection() {
    bounded(async {
        let mut report = Vec::new();
        for validation in [AddressValidation::Never, AddressValidation::Always] {
            let mut config = QuicConfig::default();
            config.address_validation = validation;
            let mut listener = listener(&config).await;
            let addr = listener.local_addr().to_string();
            let pin = listener.fingerprint();
            let mut times = Vec::new();
            for _ in 0..30 {
                let started = Instant::now();
                let (client, server) = tokio::join!(quic::connect(&addr, &pin), listener.accept());
                times.push(started.elapsed());
                drop((client.expect("connect"), server.expect("accept")));
            }
            times.sort();
            report.push(format!(
                "{validation:?}: median {:?}, p90 {:?}",
                times[times.len() / 2],
                times[times.len() * 9 / 10]
            ));
            let counts = listener.attempt_counts();
            let retried = if validation == AddressValidation::Always {
                30
            } else {
                0
            };
            assert_eq!(counts.retried, retried, "{counts:?}");
        }
        eprintln!("a first connection over loopback: {}", report.join("; "));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_share_of_the_handshakes() {
    bounded(async {
        let mut config = without_retry();
        config.max_handshakes_per_address = 2;
        // Five silent clients at one address: two handshakes, three ignored
        // though the listener has room for 256.
        let (listener, addr, pin, _) = after_silent_attempts(&config, 5).await;
        let counts = listener.attempt_counts();
        assert_eq!(
            (counts.started, counts.ignored_per_address, counts.ignored),
            (2, 3, 0),
            "{counts:?}"
        );
        assert_eq!(listener.handshakes_under_way(), 2);
        // Once they time out, the address has its share again: a genuine
        // client from it connects.
        let serving = tokio::spawn(serve_for(listener, Duration::from_secs(5)));
        let link = quic::connect(&addr.to_string(), &pin)
            .await
            .expect("connect");
        let (listener, links) = serving.await.unwrap();
        assert_eq!(links.len(), 1);
        let counts = listener.attempt_counts();
        assert_eq!((counts.timed_out, counts.started), (2, 3), "{counts:?}");
        assert_eq!(listener.handshakes_under_way(), 0);
        drop(link);
    })
    .await;
}
