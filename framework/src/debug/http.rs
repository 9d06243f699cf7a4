//! The debug endpoint: a small HTTP/1.1 server over tokio that serves the
//! introspection model as an HTML page, as JSON and as Prometheus text.
//!
//! It is deliberately tiny and defensive. It reads one request per
//! connection (request line and headers capped at [`MAX_HEAD`] bytes, read
//! within [`READ_TIMEOUT`]), answers `GET` and `HEAD` only, closes the
//! connection after each response, serves at most [`MAX_CONNECTIONS`]
//! clients at once (when full, the oldest client still silent gives way to
//! a new one, so idle sockets cannot keep scrapes out), and never trusts a byte of
//! input: nothing here panics on what a client sends.
//!
//! Off by default. `SWITCHYARD_DEBUG_ADDR=127.0.0.1:9901` (or just `9901`,
//! which means loopback) turns it on for the process; see
//! `docs/debug-endpoint.md`.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The environment variable that turns the endpoint on.
pub const DEBUG_ADDR_ENV: &str = "SWITCHYARD_DEBUG_ADDR";

/// The HTML page.
pub const HTML_PATH: &str = "/debug/switchyard";
/// The JSON model.
pub const JSON_PATH: &str = "/debug/switchyard.json";
/// Prometheus text.
pub const METRICS_PATH: &str = "/metrics";

/// Request line and headers together may not exceed this.
const MAX_HEAD: usize = 8 * 1024;
/// A client must send its whole request head within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Writing a response may take at most this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep reading a client's unread input after answering.
const LINGER: Duration = Duration::from_secs(1);
/// How much of it to read at most.
const LINGER_BYTES: usize = 1024 * 1024;
/// Clients served at once. When all are taken, the oldest client that has
/// not sent its request yet is closed to make room; if every one is being
/// answered, the new client is closed without an answer.
const MAX_CONNECTIONS: usize = 64;
/// How long a new client waits for the slot of the client closed for it.
const EVICT_WAIT: Duration = Duration::from_millis(200);

/// A running debug endpoint. The server stops when this is dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let endpoint = switchyard::debug::DebugEndpoint::bind("127.0.0.1:0").await?;
/// println!("open {}", endpoint.url());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DebugEndpoint {
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl DebugEndpoint {
    /// Binds `addr` and serves on the current tokio runtime until dropped.
    ///
    /// `addr` is `host:port` (`127.0.0.1:9901`, `[::1]:9901`,
    /// `localhost:9901`) or just a port (`9901`, `0` for any free port),
    /// which binds loopback. Binding anything but loopback exposes the
    /// process's connections and peers to every host that can reach it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub async fn bind(addr: &str) -> io::Result<Self> {
        let listener = match parse_addr(addr)? {
            BindAddr::Socket(socket) => TcpListener::bind(socket).await?,
            BindAddr::Host(host) => TcpListener::bind(host.as_str()).await?,
        };
        let local_addr = listener.local_addr()?;
        warn_if_exposed(local_addr);
        let task = tokio::spawn(serve(listener));
        Ok(Self {
            local_addr,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL of the HTML page.
    pub fn url(&self) -> String {
        endpoint_url(self.local_addr)
    }
}

impl Drop for DebugEndpoint {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl DebugEndpoint {
    /// Starts an endpoint at `addr` that serves for the rest of the
    /// process's life on a thread of its own (independent of any tokio
    /// runtime), and returns the address it listens on. Asking again for
    /// the same `addr` returns the endpoint already running.
    ///
    /// `addr` is read as [`bind`](Self::bind) reads it.
    pub fn for_process(addr: &str) -> io::Result<SocketAddr> {
        let key = addr.trim().to_owned();
        let mut started = match process_endpoints().lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(local_addr) = started.get(&key) {
            return Ok(*local_addr);
        }
        let local_addr = start_process_endpoint(&key)?;
        tracing::info!(
            json = %format!("http://{local_addr}{JSON_PATH}"),
            metrics = %format!("http://{local_addr}{METRICS_PATH}"),
            "switchyard debug endpoint: http://{local_addr}{HTML_PATH}"
        );
        started.insert(key, local_addr);
        Ok(local_addr)
    }

    /// Starts the process's endpoint at `SWITCHYARD_DEBUG_ADDR`, if the
    /// variable is set, and returns its address. The variable is read once
    /// per process; a value that cannot be bound is logged as a warning
    /// that says what to do, and the process goes on without the endpoint.
    pub fn from_env() -> Option<SocketAddr> {
        match env_endpoint() {
            Ok(bound) => bound,
            Err(status) => {
                tracing::warn!("{}", status.message());
                None
            }
        }
    }
}

/// The endpoint `SWITCHYARD_DEBUG_ADDR` asks for, started once per process:
/// `Ok(None)` when the variable is unset or empty, the bound address, or
/// why it could not be started (the same error every time it is asked).
pub(crate) fn env_endpoint() -> Result<Option<SocketAddr>, crate::Status> {
    static FROM_ENV: OnceLock<Result<Option<SocketAddr>, crate::Status>> = OnceLock::new();
    FROM_ENV
        .get_or_init(|| match std::env::var(DEBUG_ADDR_ENV) {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => start_configured(&value, DEBUG_ADDR_ENV).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(raw)) => {
                Err(crate::Status::invalid_argument(format!(
                    "{DEBUG_ADDR_ENV}={raw:?} is not valid UTF-8, so the switchyard debug \
                     endpoint cannot start; set it to a port (9901, which binds 127.0.0.1) or \
                     host:port (127.0.0.1:9901), or unset it"
                )))
            }
        })
        .clone()
}

/// The URL of the HTML page of an endpoint listening on `addr`.
pub(crate) fn endpoint_url(addr: SocketAddr) -> String {
    format!("http://{addr}{HTML_PATH}")
}

/// Process-lifetime endpoints, by the address they were asked for.
fn process_endpoints() -> &'static Mutex<BTreeMap<String, SocketAddr>> {
    static ENDPOINTS: OnceLock<Mutex<BTreeMap<String, SocketAddr>>> = OnceLock::new();
    ENDPOINTS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// What the runtime calls when a server starts or a channel connects:
/// [`DebugEndpoint::from_env`], once per process.
pub(crate) fn ensure_from_env() {
    let _ = DebugEndpoint::from_env();
}

/// [`DebugEndpoint::for_process`] for a configured value (a builder
/// option or the environment); `source` names the setting in the error,
/// which says what went wrong and what to do.
pub(crate) fn start_configured(addr: &str, source: &str) -> Result<SocketAddr, crate::Status> {
    DebugEndpoint::for_process(addr).map_err(|err| {
        let message = format!(
            "the switchyard debug endpoint cannot start at {source}={:?}: {err}; set it to a \
             free port (9901, which binds 127.0.0.1; 0 picks a free one) or host:port \
             (127.0.0.1:9901), or remove the setting",
            addr.trim()
        );
        if err.kind() == io::ErrorKind::InvalidInput {
            crate::Status::invalid_argument(message)
        } else {
            crate::Status::failed_precondition(message)
        }
    })
}

/// Binds synchronously (so errors are reported to the caller) and serves on
/// a thread with its own single-threaded runtime, independent of whichever
/// runtime the application uses or shuts down.
fn start_process_endpoint(addr: &str) -> io::Result<SocketAddr> {
    let listener = match parse_addr(addr)? {
        BindAddr::Socket(socket) => std::net::TcpListener::bind(socket)?,
        BindAddr::Host(host) => std::net::TcpListener::bind(host.as_str())?,
    };
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    warn_if_exposed(local_addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("switchyard-debug".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener).await,
                    Err(err) => tracing::warn!("switchyard debug endpoint stopped: {err}"),
                }
            });
        })?;
    Ok(local_addr)
}

#[derive(Debug, PartialEq, Eq)]
enum BindAddr {
    Socket(SocketAddr),
    /// `host:port` to resolve.
    Host(String),
}

/// A port alone means loopback; otherwise an address or `host:port`.
fn parse_addr(addr: &str) -> io::Result<BindAddr> {
    let addr = addr.trim();
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr:?} is not a debug address: {why}"),
        )
    };
    if addr.is_empty() {
        return Err(invalid("it is empty"));
    }
    if addr.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = addr
            .parse()
            .map_err(|_| invalid("a port is a number from 0 to 65535"))?;
        return Ok(BindAddr::Socket(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        )));
    }
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return Ok(BindAddr::Socket(socket));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(BindAddr::Host(addr.to_owned()))
        }
        _ => Err(invalid(
            "expected a port (9901) or host:port (127.0.0.1:9901)",
        )),
    }
}

fn warn_if_exposed(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the switchyard debug endpoint listens on a non-loopback address: anyone who can \
             reach it sees this process's services, connections and peers"
        );
    }
}

/// The accept loop: one short task per client, at most
/// [`MAX_CONNECTIONS`] at once.
async fn serve(listener: TcpListener) {
    let loopback = listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Clients that have not sent their whole request head yet, oldest first.
    // When every slot is taken, the oldest of them gives way to the new
    // client, so silent sockets cannot keep scrapes out.
    let mut waiting: BTreeMap<u64, Waiting> = BTreeMap::new();
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors and the like: back off instead of
                // spinning.
                tracing::debug!("debug endpoint accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        waiting.retain(|_, w| !w.task.is_finished() && !w.has_head.load(Ordering::Acquire));
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let Some((_, oldest)) = waiting.pop_first() else {
                    // Every slot is answering a request: refuse.
                    drop(stream);
                    continue;
                };
                oldest.task.abort();
                match tokio::time::timeout(EVICT_WAIT, Arc::clone(&slots).acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let has_head = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let has_head = Arc::clone(&has_head);
            async move {
                handle(stream, loopback, &has_head).await;
                drop(permit);
            }
        });
        waiting.insert(
            next_id,
            Waiting {
                task: task.abort_handle(),
                has_head,
            },
        );
        next_id += 1;
    }
}

/// A client of [`serve`] that may still be waiting to send its request.
struct Waiting {
    task: tokio::task::AbortHandle,
    /// Set once its request head is read (it is being answered).
    has_head: Arc<AtomicBool>,
}

/// One client: read a request, answer it, close.
async fn handle(mut stream: TcpStream, loopback: bool, has_head: &AtomicBool) {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await;
    has_head.store(true, Ordering::Release);
    let response = match head {
        Err(_) => Some(Response::text(
            408,
            "the request head did not arrive in time\n".into(),
        )),
        Ok(Err(_)) => None,
        Ok(Ok(Head::Closed)) => None,
        Ok(Ok(Head::TooLarge)) => Some(Response::text(
            431,
            format!("the request line and headers exceed {MAX_HEAD} bytes\n"),
        )),
        Ok(Ok(Head::Complete(head))) => Some(respond(&head, loopback)),
    };
    if let Some(response) = response {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(&response.bytes()).await?;
            stream.flush().await?;
            stream.shutdown().await
        })
        .await;
        // Closing with unread input would reset the connection, and the
        // client could lose the answer (a 431, say): read what is still
        // coming, briefly and boundedly, before closing.
        let _ = tokio::time::timeout(LINGER, async {
            let mut sink = [0u8; 4096];
            let mut drained = 0usize;
            while drained < LINGER_BYTES {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
}

enum Head {
    /// Everything up to and including the blank line.
    Complete(Vec<u8>),
    TooLarge,
    /// The client went away before finishing its request.
    Closed,
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = head_end(&buf, searched_from) {
            if end > MAX_HEAD {
                return Ok(Head::TooLarge);
            }
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// The end of the head (after `\r\n\r\n` or `\n\n`), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf.get(i) == Some(&b'\n') {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// What a path serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Html,
    Json,
    Metrics,
}

fn route(path: &str) -> Option<Page> {
    match path {
        HTML_PATH | "/debug/switchyard/" => Some(Page::Html),
        JSON_PATH => Some(Page::Json),
        METRICS_PATH => Some(Page::Metrics),
        _ => None,
    }
}

/// Builds the response to a complete request head.
fn respond(head: &[u8], loopback: bool) -> Response {
    let request = match parse_request(head) {
        Ok(request) => request,
        Err(why) => return Response::text(400, format!("bad request: {why}\n")),
    };
    let head_only = request.method == "HEAD";
    let mut response = answer(&request, loopback);
    response.head_only = head_only;
    response
}

fn answer(request: &Request<'_>, loopback: bool) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        let mut response = Response::text(
            405,
            format!(
                "method {} is not allowed; the debug endpoint answers GET and HEAD\n",
                request.method
            ),
        );
        response.allow = true;
        return response;
    }
    // A loopback endpoint answers only requests addressed to an IP or to
    // localhost, so a web page cannot read it through DNS rebinding.
    if loopback && !request.host.is_none_or(host_is_local) {
        return Response::text(
            421,
            "this debug endpoint only answers requests addressed to localhost or an IP \
             address\n"
                .into(),
        );
    }
    let Some(page) = route(request.path) else {
        return Response::text(
            404,
            format!(
                "not found; the debug endpoint serves:\n  {HTML_PATH}       HTML page\n  \
                 {JSON_PATH}  JSON model\n  {METRICS_PATH}                Prometheus text\n"
            ),
        );
    };
    let snapshot = super::snapshot();
    match page {
        Page::Html => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: super::html::render(&snapshot).into_bytes(),
            allow: false,
            head_only: false,
        },
        Page::Json => Response {
            status: 200,
            content_type: "application/json",
            body: super::render_json(&snapshot).into_bytes(),
            allow: false,
            head_only: false,
        },
        Page::Metrics => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: super::prometheus::render(&snapshot).into_bytes(),
            allow: false,
            head_only: false,
        },
    }
}

/// `localhost`, `*.localhost`, or an IP literal, with or without a port.
fn host_is_local(host: &str) -> bool {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<IpAddr>().is_ok());
    }
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name);
    let lower = name.to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok() || lower == "localhost" || lower.ends_with(".localhost")
}

#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The path without query or fragment.
    path: &'a str,
    /// The Host header, if any.
    host: Option<&'a str>,
}

fn parse_request(head: &[u8]) -> Result<Request<'_>, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().ok_or("no request line")?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not `METHOD /path HTTP/1.1`");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("the method is not a token");
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err("only HTTP/1.0 and HTTP/1.1 are spoken here");
    }
    let mut host = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or("a header line has no colon")?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err("a header name is malformed");
        }
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err("more than one Host header");
            }
            host = Some(value.trim());
        }
    }
    // Absolute form (`http://host/path`) as proxies send it.
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| rest.get(i..).unwrap_or("/")),
        None => target,
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err("the request target is not a path");
    }
    Ok(Request { method, path, host })
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Add `Allow: GET, HEAD`.
    allow: bool,
    /// A HEAD request: headers only.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into_bytes(),
            allow: false,
            head_only: false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            421 => "Misdirected Request",
            431 => "Request Header Fields Too Large",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             Connection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_binds_loopback() {
        assert_eq!(
            parse_addr("9901").unwrap(),
            BindAddr::Socket("127.0.0.1:9901".parse().unwrap())
        );
        assert_eq!(
            parse_addr(" 0 ").unwrap(),
            BindAddr::Socket("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            parse_addr("[::1]:80").unwrap(),
            BindAddr::Socket("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_addr("localhost:1").unwrap(),
            BindAddr::Host("localhost:1".into())
        );
        for bad in ["", "99999", "localhost", ":80", "host:port", "127.0.0.1:"] {
            assert!(parse_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_parse_or_are_refused() {
        let ok = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n");
        assert_eq!(
            ok,
            Ok(Request {
                method: "GET",
                path: "/metrics",
                host: Some("127.0.0.1:9")
            })
        );
        let absolute = parse_request(b"GET http://localhost:9/debug/switchyard HTTP/1.0\n\n");
        assert_eq!(absolute.map(|r| r.path), Ok("/debug/switchyard"));
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET \xff HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn heads_end_at_a_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
    }

    #[test]
    fn only_local_hosts_pass_on_loopback() {
        for good in [
            "localhost",
            "localhost:9901",
            "127.0.0.1:1",
            "[::1]:9901",
            "10.1.2.3",
            "a.localhost:2",
        ] {
            assert!(host_is_local(good), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:9901",
            "[evil]:1",
            "localhost.evil",
        ] {
            assert!(!host_is_local(bad), "{bad}");
        }
        let request = Request {
            method: "GET",
            path: "/metrics",
            host: Some("rebound.example:9901"),
        };
        assert_eq!(answer(&request, true).status, 421);
        assert_ne!(answer(&request, false).status, 421);
    }

    #[test]
    fn responses_close_and_head_has_no_body() {
        let mut response = Response::text(404, "nope\n".into());
        let full = String::from_utf8(response.bytes()).unwrap();
        assert!(full.starts_with("HTTP/1.1 404 Not Found\r\n"), "{full}");
        assert!(full.contains("Connection: close\r\n") && full.ends_with("\r\n\r\nnope\n"));
        response.head_only = true;
        let head = String::from_utf8(response.bytes()).unwrap();
        assert!(head.ends_with("Content-Length: 5\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"), "{head}");
    }
}
