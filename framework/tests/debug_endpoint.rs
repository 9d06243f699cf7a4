//! The debug endpoint over real HTTP: the JSON model field by field, the
//! Prometheus text through a real parser, the HTML page in headless
//! Chromium, and a server that survives hostile input and answers only on
//! loopback by default.
//!
//! The recorder is process-wide and tests run in parallel, so the tests
//! that open connections hold [`FIXTURE_LOCK`] and pick out their own
//! connections by id (ids only grow).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard::debug::{ConnectionInfo, DebugEndpoint, MethodStats, Snapshot};
use switchyard::{Channel, Code, Server, ServerHandle, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A small service to call.
#[switchyard::service]
pub trait DebugProbe {
    /// Returns its argument.
    async fn echo(&self, text: String) -> String;
    /// Sleeps `ms` milliseconds, then returns them.
    async fn slow(&self, ms: u64) -> u64;
}

struct Probe;

impl DebugProbe for Probe {
    async fn echo(&self, text: String) -> String {
        text
    }

    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// Serializes the tests that open connections.
static FIXTURE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every test's overall bound.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A raw HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Sends `request` as is and reads until the server closes.
async fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    timeout(Duration::from_secs(15), async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        Ok(out)
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

fn parse_response(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes);
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Response {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let bytes = raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
    parse_response(&bytes)
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path).await
}

async fn get_snapshot(addr: SocketAddr) -> Snapshot {
    let response = get(addr, "/debug/switchyard.json").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("application/json")
    );
    serde_json::from_slice(&response.body).expect("the JSON parses into a Snapshot")
}

/// A server with unix and tcp listeners, one client over each, some calls
/// (one of them failing), and the debug endpoint.
struct Fixture {
    _dir: tempfile::TempDir,
    server: ServerHandle,
    unix: Channel,
    tcp: Channel,
    endpoint: SocketAddr,
    /// Largest connection id before the fixture connected.
    ids_before: u64,
    /// Method counters before the fixture's calls.
    methods_before: Vec<MethodStats>,
}

const ECHO_UNIX: u64 = 3;
const ECHO_TCP: u64 = 2;

async fn fixture() -> Fixture {
    let before = switchyard::debug::snapshot();
    let ids_before = before.connections.iter().map(|c| c.id).max().unwrap_or(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .add_service(DebugProbeServer::new(Probe))
        .publish("probe")
        .runtime_dir(dir.path())
        .tcp("127.0.0.1:0")
        .debug_addr("127.0.0.1:0")
        .start()
        .await
        .expect("server starts");
    // The builder started a process-wide endpoint for "127.0.0.1:0"; asking
    // for the same value again returns it.
    let endpoint = DebugEndpoint::for_process("127.0.0.1:0").expect("endpoint is up");
    let unix = Channel::builder()
        .runtime_dir(dir.path())
        .prefer(Transport::Unix)
        .connect("probe")
        .await
        .expect("connects over unix");
    let tcp = Channel::builder()
        .runtime_dir(dir.path())
        .prefer(Transport::Tcp)
        .connect("probe")
        .await
        .expect("connects over tcp");
    assert_eq!(unix.selection().transport, Transport::Unix);
    assert_eq!(tcp.selection().transport, Transport::Tcp);
    let on_unix = DebugProbeClient::new(unix.clone());
    let on_tcp = DebugProbeClient::new(tcp.clone());
    for i in 0..ECHO_UNIX {
        assert_eq!(
            on_unix.echo(format!("u{i}")).await.unwrap(),
            format!("u{i}")
        );
    }
    for i in 0..ECHO_TCP {
        assert_eq!(on_tcp.echo(format!("t{i}")).await.unwrap(), format!("t{i}"));
    }
    let late = on_unix
        .with_timeout(Duration::from_millis(100))
        .slow(30_000)
        .await
        .expect_err("the deadline passes first");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late}");
    Fixture {
        _dir: dir,
        server,
        unix,
        tcp,
        endpoint,
        ids_before,
        methods_before: before.methods,
    }
}

impl Fixture {
    fn mine<'a>(&self, snapshot: &'a Snapshot) -> Vec<&'a ConnectionInfo> {
        snapshot
            .connections
            .iter()
            .filter(|c| c.id > self.ids_before)
            .collect()
    }

    fn unix_url(&self) -> &str {
        self.server
            .endpoints()
            .iter()
            .find(|u| u.starts_with("unix://"))
            .expect("a unix listener")
    }

    fn tcp_url(&self) -> &str {
        self.server
            .endpoints()
            .iter()
            .find(|u| u.starts_with("tcp://"))
            .expect("a tcp listener")
    }

    /// Polls the endpoint until the server side has counted the failed
    /// call too (it finishes at its deadline or on the client's cancel).
    async fn settled_snapshot(&self) -> Snapshot {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let snapshot = get_snapshot(self.endpoint).await;
            let settled = self
                .mine(&snapshot)
                .iter()
                .filter(|c| c.role == "server" && c.transport == "unix")
                .any(|c| c.calls_failed == 1);
            if settled || tokio::time::Instant::now() > deadline {
                return snapshot;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn method_delta(
        &self,
        now: &Snapshot,
        method: &str,
        transport: &str,
        role: &str,
    ) -> MethodStats {
        let find = |list: &[MethodStats]| {
            list.iter()
                .find(|m| {
                    m.service == DEBUG_PROBE_DESCRIPTOR.name
                        && m.method == method
                        && m.transport == transport
                        && m.role == role
                })
                .cloned()
        };
        let after = find(&now.methods)
            .unwrap_or_else(|| panic!("no stats for {method} over {transport} as {role}"));
        let before = find(&self.methods_before).unwrap_or_default();
        let mut errors = BTreeMap::new();
        for (code, n) in &after.errors {
            let was = before.errors.get(code).copied().unwrap_or(0);
            if *n > was {
                errors.insert(code.clone(), n - was);
            }
        }
        MethodStats {
            calls: after.calls - before.calls,
            errors,
            bytes_sent: after.bytes_sent - before.bytes_sent,
            bytes_received: after.bytes_received - before.bytes_received,
            ..after
        }
    }
}

fn one<'a>(conns: &[&'a ConnectionInfo], transport: &str, role: &str) -> &'a ConnectionInfo {
    let found: Vec<&ConnectionInfo> = conns
        .iter()
        .copied()
        .filter(|c| c.transport == transport && c.role == role)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {role} connection over {transport} expected, got {found:#?}"
    );
    found[0]
}

#[tokio::test]
async fn json_shows_connections_on_two_transports_field_by_field() {
    let _serial = FIXTURE_LOCK.lock().await;
    timeout(TEST_TIMEOUT, async {
        let f = fixture().await;
        let s = f.settled_snapshot().await;
        let me = std::process::id();

        assert_eq!(s.schema, switchyard::debug::SCHEMA_VERSION);
        assert!(s.taken_unix_ms > 1_600_000_000_000);
        assert_eq!(s.process.pid, me);
        assert!(!s.process.name.is_empty());
        assert!(!s.process.hostname.is_empty());
        assert_eq!(s.process.version, env!("CARGO_PKG_VERSION"));
        assert!(s.process.started_unix_ms <= s.taken_unix_ms);
        if cfg!(target_os = "linux") {
            assert!(!s.process.boot_id.is_empty());
            assert!(s.process.ipc_ns != 0 && s.process.net_ns != 0);
        }

        let service = s
            .services
            .iter()
            .find(|svc| svc.name == DEBUG_PROBE_DESCRIPTOR.name)
            .expect("our service is listed");
        let names: Vec<&str> = service.methods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["echo", "slow"]);
        for (listed, declared) in service.methods.iter().zip(DEBUG_PROBE_DESCRIPTOR.methods) {
            assert_eq!(listed.id, declared.id);
            assert_eq!(listed.signature, declared.signature);
            assert!(!listed.oneway);
        }

        for url in [f.unix_url(), f.tcp_url()] {
            let listener = s
                .listeners
                .iter()
                .find(|l| l.url == url)
                .unwrap_or_else(|| panic!("{url} not among {:?}", s.listeners));
            assert_eq!(listener.transport, &url[..url.find("://").unwrap()]);
        }

        let mine = f.mine(&s);
        assert_eq!(mine.len(), 4, "{mine:#?}");
        let unix_client = one(&mine, "unix", "client");
        let unix_server = one(&mine, "unix", "server");
        let tcp_client = one(&mine, "tcp", "client");
        let tcp_server = one(&mine, "tcp", "server");

        // What the channels say is what the endpoint shows.
        for (conn, channel) in [(unix_client, &f.unix), (tcp_client, &f.tcp)] {
            let selection = channel.selection();
            assert_eq!(conn.transport, selection.transport.as_str());
            assert_eq!(conn.reason, selection.reason);
            let rejected: Vec<(String, String)> = conn
                .rejected
                .iter()
                .map(|r| (r.transport.clone(), r.why.clone()))
                .collect();
            let expected: Vec<(String, String)> = selection
                .rejected
                .iter()
                .map(|(t, why)| (t.to_string(), why.to_string()))
                .collect();
            assert_eq!(rejected, expected);
        }
        assert!(
            unix_client
                .rejected
                .iter()
                .any(|r| r.transport == "tcp" && !r.why.is_empty()),
            "the unix client says why not tcp: {:?}",
            unix_client.rejected
        );
        assert_eq!(unix_client.peer.addr, f.unix_url());
        assert_eq!(tcp_client.peer.addr, f.tcp_url());

        for conn in &mine {
            assert_eq!(conn.state, "open", "{conn:#?}");
            assert!(conn.closed_unix_ms.is_none());
            assert!(!conn.reason.is_empty(), "{conn:#?}");
            assert!(conn.opened_unix_ms >= s.process.started_unix_ms);
            assert!(conn.opened_unix_ms <= s.taken_unix_ms);
            assert!(conn.bytes_sent > 0 && conn.bytes_received > 0, "{conn:#?}");
            assert_eq!(conn.peer.pid, Some(me), "{conn:#?}");
            assert!(!conn.peer.process.is_empty());
            assert_eq!(conn.peer.hostname, s.process.hostname);
            assert!(
                conn.peer.locality.contains("same host"),
                "{:?}",
                conn.peer.locality
            );
            let first = if conn.role == "client" {
                "connected"
            } else {
                "accepted"
            };
            assert!(
                conn.events
                    .iter()
                    .any(|e| e.kind == first && e.at_unix_ms > 0),
                "{first} in {:?}",
                conn.events
            );
            assert!(conn.events.len() <= 64, "the event log is bounded");
        }
        // Unix peers are vouched for by the kernel.
        for conn in [unix_client, unix_server] {
            assert_eq!(conn.peer.uid, Some(s.process.uid));
        }

        let unix_calls = ECHO_UNIX + 1;
        for conn in [unix_client, unix_server] {
            assert_eq!(
                (conn.calls_started, conn.calls_succeeded, conn.calls_failed),
                (unix_calls, ECHO_UNIX, 1),
                "{conn:#?}"
            );
            assert_eq!(conn.latency.count, unix_calls);
            assert!(conn.latency.p50_us > 0.0 && conn.latency.p99_us >= conn.latency.p50_us);
            // The failed call waited for its 100 ms deadline.
            assert!(conn.latency.p99_us >= 50_000.0, "{:?}", conn.latency);
        }
        for conn in [tcp_client, tcp_server] {
            assert_eq!(
                (conn.calls_started, conn.calls_succeeded, conn.calls_failed),
                (ECHO_TCP, ECHO_TCP, 0),
                "{conn:#?}"
            );
            assert_eq!(conn.latency.count, ECHO_TCP);
        }
        // Each side's bytes are the other side's, call for call (both
        // count whole frames, hello included on the connection).
        assert_eq!(tcp_client.bytes_sent, tcp_server.bytes_received);
        assert_eq!(tcp_client.bytes_received, tcp_server.bytes_sent);

        // Method statistics, as deltas over this test.
        for role in ["client", "server"] {
            let echo_unix = f.method_delta(&s, "echo", "unix", role);
            assert_eq!(echo_unix.calls, ECHO_UNIX, "{echo_unix:#?}");
            assert!(echo_unix.errors.is_empty(), "{echo_unix:#?}");
            assert!(echo_unix.bytes_sent > 0 && echo_unix.bytes_received > 0);
            assert!(echo_unix.latency.count >= ECHO_UNIX);
            assert_eq!(
                echo_unix.histogram.last().map(|b| b.1),
                Some(echo_unix.latency.count)
            );
            let echo_tcp = f.method_delta(&s, "echo", "tcp", role);
            assert_eq!(echo_tcp.calls, ECHO_TCP, "{echo_tcp:#?}");
            let slow = f.method_delta(&s, "slow", "unix", role);
            assert_eq!(slow.calls, 1, "{slow:#?}");
            assert_eq!(slow.errors.values().sum::<u64>(), 1, "{slow:#?}");
        }
        let slow_client = f.method_delta(&s, "slow", "unix", "client");
        assert_eq!(
            slow_client.errors.keys().collect::<Vec<_>>(),
            ["DEADLINE_EXCEEDED"]
        );
        let slow_server = f.method_delta(&s, "slow", "unix", "server");
        assert!(
            slow_server
                .errors
                .keys()
                .all(|c| c == "DEADLINE_EXCEEDED" || c == "CANCELLED"),
            "{slow_server:#?}"
        );

        // The JSON uses the documented field names.
        let raw: serde_json::Value =
            serde_json::from_slice(&get(f.endpoint, "/debug/switchyard.json").await.body).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&raw),
            [
                "channels",
                "compression",
                "connections",
                "layers",
                "listeners",
                "methods",
                "mmap",
                "process",
                "schema",
                "services",
                "taken_unix_ms"
            ]
        );
        let conn = raw["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == unix_client.id)
            .unwrap();
        assert_eq!(
            keys(conn),
            [
                "bytes_received",
                "bytes_sent",
                "calls_failed",
                "calls_started",
                "calls_succeeded",
                "closed_unix_ms",
                "compression",
                "events",
                "id",
                "latency",
                "mmap",
                "opened_unix_ms",
                "peer",
                "reason",
                "rejected",
                "role",
                "state",
                "streams",
                "transport"
            ]
        );
        assert_eq!(conn["transport"], "unix");
        assert_eq!(keys(&conn["compression"]), ["moved", "on", "reason"]);
        assert_eq!(conn["compression"]["on"], false);
        assert_eq!(
            keys(&conn["compression"]["moved"]),
            [
                "incompressible",
                "payloads_received",
                "payloads_sent",
                "raw_bytes_received",
                "raw_bytes_sent",
                "wire_bytes_received",
                "wire_bytes_sent"
            ]
        );
        assert_eq!(
            keys(&conn["streams"]),
            ["messages_received", "messages_sent", "open", "stalled"]
        );
        let method = &raw["methods"].as_array().unwrap()[0];
        assert!(
            method["stream_messages_sent"].is_u64() && method["stream_messages_received"].is_u64(),
            "{method}"
        );
        assert_eq!(
            keys(&conn["peer"]),
            ["addr", "hostname", "locality", "pid", "process", "uid"]
        );
        // The fixture's channels to "probe", each with its one replica.
        let channel = raw["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["target"] == "probe")
            .expect("the fixture's channel is listed");
        assert_eq!(
            keys(channel),
            [
                "balance",
                "changes",
                "discovery_error",
                "hedges",
                "replicas",
                "retries",
                "retries_throttled",
                "skipped",
                "source",
                "target"
            ]
        );
        assert_eq!(channel["balance"], "pick_first");
        assert_eq!(
            keys(&channel["replicas"][0]),
            [
                "addresses",
                "calls_started",
                "connection",
                "ejected_for_ms",
                "ejections",
                "in_flight",
                "key",
                "last_error",
                "latency_ewma_us",
                "not_serving",
                "reason",
                "state",
                "transport"
            ]
        );
        drop(f.server);
    })
    .await
    .expect("test finishes in time");
}

/// A sample's labels, as a sorted map.
fn labels(sample: &prometheus_parse::Sample) -> BTreeMap<String, String> {
    sample
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn metrics_parse_with_a_prometheus_parser() {
    let _serial = FIXTURE_LOCK.lock().await;
    timeout(TEST_TIMEOUT, async {
        let f = fixture().await;
        let s = f.settled_snapshot().await;
        let response = get(f.endpoint, "/metrics").await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = response.text();

        // Every line is a comment or a sample the parser understands.
        for line in text.lines() {
            match prometheus_parse::LineInfo::parse(line) {
                prometheus_parse::LineInfo::Ignored => panic!("unparsable line {line:?}"),
                prometheus_parse::LineInfo::Empty => panic!("empty line in exposition"),
                _ => {}
            }
        }
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("parses");
        for family in [
            "switchyard_calls_total",
            "switchyard_call_errors_total",
            "switchyard_call_duration_seconds",
            "switchyard_sent_bytes_total",
            "switchyard_received_bytes_total",
            "switchyard_connections",
        ] {
            assert!(scrape.docs.contains_key(family), "no HELP for {family}");
        }

        // The counters equal the JSON model's, series by series (the model
        // is cumulative over the process; so is /metrics).
        let later = get_snapshot(f.endpoint).await;
        let ours = |m: &&MethodStats| m.service == DEBUG_PROBE_DESCRIPTOR.name;
        let mut checked = 0;
        for m in s.methods.iter().filter(ours) {
            let series: BTreeMap<String, String> = [
                ("service", &m.service),
                ("method", &m.method),
                ("transport", &m.transport),
                ("role", &m.role),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
            if m.calls == 0 && m.bytes_sent == 0 && m.bytes_received == 0 {
                // Nothing happened there: no series at all.
                assert!(
                    !scrape.samples.iter().any(|x| labels(x) == series),
                    "an idle method exports series: {series:?}"
                );
                continue;
            }
            let find = |metric: &str| {
                scrape
                    .samples
                    .iter()
                    .find(|x| x.metric == metric && labels(x) == series)
                    .unwrap_or_else(|| panic!("no {metric} for {series:?}"))
            };
            let counter = |metric: &str| match find(metric).value {
                prometheus_parse::Value::Counter(v) => v,
                ref other => panic!("{metric} is {other:?}"),
            };
            // Nothing else calls our service while the lock is held.
            let now = later.methods.iter().find(|x| {
                x.service == m.service
                    && x.method == m.method
                    && x.transport == m.transport
                    && x.role == m.role
            });
            assert_eq!(now, Some(m), "counters moved while the test held the lock");
            assert_eq!(counter("switchyard_calls_total"), m.calls as f64);
            assert_eq!(counter("switchyard_sent_bytes_total"), m.bytes_sent as f64);
            assert_eq!(counter("switchyard_received_bytes_total"), m.bytes_received as f64);
            match &find("switchyard_call_duration_seconds").value {
                prometheus_parse::Value::Histogram(buckets) => {
                    assert_eq!(buckets.len(), m.histogram.len() + 1);
                    assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than
                        && w[0].count <= w[1].count));
                    let inf = buckets.last().unwrap();
                    assert!(inf.less_than.is_infinite());
                    assert_eq!(inf.count, m.latency.count as f64);
                    for (parsed, (le, n)) in buckets.iter().zip(&m.histogram) {
                        assert!((parsed.less_than - le).abs() <= le * 1e-12);
                        assert_eq!(parsed.count, *n as f64);
                    }
                }
                other => panic!("the duration is not a histogram: {other:?}"),
            }
            let count = scrape
                .samples
                .iter()
                .find(|x| x.metric == "switchyard_call_duration_seconds_count" && labels(x) == series)
                .expect("_count");
            assert!(matches!(count.value, prometheus_parse::Value::Untyped(v) if v == m.latency.count as f64));
            for (code, n) in &m.errors {
                let mut with_code = series.clone();
                with_code.insert("code".into(), code.clone());
                let errors = scrape
                    .samples
                    .iter()
                    .find(|x| x.metric == "switchyard_call_errors_total" && labels(x) == with_code)
                    .unwrap_or_else(|| panic!("no errors for {with_code:?}"));
                assert_eq!(errors.value, prometheus_parse::Value::Counter(*n as f64));
            }
            checked += 1;
        }
        // echo and slow as client and server over unix, echo over tcp both sides.
        assert!(checked >= 6, "{checked} series checked");
        let deadline = scrape
            .samples
            .iter()
            .find(|x| {
                x.metric == "switchyard_call_errors_total"
                    && x.labels.get("service") == Some(DEBUG_PROBE_DESCRIPTOR.name)
                    && x.labels.get("method") == Some("slow")
                    && x.labels.get("role") == Some("client")
            })
            .expect("the failed call is counted");
        assert_eq!(deadline.labels.get("code"), Some("DEADLINE_EXCEEDED"));

        // Our four connections are in the gauges.
        for (transport, role) in [("unix", "client"), ("unix", "server"), ("tcp", "client"), ("tcp", "server")] {
            let gauge = scrape
                .samples
                .iter()
                .find(|x| {
                    x.metric == "switchyard_connections"
                        && x.labels.get("transport") == Some(transport)
                        && x.labels.get("role") == Some(role)
                        && x.labels.get("state") == Some("open")
                })
                .unwrap_or_else(|| panic!("no gauge for {transport} {role}"));
            assert!(matches!(gauge.value, prometheus_parse::Value::Gauge(v) if v >= 1.0));
        }

        // promtool, where installed, agrees that the exposition is valid.
        if let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let report = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            // Lint remarks (naming advice) exit 3; parse errors exit 1.
            assert_ne!(out.status.code(), Some(1), "promtool: {report}");
            println!("promtool check metrics: {report}");
        } else {
            println!("promtool not installed; the crate parser alone checked /metrics");
        }
        drop(f.server);
    })
    .await
    .expect("test finishes in time");
}

/// Undoes the entities Chromium writes in serialized text.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The value of `attr="..."` in a tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The text of the first `<td class="{class}">` cell in `row`.
fn cell<'a>(row: &'a str, class: &str) -> Option<&'a str> {
    let open = format!("<td class=\"{class}\">");
    let start = row.find(&open)? + open.len();
    let len = row[start..].find("</td>")?;
    Some(&row[start..start + len])
}

/// `(data-id, data-transport, reason text)` of every `tr.connection`.
fn connection_rows(dom: &str) -> Vec<(u64, String, String)> {
    let mut rows = Vec::new();
    for chunk in dom.split("<tr ").skip(1) {
        let Some(tag_end) = chunk.find('>') else {
            continue;
        };
        let tag = &chunk[..tag_end];
        let is_connection = attr(&format!(" {tag}"), "class")
            .is_some_and(|c| c.split(' ').any(|c| c == "connection"));
        if !is_connection {
            continue;
        }
        let tag = format!(" {tag}");
        let row = &chunk[..chunk.find("</tr>").unwrap_or(chunk.len())];
        rows.push((
            attr(&tag, "data-id")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            unescape(attr(&tag, "data-transport").unwrap_or_default()),
            unescape(cell(row, "reason").unwrap_or_default()),
        ));
    }
    rows
}

#[tokio::test]
async fn html_page_in_headless_chromium_has_a_row_per_connection() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(chromium) = chromium else {
        println!(
            "skipping: chromium not installed (Debian's `chromium` package; .ci/run installs it)"
        );
        return;
    };
    let _serial = FIXTURE_LOCK.lock().await;
    timeout(Duration::from_secs(120), async {
        let f = fixture().await;
        let before = f.settled_snapshot().await;

        // The page itself, as served.
        let page = get(f.endpoint, "/debug/switchyard").await;
        assert_eq!(page.status, 200);
        assert_eq!(
            page.header("content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        let html = page.text();
        assert!(!html.contains("<script"), "the page needs no JavaScript");
        assert!(
            html.contains("href=\"/debug/switchyard\""),
            "a refresh link"
        );

        let profile = tempfile::tempdir().unwrap();
        let url = format!("http://{}/debug/switchyard", f.endpoint);
        let Some(dom) = dump_dom(&chromium, profile.path(), &url).await else {
            return;
        };
        let after = get_snapshot(f.endpoint).await;
        let rows = connection_rows(&dom);
        assert!(dom.contains("switchyard"), "{dom}");

        // Each of our connections has its row, with its transport and why.
        for conn in f.mine(&before) {
            let row = rows
                .iter()
                .find(|r| r.0 == conn.id)
                .unwrap_or_else(|| panic!("no row for connection #{} in {rows:#?}", conn.id));
            assert_eq!(row.1, conn.transport);
            assert_eq!(row.2, conn.reason);
            assert!(!row.2.is_empty());
        }
        let transports: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.1.as_str()).collect();
        assert!(transports.contains("unix") && transports.contains("tcp"));
        // One row per connection: the browser saw a page taken between
        // these two snapshots; if no connection came or went meanwhile, the
        // count is exact.
        let ids = |s: &Snapshot| s.connections.iter().map(|c| c.id).collect::<Vec<_>>();
        if ids(&before) == ids(&after) {
            assert_eq!(rows.len(), before.connections.len(), "{rows:#?}");
        }
        println!("chromium found {} connection rows", rows.len());
        drop(f.server);
    })
    .await
    .expect("test finishes in time");
}

/// Runs Chromium headless on `url` and returns the DOM it built, or `None`
/// (with the reason printed) where Chromium cannot run here.
async fn dump_dom(chromium: &Path, profile: &Path, url: &str) -> Option<String> {
    let mut command = tokio::process::Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match timeout(Duration::from_secs(60), command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => {
            println!("skipping: chromium could not start: {err}");
            return None;
        }
        Err(_) => {
            // Dropping the future kills the process (kill_on_drop).
            println!("skipping: chromium did not finish within 60 s");
            return None;
        }
    };
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || !dom.contains("<html") {
        println!(
            "skipping: chromium cannot run here (exit {:?}): {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
        return None;
    }
    Some(dom)
}

#[tokio::test]
async fn bad_paths_and_methods_get_clear_answers() {
    timeout(TEST_TIMEOUT, async {
        let endpoint = DebugEndpoint::bind("127.0.0.1:0").await.unwrap();
        let addr = endpoint.local_addr();
        assert_eq!(endpoint.url(), format!("http://{addr}/debug/switchyard"));

        for path in [
            "/",
            "/nope",
            "/debug",
            "/debug/switchyard.jsonx",
            "/metrics/x",
            "/../../etc/passwd",
        ] {
            let response = get(addr, path).await;
            assert_eq!(response.status, 404, "{path}");
            let body = response.text();
            assert!(
                body.contains("/debug/switchyard.json") && body.contains("/metrics"),
                "{body}"
            );
            assert!(!body.contains("root:"), "{body}");
            assert_eq!(response.header("connection").as_deref(), Some("close"));
        }
        let post = request(addr, "POST", "/metrics").await;
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
        for method in ["PUT", "DELETE", "OPTIONS"] {
            assert_eq!(request(addr, method, "/debug/switchyard").await.status, 405);
        }

        // HEAD: the headers of GET, no body.
        let head = request(addr, "HEAD", "/debug/switchyard.json").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert!(
            head.header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap()
                > 0
        );

        // Query strings are ignored; the three pages have their types.
        for (path, ty) in [
            ("/debug/switchyard?refresh=1", "text/html; charset=utf-8"),
            ("/debug/switchyard.json?x", "application/json"),
            (
                "/metrics?name[]=x",
                "text/plain; version=0.0.4; charset=utf-8",
            ),
        ] {
            let response = get(addr, path).await;
            assert_eq!(response.status, 200, "{path}");
            assert_eq!(
                response.header("content-type").as_deref(),
                Some(ty),
                "{path}"
            );
            assert_eq!(
                response
                    .header("content-length")
                    .unwrap()
                    .parse::<usize>()
                    .unwrap(),
                response.body.len()
            );
        }

        // A request addressed to another host name (DNS rebinding) is refused.
        let rebound = parse_response(
            &raw(
                addr,
                b"GET /debug/switchyard.json HTTP/1.1\r\nHost: evil.example:80\r\n\r\n",
            )
            .await
            .unwrap(),
        );
        assert_eq!(rebound.status, 421);
        let localhost = parse_response(
            &raw(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap(),
        );
        assert_eq!(localhost.status, 200);
    })
    .await
    .expect("test finishes in time");
}

/// Deterministic noise.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as u8
        })
        .collect()
}

#[tokio::test]
async fn odd_input_never_takes_the_endpoint_down() {
    timeout(TEST_TIMEOUT, async {
        let endpoint = DebugEndpoint::bind("0").await.unwrap();
        let addr = endpoint.local_addr();

        // A client that sends half a request line and waits gets 408 after
        // the read timeout; run it alongside the rest.
        let stalled = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(b"GET /debug/swi").await?;
            let mut out = Vec::new();
            timeout(Duration::from_secs(15), stream.read_to_end(&mut out))
                .await
                .map_err(|_| std::io::Error::other("no answer to a stalled request"))??;
            Ok::<_, std::io::Error>(out)
        });

        // Random bytes: an error status or a closed connection, never a
        // crash.
        for seed in 0..8 {
            let mut bytes = noise(4096, seed);
            bytes.extend_from_slice(b"\r\n\r\n");
            if let Ok(out) = raw(addr, &bytes).await
                && !out.is_empty()
            {
                let status = parse_response(&out).status;
                assert!(status == 400 || status == 431, "{status}");
            }
        }
        let binary_request = raw(addr, &noise(300, 99)).await;
        assert!(binary_request.is_ok(), "{binary_request:?}");

        // A 100 KiB header line.
        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Long: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 100 * 1024));
        huge.extend_from_slice(b"\r\n\r\n");
        match raw(addr, &huge).await {
            Ok(out) => assert_eq!(parse_response(&out).status, 431),
            // The server may reset while we are still sending.
            Err(err) => println!("100 KiB header: connection ended with {err}"),
        }

        // A request cut mid-line, then closed: nothing to answer.
        let cut = timeout(Duration::from_secs(15), async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(b"GET /debug/switchy").await?;
            stream.shutdown().await?;
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        })
        .await
        .expect("the server closes")
        .unwrap();
        assert!(cut.is_empty(), "{:?}", String::from_utf8_lossy(&cut));

        // Non-UTF-8 path, bare newlines, odd targets.
        for (request, expected) in [
            (&b"GET /\xff\xfe/metrics HTTP/1.1\r\n\r\n"[..], 400),
            (b"GET /metrics HTTP/1.1\n\n", 200),
            (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404),
            (b"GET /metrics%00 HTTP/1.1\r\n\r\n", 404),
            (b"GET * HTTP/1.1\r\n\r\n", 400),
            (b"GET /metrics HTTP/9.9\r\n\r\n", 400),
            (b"GET /metrics\r\n\r\n", 400),
            (b"\r\n\r\n", 400),
            (b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n", 400),
            (
                b"GET http://127.0.0.1/debug/switchyard.json HTTP/1.1\r\n\r\n",
                200,
            ),
        ] {
            let out = raw(addr, request).await.unwrap();
            assert_eq!(
                parse_response(&out).status,
                expected,
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }

        // Many clients at once: some are served, the rest closed; all end.
        let mut clients = Vec::new();
        for i in 0..200u32 {
            clients.push(tokio::spawn(async move {
                let request: &[u8] = if i % 2 == 0 {
                    b"GET /metrics HTTP/1.1\r\n\r\n"
                } else {
                    b"GET /debug/switchyard HTTP/1.1\r\n\r\n"
                };
                raw(addr, request).await
            }));
        }
        let mut served = 0;
        for client in clients {
            if let Ok(Ok(out)) = client.await
                && !out.is_empty()
            {
                assert_eq!(parse_response(&out).status, 200);
                served += 1;
            }
        }
        assert!(served > 0);
        // Idle connections beyond the limit are closed at once, and the
        // endpoint still answers once they go away.
        let mut idle = Vec::new();
        for _ in 0..100 {
            if let Ok(stream) = TcpStream::connect(addr).await {
                idle.push(stream);
            }
        }
        drop(idle);

        let stalled = stalled
            .await
            .unwrap()
            .expect("the stalled client gets an answer");
        assert_eq!(parse_response(&stalled).status, 408);

        let after = get(addr, "/debug/switchyard.json").await;
        assert_eq!(after.status, 200);
        let _: Snapshot = serde_json::from_slice(&after.body).unwrap();
    })
    .await
    .expect("test finishes in time");
}

/// A non-loopback IPv4 address of this machine, from the kernel's routing
/// table of local addresses.
fn non_loopback_local_ip() -> Option<IpAddr> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last: Option<IpAddr> = None;
    for line in trie.lines() {
        let line = line.trim();
        if let Some(ip) = line.strip_prefix("|-- ") {
            last = ip.parse().ok();
        } else if line.contains("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.is_loopback()
            && !ip.is_unspecified()
        {
            return Some(ip);
        }
    }
    None
}

#[tokio::test]
async fn loopback_only_by_default() {
    timeout(TEST_TIMEOUT, async {
        let endpoint = DebugEndpoint::bind("0").await.unwrap();
        let addr = endpoint.local_addr();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.ip(), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(get(addr, "/metrics").await.status, 200);

        let process = DebugEndpoint::for_process("0").unwrap();
        assert_eq!(process.ip(), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(DebugEndpoint::for_process(" 0 ").unwrap(), process);
        assert_eq!(get(process, "/metrics").await.status, 200);

        for bad in ["", "nonsense", "99999", "127.0.0.1", "host:port"] {
            assert!(DebugEndpoint::bind(bad).await.is_err(), "{bad:?}");
            assert!(DebugEndpoint::for_process(bad).is_err(), "{bad:?}");
        }

        let Some(ip) = non_loopback_local_ip() else {
            println!(
                "skipping the remote-address check: this machine has no non-loopback IPv4 address"
            );
            return;
        };
        let other = SocketAddr::new(ip, addr.port());
        match timeout(Duration::from_secs(5), TcpStream::connect(other)).await {
            Ok(Ok(_)) => panic!("the endpoint answered on {other}, not only on loopback"),
            Ok(Err(err)) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}"),
            Err(_) => println!("connecting to {other} timed out (filtered); not reachable either"),
        }

        // Dropping the endpoint stops it.
        drop(endpoint);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still listening after drop"
        );
    })
    .await
    .expect("test finishes in time");
}

/// Run as a child process by [`env_var_turns_it_on`]: with
/// `SWITCHYARD_DEBUG_ADDR` set, `from_env` starts the endpoint (or, for a
/// bad value, warns and returns `None`).
#[test]
fn env_child() {
    let Ok(expect) = std::env::var("DEBUG_ENDPOINT_TEST_EXPECT") else {
        return; // not run as the child
    };
    let addr = DebugEndpoint::from_env();
    // Read once: the same answer again.
    assert_eq!(DebugEndpoint::from_env(), addr);
    match expect.as_str() {
        "on" => {
            let addr = addr.expect("the variable turns the endpoint on");
            assert!(addr.ip().is_loopback());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let response = runtime.block_on(get(addr, "/debug/switchyard.json"));
            assert_eq!(response.status, 200);
            println!("ENV_CHILD_OK {addr}");
        }
        _ => {
            assert_eq!(addr, None);
            // A server started with the variable set fails to start,
            // naming the variable, the value and the cause.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let started = runtime.block_on(
                Server::builder()
                    .add_service(DebugProbeServer::new(Probe))
                    .unix_path(dir.path().join("s.sock"))
                    .message_queues(false)
                    .start(),
            );
            let err = started.expect_err("a server whose debug endpoint cannot start");
            let value = std::env::var("SWITCHYARD_DEBUG_ADDR").unwrap();
            assert!(
                err.message().contains("SWITCHYARD_DEBUG_ADDR")
                    && err.message().contains(&format!("{value:?}")),
                "{err}"
            );
            println!("ENV_CHILD_OK off");
        }
    }
}

#[tokio::test]
async fn a_debug_address_that_cannot_be_bound_fails_start_and_the_bound_one_is_published() {
    timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let server = |debug: String| {
            Server::builder()
                .add_service(DebugProbeServer::new(Probe))
                .publish("debugged")
                .runtime_dir(dir.path())
                .message_queues(false)
                .debug_addr(debug)
                .start()
        };
        // Taken by another socket: start fails naming the address and why.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = taken.local_addr().unwrap().to_string();
        let err = server(taken_addr.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(
            err.message().contains(&taken_addr)
                && err.message().contains("ServerBuilder::debug_addr")
                && err.message().to_lowercase().contains("in use"),
            "{err}"
        );
        // Malformed: an argument error.
        let err = server("not an address".into()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("not an address"), "{err}");
        // Port 0: the bound port is known and published.
        let handle = server("127.0.0.1:0".into()).await.unwrap();
        let addr = handle
            .debug_addr()
            .expect("the server has a debug endpoint");
        assert_ne!(addr.port(), 0);
        assert_eq!(get(addr, "/debug/switchyard.json").await.status, 200);
        let entry = switchyard::discovery::Registry::open(dir.path())
            .unwrap()
            .lookup("debugged")
            .unwrap()
            .expect("the server is published");
        assert_eq!(
            entry.debug.as_deref(),
            Some(format!("http://{addr}/debug/switchyard").as_str())
        );
        handle.shutdown().await;
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test]
async fn env_var_turns_it_on() {
    let exe = std::env::current_exe().unwrap();
    for (value, expect) in [
        ("0", "on"),
        ("127.0.0.1:0", "on"),
        ("not-an-address", "off"),
        ("70000", "off"),
    ] {
        let child = tokio::process::Command::new(&exe)
            .args(["--exact", "env_child", "--nocapture", "--test-threads=1"])
            .env("SWITCHYARD_DEBUG_ADDR", value)
            .env("DEBUG_ENDPOINT_TEST_EXPECT", expect)
            .kill_on_drop(true)
            .output();
        let out = timeout(Duration::from_secs(30), child)
            .await
            .expect("child finishes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("ENV_CHILD_OK"),
            "{value:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn introspection_answers_remote_peers_only_when_turned_on() {
    use switchyard::debug::IntrospectionClient;
    let _serial = FIXTURE_LOCK.lock().await;
    timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let start = |remote: bool, name: &'static str| {
            Server::builder()
                .add_service(DebugProbeServer::new(Probe))
                .publish(name)
                .runtime_dir(dir.path())
                .tcp("127.0.0.1:0")
                .message_queues(false)
                .remote_introspection(remote)
                .start()
        };
        let snapshot = |url: String, transport: Transport| {
            let dir = dir.path().to_owned();
            async move {
                let channel = Channel::builder()
                    .runtime_dir(dir)
                    .prefer(transport)
                    .connect(&url)
                    .await
                    .unwrap();
                assert_eq!(channel.selection().transport, transport);
                IntrospectionClient::new(channel).snapshot().await
            }
        };
        let closed = start(false, "closed-table").await.unwrap();
        let tcp = format!("tcp://{}", closed.tcp_addr().unwrap());
        let err = snapshot(tcp, Transport::Tcp).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        assert!(
            err.message().contains("over tcp")
                && err
                    .message()
                    .contains("ServerBuilder::remote_introspection(true)"),
            "{err}"
        );
        // The user's own services still answer over TCP.
        let tcp = format!("tcp://{}", closed.tcp_addr().unwrap());
        let channel = Channel::builder()
            .prefer(Transport::Tcp)
            .connect(&tcp)
            .await
            .unwrap();
        assert_eq!(
            DebugProbeClient::new(channel)
                .echo("hi".into())
                .await
                .unwrap(),
            "hi"
        );
        // Locally, as the same user: answered.
        let local = snapshot("closed-table".into(), Transport::Unix)
            .await
            .unwrap();
        assert_eq!(local.process.pid, std::process::id());
        // Turned on: answered over TCP too.
        let open = start(true, "open-table").await.unwrap();
        let tcp = format!("tcp://{}", open.tcp_addr().unwrap());
        assert!(snapshot(tcp, Transport::Tcp).await.is_ok());
        closed.shutdown().await;
        open.shutdown().await;
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test]
async fn bodies_over_the_mmap_track_show_in_the_table_json_and_metrics() {
    let _serial = FIXTURE_LOCK.lock().await;
    timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::builder()
            .add_service(DebugProbeServer::new(Probe))
            .publish("mapped")
            .runtime_dir(dir.path())
            .message_queues(false)
            .start()
            .await
            .unwrap();
        let channel = Channel::builder()
            .runtime_dir(dir.path())
            .connect("mapped")
            .await
            .unwrap();
        assert_eq!(channel.selection().transport, Transport::Shm);
        let client = DebugProbeClient::new(channel);
        // 1 MiB each way: over the 256 KiB bulk threshold.
        let big = "m".repeat(1 << 20);
        assert_eq!(client.echo(big.clone()).await.unwrap().len(), big.len());
        let snapshot = switchyard::debug::snapshot();
        let ours: Vec<&ConnectionInfo> = snapshot
            .connections
            .iter()
            .filter(|c| {
                c.transport == "shm" && c.peer.addr.contains(&*dir.path().to_string_lossy())
            })
            .collect();
        let client_side = ours
            .iter()
            .find(|c| c.role == "client")
            .expect("client row");
        let server_side = ours
            .iter()
            .find(|c| c.role == "server")
            .expect("server row");
        let sent = client_side.mmap.as_ref().expect("the client's mmap track");
        assert_eq!((sent.bodies_sent, sent.bodies_received), (1, 1), "{sent:?}");
        assert!(
            sent.bytes_sent >= 1 << 20 && sent.bytes_received >= 1 << 20,
            "{sent:?}"
        );
        let got = server_side.mmap.as_ref().expect("the server's mmap track");
        assert_eq!((got.bodies_sent, got.bodies_received), (1, 1), "{got:?}");
        assert!(snapshot.mmap.bodies_sent >= 2, "{:?}", snapshot.mmap);
        let table = switchyard::debug::table::connections_table(&snapshot);
        assert!(
            table.contains("mmap: 1 bodies sent (1.0 MiB), 1 received (1.0 MiB)"),
            "{table}"
        );
        let metrics = switchyard::debug::render_prometheus(&snapshot);
        assert!(
            metrics.contains("switchyard_mmap_bodies_total{direction=\"sent\"}"),
            "{metrics}"
        );
        drop(client);
        server.shutdown().await;
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test]
async fn silent_sockets_cannot_keep_scrapes_out() {
    timeout(TEST_TIMEOUT, async {
        let endpoint = DebugEndpoint::bind("127.0.0.1:0").await.unwrap();
        let addr = endpoint.local_addr();
        // Three times the endpoint's slots, each connected and silent.
        let mut silent = Vec::new();
        for _ in 0..192 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Every scrape is answered long before the 5 s a silent client may
        // take to send its request.
        for _ in 0..5 {
            let scrape = timeout(Duration::from_secs(2), get(addr, "/metrics")).await;
            let response = scrape.expect("a scrape is answered beside 192 silent sockets");
            assert_eq!(response.status, 200);
        }
        drop(silent);
    })
    .await
    .expect("test finishes in time");
}

/// Unary round trips over unix, one at a time: (p50, calls per second).
async fn unary_round(client: &DebugProbeClient, calls: usize) -> (Duration, f64) {
    let mut times = Vec::with_capacity(calls);
    let started = std::time::Instant::now();
    for _ in 0..calls {
        let t = std::time::Instant::now();
        client.echo(String::new()).await.unwrap();
        times.push(t.elapsed());
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    times.sort();
    (times[times.len() / 2], rate)
}

/// Fetches the three pages every `every` from a thread of its own (as a
/// scraper in another process would) until `stop`; returns how many
/// rounds it made and the mean time of one round.
fn scraper(
    addr: SocketAddr,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u32, Duration)> {
    use std::io::{Read as _, Write as _};
    std::thread::spawn(move || {
        let mut rounds = 0;
        let mut busy = Duration::ZERO;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let started = std::time::Instant::now();
            for path in ["/metrics", "/debug/switchyard.json", "/debug/switchyard"] {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
                let mut out = Vec::new();
                stream.read_to_end(&mut out).unwrap();
                assert!(out.starts_with(b"HTTP/1.1 200 "));
            }
            busy += started.elapsed();
            rounds += 1;
            std::thread::sleep(every);
        }
        (rounds, busy / rounds.max(1))
    })
}

/// The figure in docs/debug-endpoint.md: unary p50 and calls/s over unix
/// with the endpoint off, on and idle, and on and scraped (all three pages)
/// every second and every 100 ms, interleaved in one run. Client and
/// server share one thread (calls do not hop between threads, which on a
/// VM makes latency bimodal); the endpoint and the scraper have their own. Run with `cargo
/// test --release -p switchyard --test debug_endpoint -- --ignored
/// endpoint_cost --nocapture`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement; run by hand in release mode"]
async fn endpoint_cost_on_the_fastest_transport() {
    let _serial = FIXTURE_LOCK.lock().await;
    const CALLS: usize = 200_000;
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .add_service(DebugProbeServer::new(Probe))
        .publish("probe")
        .runtime_dir(dir.path())
        .start()
        .await
        .unwrap();
    let channel = Channel::builder()
        .runtime_dir(dir.path())
        .prefer(Transport::Unix)
        .connect("probe")
        .await
        .unwrap();
    assert_eq!(channel.selection().transport, Transport::Unix);
    let client = DebugProbeClient::new(channel);
    unary_round(&client, CALLS).await; // warm up

    let mut results: BTreeMap<&str, Vec<(Duration, f64)>> = BTreeMap::new();
    let mut scrapes: BTreeMap<&str, (u32, Duration)> = BTreeMap::new();
    for _ in 0..ROUNDS {
        results
            .entry("a: off")
            .or_default()
            .push(unary_round(&client, CALLS).await);
        // The endpoint on a thread of its own, as SWITCHYARD_DEBUG_ADDR
        // runs it.
        let endpoint_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let endpoint = endpoint_runtime
            .spawn(DebugEndpoint::bind("0"))
            .await
            .unwrap()
            .unwrap();
        results
            .entry("b: on, idle")
            .or_default()
            .push(unary_round(&client, CALLS).await);
        for (name, every) in [
            ("c: on, scraped every 1 s", Duration::from_secs(1)),
            ("d: on, scraped every 100 ms", Duration::from_millis(100)),
        ] {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let thread = scraper(endpoint.local_addr(), every, stop.clone());
            results
                .entry(name)
                .or_default()
                .push(unary_round(&client, CALLS).await);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (n, mean) = tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
            let total = scrapes.entry(name).or_default();
            total.0 += n;
            total.1 = mean;
        }
        drop(endpoint);
        endpoint_runtime.shutdown_background();
    }
    let median = |v: &[(Duration, f64)]| {
        let mut p50: Vec<Duration> = v.iter().map(|r| r.0).collect();
        let mut rate: Vec<f64> = v.iter().map(|r| r.1).collect();
        p50.sort();
        rate.sort_by(f64::total_cmp);
        (p50[p50.len() / 2], rate[rate.len() / 2])
    };
    let (base_p50, base_rate) = median(&results["a: off"]);
    println!("unary over unix, {CALLS} calls x {ROUNDS} rounds each, medians of rounds:");
    for (name, runs) in &results {
        let (p50, rate) = median(runs);
        let scraped = scrapes
            .get(name)
            .map(|(n, mean)| {
                format!(
                    "  ({n} scrapes of 3 pages, {:.2} ms each)",
                    mean.as_secs_f64() * 1e3
                )
            })
            .unwrap_or_default();
        println!(
            "  {name:<28} p50 {:>6.1} µs ({:+.1} %)  {:>8.0} calls/s ({:+.1} %){scraped}",
            p50.as_secs_f64() * 1e6,
            (p50.as_secs_f64() / base_p50.as_secs_f64() - 1.0) * 100.0,
            rate,
            (rate / base_rate - 1.0) * 100.0
        );
    }
    drop(server);
}

/// A QUIC listener's connection attempts show in the snapshot (and so in
/// the JSON, the page and /metrics): the Retry it sent a new client and
/// the handshake that followed; a listener that counts nothing shows none.
#[tokio::test]
async fn quic_attempts_show_on_the_listener() {
    let _serial = FIXTURE_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .add_service(DebugProbeServer::new(Probe))
        .publish("probe-quic")
        .runtime_dir(dir.path())
        .quic("127.0.0.1:0")
        .start()
        .await
        .expect("server starts");
    let url = server.quic_url().expect("a QUIC listener");
    let channel = Channel::builder()
        .prefer(Transport::Quic)
        .connect(&url)
        .await
        .expect("connects over quic");
    assert_eq!(
        DebugProbeClient::new(channel.clone())
            .echo("q".into())
            .await
            .unwrap(),
        "q"
    );
    let quic = server.quic_addr().unwrap().to_string();
    let snapshot = switchyard::debug::snapshot();
    let listener = snapshot
        .listeners
        .iter()
        .find(|l| l.transport == "quic" && l.url.contains(&quic))
        .expect("the QUIC listener is listed");
    assert!(
        listener.attempts.get("retried").is_some_and(|n| *n >= 1),
        "{listener:?}"
    );
    assert!(
        listener
            .attempts
            .get("handshakes_started")
            .is_some_and(|n| *n >= 1),
        "{listener:?}"
    );
    assert!(
        !listener.attempts.contains_key("ignored_at_limit"),
        "only what happened: {listener:?}"
    );
    let unix = snapshot
        .listeners
        .iter()
        .find(|l| l.transport == "unix" && l.url.contains(&dir.path().display().to_string()));
    if let Some(unix) = unix {
        assert!(unix.attempts.is_empty(), "{unix:?}");
    }
    drop(channel);
    server.shutdown().await;
}
