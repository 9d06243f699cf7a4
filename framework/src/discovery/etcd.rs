//! etcd as the place replicas are listed: a server registers each address
//! set under a key bound to a lease it keeps alive
//! ([`Etcd::register`]), revoked when it shuts down gracefully (or left to
//! expire when it dies); a channel lists the name's keys, watches them, and
//! follows every change at once ([`Resolver::changed`]).
//!
//! Keys are `<prefix><name>/<lease id, hex>` (prefix
//! [`DEFAULT_PREFIX`]), each value `{"addresses": ["quic://…", "tcp://…"]}`.
//! A value that is not such a record is skipped, with its reason logged and
//! shown on the channel's debug views. Requests go to etcd's JSON gateway
//! (`/v3/…`, etcd 3.4 and later) over plain HTTP.
//!
//! ```no_run
//! # async fn run(server: switchyard::ServerHandle) -> Result<(), switchyard::Status> {
//! use switchyard::discovery::Etcd;
//! use switchyard::{Balance, Channel};
//!
//! let etcd = Etcd::new("http://127.0.0.1:2379")?;
//! // A server: listed while it runs, withdrawn first when it shuts down.
//! // Register an address other hosts reach (a server bound to 0.0.0.0
//! // gives 127.0.0.1 in quic_url()).
//! let mut server = server;
//! let pin = server.quic_fingerprint().expect("listens on QUIC");
//! let url = format!("quic://10.0.0.5:7443?pin={pin}");
//! let registration = etcd.register("inventory", [url]).await?;
//! server.withdraw_on_shutdown(registration);
//! // A client: every replica listed, followed as they come and go.
//! let channel = Channel::builder()
//!     .discovery(etcd)
//!     .balance(Balance::PeakEwma)
//!     .connect("inventory")
//!     .await?;
//! # Ok(()) }
//! ```

mod http;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::sync::watch;

use self::http::HttpError;
use super::registration::{Registration, WithdrawFuture};
use super::resolver::{ChangedFuture, ResolveFuture, Resolved, Resolver};
use crate::protocol::status::Status;

/// Where keys go unless [`Etcd::prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "/switchyard/services/";
/// How long a registration outlives its server's last keep-alive, unless
/// [`Etcd::lease_ttl`] says otherwise: how long a replica that died
/// without a word stays listed (channels stop picking it as soon as its
/// connection fails).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// The bound on one request to etcd.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a watch that failed waits before it is opened again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// etcd's members (see the [module docs](self)).
#[derive(Clone)]
pub struct Etcd {
    /// `host:port` of each member, tried in order.
    endpoints: Arc<[String]>,
    prefix: String,
    lease_ttl: Duration,
    state: Arc<State>,
}

/// What the clones of one [`Etcd`] share.
#[derive(Default)]
struct State {
    /// Per name, what its last lookup skipped and why.
    skipped: Mutex<HashMap<String, Vec<String>>>,
    /// Per watched name, a count bumped at every change.
    watches: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Dropped with the last clone: every watch task ends.
    alive: Option<watch::Sender<()>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The first key after every key that starts with `prefix` (etcd's
/// `range_end` for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An int64 as etcd's JSON gives it (a string) or as a number.
fn int(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => text.parse().ok(),
        other => other.as_i64(),
    }
}

/// Why one key under a name is not a replica; `Ok` is the replica.
fn record(name: &str, key: &str, value: &[u8], source: &str) -> Result<Resolved, String> {
    let value: Value =
        serde_json::from_slice(value).map_err(|err| format!("its value is not JSON ({err})"))?;
    let addresses: Vec<&str> = value
        .get("addresses")
        .and_then(Value::as_array)
        .ok_or("its value has no \"addresses\" list")?
        .iter()
        .map(|a| a.as_str().ok_or("an address is not a string"))
        .collect::<Result<_, _>>()?;
    let resolved = Resolved::from_urls(name, &addresses, format!("{source}, key {key}"))
        .map_err(|err| Status::from(err).message().to_owned())?;
    if resolved.addresses.is_empty() {
        return Err("it lists no address".to_owned());
    }
    Ok(resolved)
}

impl Etcd {
    /// The etcd cluster at `endpoints`: one URL (`http://127.0.0.1:2379`)
    /// or several separated by commas, tried in order. InvalidArgument for
    /// a URL without a port; FailedPrecondition for `https://` (etcd with
    /// TLS is not supported: put it behind a local proxy, or use plain HTTP
    /// on a trusted network).
    pub fn new(endpoints: &str) -> Result<Self, Status> {
        let mut parsed = Vec::new();
        for url in endpoints
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            if url.starts_with("https://") {
                return Err(Status::failed_precondition(format!(
                    "etcd endpoint {url:?}: TLS to etcd is not supported; use http:// on a \
                     trusted network or a local TLS proxy"
                )));
            }
            let host_port = url
                .strip_prefix("http://")
                .unwrap_or(url)
                .trim_end_matches('/');
            let has_port = host_port
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !has_port || host_port.contains('/') {
                return Err(Status::invalid_argument(format!(
                    "etcd endpoint {url:?} is not http://HOST:PORT (for example \
                     http://127.0.0.1:2379)"
                )));
            }
            parsed.push(host_port.to_owned());
        }
        if parsed.is_empty() {
            return Err(Status::invalid_argument(
                "no etcd endpoint given; pass one such as http://127.0.0.1:2379",
            ));
        }
        let (alive, _) = watch::channel(());
        Ok(Self {
            endpoints: parsed.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            lease_ttl: DEFAULT_LEASE_TTL,
            state: Arc::new(State {
                alive: Some(alive),
                ..State::default()
            }),
        })
    }

    /// Keys go under `prefix` instead of [`DEFAULT_PREFIX`] (servers and
    /// clients must agree).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The lease of a registration lives this long without a keep-alive
    /// (default [`DEFAULT_LEASE_TTL`]; whole seconds, at least 1); the
    /// server renews it every third of that.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Who answers, for reasons and errors.
    fn describe(&self) -> String {
        format!("etcd at {}", self.endpoints.join(","))
    }

    /// The key prefix of `name`'s replicas.
    fn dir(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }

    /// One request, to the first member that answers.
    async fn call(&self, path: &str, body: Value) -> Result<Value, Status> {
        let mut failures = Vec::new();
        for addr in self.endpoints.iter() {
            match http::call(addr, path, &body, REQUEST_TIMEOUT).await {
                Ok(answer) => return Ok(answer),
                // A member refused the request itself: another would say
                // the same. (A 5xx, say a member without a leader, is its
                // own trouble: the next member is asked.)
                Err(err @ HttpError::Refused { code, .. }) if code < 500 => {
                    let message = format!("{} refused {path}: {err}", self.describe());
                    return Err(if code == 404 {
                        Status::not_found(message)
                    } else {
                        Status::unavailable(message)
                    });
                }
                Err(err) => failures.push(err.to_string()),
            }
        }
        Err(Status::unavailable(format!(
            "{} is unreachable ({}); is etcd running and listening there?",
            self.describe(),
            failures.join("; ")
        )))
    }

    async fn lookup(&self, name: &str) -> Result<Option<Vec<Resolved>>, Status> {
        let dir = self.dir(name);
        let answer = self
            .call(
                "/v3/kv/range",
                json!({"key": BASE64.encode(&dir), "range_end": BASE64.encode(prefix_end(&dir))}),
            )
            .await?;
        let kvs = answer
            .get("kvs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let source = self.describe();
        let mut replicas = Vec::new();
        let mut skipped = Vec::new();
        for kv in &kvs {
            let decode = |field: &str| {
                kv.get(field)
                    .and_then(Value::as_str)
                    .and_then(|text| BASE64.decode(text).ok())
                    .unwrap_or_default()
            };
            let key = String::from_utf8_lossy(&decode("key")).into_owned();
            match record(name, &key, &decode("value"), &source) {
                Ok(replica) => replicas.push(replica),
                Err(why) => {
                    tracing::warn!(%key, %why, "skipping an etcd record that is not a replica");
                    skipped.push(format!("etcd key {key}: {why}"));
                }
            }
        }
        lock(&self.state.skipped).insert(name.to_owned(), skipped);
        if kvs.is_empty() {
            return Ok(None);
        }
        Ok(Some(replicas))
    }

    /// Lists `addresses` (URLs, as [`ServerHandle::endpoints`] or
    /// [`ServerHandle::quic_url`] give them) as one replica of `name`,
    /// under a lease kept alive in the background until the registration
    /// is revoked or dropped. InvalidArgument if no address is usable;
    /// UNAVAILABLE if etcd cannot be reached.
    ///
    /// [`ServerHandle::endpoints`]: crate::ServerHandle::endpoints
    /// [`ServerHandle::quic_url`]: crate::ServerHandle::quic_url
    pub async fn register<S: Into<String>>(
        &self,
        name: &str,
        addresses: impl IntoIterator<Item = S>,
    ) -> Result<EtcdRegistration, Status> {
        let addresses: Vec<String> = addresses.into_iter().map(Into::into).collect();
        let value = json!({ "addresses": addresses }).to_string();
        if let Err(why) = record(name, "", value.as_bytes(), "this registration") {
            return Err(Status::invalid_argument(format!(
                "cannot register {name:?} in etcd: {why}; give the URLs clients should use \
                 (quic://…, tcp://…)"
            )));
        }
        let loopback = addresses
            .iter()
            .filter_map(|url| match url.parse::<crate::transport::Endpoint>() {
                Ok(
                    crate::transport::Endpoint::Tcp(host_port)
                    | crate::transport::Endpoint::Quic { host_port, .. },
                ) => Some(host_port),
                _ => None,
            })
            .any(|host_port| {
                host_port.starts_with("127.")
                    || host_port.starts_with("[::1]")
                    || host_port.starts_with("localhost:")
            });
        if loopback {
            tracing::warn!(
                %name,
                ?addresses,
                "registering a loopback address in etcd: clients on other hosts will dial their \
                 own; register an address they can reach (the server's routable IP or name)"
            );
        }
        let lease = Arc::new(AtomicI64::new(0));
        let (first, key) = self.grant_and_put(name, &value, &lease).await?;
        tracing::info!(%name, %key, lease = first, "registered in etcd");
        let key = Arc::new(Mutex::new(key));
        let keeper = tokio::spawn(keep_alive(
            self.clone(),
            name.to_owned(),
            value,
            lease.clone(),
            key.clone(),
        ));
        Ok(EtcdRegistration {
            etcd: self.clone(),
            name: name.to_owned(),
            lease,
            key,
            keeper,
        })
    }

    /// A new lease, stored in `slot` as soon as it is granted (so that a
    /// revoke never misses it), and the record under it.
    async fn grant_and_put(
        &self,
        name: &str,
        value: &str,
        slot: &AtomicI64,
    ) -> Result<(i64, String), Status> {
        let granted = self
            .call("/v3/lease/grant", json!({"TTL": self.lease_ttl.as_secs()}))
            .await?;
        let lease = granted.get("ID").and_then(int).ok_or_else(|| {
            Status::unavailable(format!(
                "{} granted a lease without an ID: {granted}",
                self.describe()
            ))
        })?;
        slot.store(lease, Ordering::Release);
        let key = format!("{}{lease:016x}", self.dir(name));
        self.call(
            "/v3/kv/put",
            json!({
                "key": BASE64.encode(&key),
                "value": BASE64.encode(value),
                "lease": lease.to_string(),
            }),
        )
        .await?;
        Ok((lease, key))
    }

    /// Renews `lease`; its remaining TTL in seconds (0: the lease is gone).
    async fn renew(&self, lease: i64) -> Result<i64, Status> {
        let mut failures = Vec::new();
        for addr in self.endpoints.iter() {
            let body = json!({ "ID": lease.to_string() });
            let answer = async {
                let mut answer =
                    http::post(addr, "/v3/lease/keepalive", &body, REQUEST_TIMEOUT).await?;
                tokio::time::timeout(REQUEST_TIMEOUT, answer.next_line())
                    .await
                    .map_err(|_| HttpError::Timeout {
                        addr: addr.clone(),
                        timeout: REQUEST_TIMEOUT,
                    })?
            };
            match answer.await {
                Ok(Some(line)) if line.get("error").is_some() => {
                    failures.push(format!("{addr} answered {line}"));
                }
                Ok(Some(line)) => {
                    return Ok(line
                        .get("result")
                        .and_then(|r| r.get("TTL"))
                        .and_then(int)
                        .unwrap_or(0));
                }
                Ok(None) => failures.push(format!("{addr} ended the keep-alive without a word")),
                Err(err) => failures.push(err.to_string()),
            }
        }
        Err(Status::unavailable(format!(
            "renewing lease {lease:x} at {} failed ({})",
            self.describe(),
            failures.join("; ")
        )))
    }

    /// A receiver of `name`'s change count, starting its watch once.
    fn subscribe(&self, name: &str) -> watch::Receiver<u64> {
        let mut watches = lock(&self.state.watches);
        if let Some(sender) = watches.get(name) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(0);
        let Some(alive) = self.state.alive.as_ref().map(watch::Sender::subscribe) else {
            return receiver;
        };
        tokio::spawn(watch_name(
            self.endpoints.clone(),
            self.dir(name),
            sender.clone(),
            alive,
        ));
        watches.insert(name.to_owned(), sender);
        receiver
    }
}

/// Watches the keys under `dir` for as long as the [`Etcd`] lives, bumping
/// `changes` when the watch is (re)established and at every event.
async fn watch_name(
    endpoints: Arc<[String]>,
    dir: String,
    changes: watch::Sender<u64>,
    mut alive: watch::Receiver<()>,
) {
    let request = json!({"create_request": {
        "key": BASE64.encode(&dir),
        "range_end": BASE64.encode(prefix_end(&dir)),
    }});
    loop {
        let mut problems = Vec::new();
        for addr in endpoints.iter() {
            let watched = async {
                let mut answer = http::post(addr, "/v3/watch", &request, REQUEST_TIMEOUT).await?;
                while let Some(line) = answer.next_line().await? {
                    let result = line.get("result").unwrap_or(&line);
                    if let Some(error) = line.get("error") {
                        return Ok(format!("etcd ended the watch: {error}"));
                    }
                    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
                        return Ok(format!("etcd cancelled the watch: {result}"));
                    }
                    // Established (what changed before it is looked up
                    // now) or an event.
                    changes.send_modify(|count| *count += 1);
                }
                Ok::<_, HttpError>("etcd closed the watch".to_owned())
            };
            tokio::select! {
                ended = watched => problems.push(match ended {
                    Ok(why) => why,
                    Err(err) => err.to_string(),
                }),
                _ = alive.changed() => return,
            }
        }
        tracing::warn!(
            %dir,
            problems = %problems.join("; "),
            "the etcd watch failed; opening it again in 1 s (channels still look the name up at every resolve_interval)"
        );
        tokio::select! {
            () = tokio::time::sleep(WATCH_RETRY) => {}
            _ = alive.changed() => return,
        }
    }
}

/// Keeps a registration's lease alive; registers again under a new lease
/// when the old one is gone (etcd lost it, or it expired while etcd was
/// unreachable).
async fn keep_alive(
    etcd: Etcd,
    name: String,
    value: String,
    lease: Arc<AtomicI64>,
    key: Arc<Mutex<String>>,
) {
    let every = (etcd.lease_ttl / 3).max(Duration::from_millis(300));
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let current = lease.load(Ordering::Acquire);
        // A renewal that takes longer than its period is a failed one: the
        // next starts while the lease still has a third of its TTL.
        let renewed = tokio::time::timeout(every, etcd.renew(current))
            .await
            .unwrap_or_else(|_| {
                Err(Status::unavailable(format!(
                    "renewing lease {current:x} took over {every:?}"
                )))
            });
        wait = match renewed {
            Ok(ttl) if ttl > 0 => every,
            Ok(_) => {
                tracing::warn!(%name, lease = current, "the etcd lease is gone; registering again");
                match etcd.grant_and_put(&name, &value, &lease).await {
                    Ok((_, new_key)) => {
                        *lock(&key) = new_key;
                        every
                    }
                    Err(status) => {
                        tracing::warn!(%name, %status, "registering again in etcd failed; retrying");
                        Duration::from_millis(500)
                    }
                }
            }
            Err(status) => {
                tracing::warn!(%name, %status, "renewing the etcd lease failed; retrying");
                Duration::from_millis(500)
            }
        };
    }
}

impl Resolver for Etcd {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(self.lookup(name))
    }

    fn skipped(&self, name: &str) -> Vec<String> {
        lock(&self.state.skipped)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    fn changed<'a>(&'a self, name: &'a str) -> Option<ChangedFuture<'a>> {
        let mut changes = self.subscribe(name);
        Some(Box::pin(async move {
            if changes.changed().await.is_err() {
                // No watch (the Etcd is going away): no news, ever.
                std::future::pending::<()>().await;
            }
        }))
    }
}

/// One replica's record in etcd, made by [`Etcd::register`]. Its lease is
/// kept alive in the background; [`revoke`](Self::revoke) removes the
/// record at once, and dropping it stops the keep-alive (the record goes
/// when the lease expires, as when the server dies). Handed to
/// [`ServerHandle::withdraw_on_shutdown`](crate::ServerHandle::withdraw_on_shutdown),
/// it is revoked when the server starts to drain.
#[derive(Debug)]
pub struct EtcdRegistration {
    etcd: Etcd,
    name: String,
    lease: Arc<AtomicI64>,
    key: Arc<Mutex<String>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl EtcdRegistration {
    /// The key the record is under now (it changes if the server had to
    /// register again under a new lease).
    pub fn key(&self) -> String {
        lock(&self.key).clone()
    }

    /// The lease the record is bound to now.
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    /// Stops the keep-alive and revokes the lease: the record is gone when
    /// this returns `Ok`. UNAVAILABLE if etcd cannot be reached (the record
    /// then goes when its lease expires).
    pub async fn revoke(self) -> Result<(), Status> {
        self.keeper.abort();
        let lease = self.lease();
        match self
            .etcd
            .call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
        {
            Ok(_) => {
                tracing::info!(name = %self.name, lease, "withdrawn from etcd");
                Ok(())
            }
            // Already expired: the record is gone too.
            Err(status) if status.code() == crate::protocol::status::Code::NotFound => Ok(()),
            Err(status) => Err(status),
        }
    }
}

impl Drop for EtcdRegistration {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Registration for EtcdRegistration {
    fn withdraw(self: Box<Self>) -> WithdrawFuture {
        Box::pin(async move {
            let name = self.name.clone();
            if let Err(status) = self.revoke().await {
                tracing::warn!(%name, %status, "could not withdraw from etcd; the record goes when its lease expires");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::status::Code;

    #[test]
    fn endpoints_are_checked() {
        let etcd = Etcd::new("http://127.0.0.1:2379, 10.0.0.2:2379/").unwrap();
        assert_eq!(&*etcd.endpoints, ["127.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(
            Etcd::new("https://e:2379").unwrap_err().code(),
            Code::FailedPrecondition
        );
        for bad in ["", "http://etcd", "http://:2379", "http://e:2379/v3"] {
            assert_eq!(
                Etcd::new(bad).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end("/s/calc/"), b"/s/calc0");
        assert_eq!(prefix_end(""), [0]);
    }

    #[test]
    fn records_that_are_not_replicas_say_why() {
        let ok = record("calc", "k", br#"{"addresses":["tcp://h:1"]}"#, "etcd").unwrap();
        assert_eq!(ok.urls(), ["tcp://h:1"]);
        assert!(ok.source.contains("key k"), "{}", ok.source);
        for (value, why) in [
            (&b"tcp://h:1"[..], "not JSON"),
            (br#"{"addr":[]}"#, "no \"addresses\""),
            (br#"{"addresses":[1]}"#, "not a string"),
            (br#"{"addresses":[]}"#, "no address"),
            (br#"{"addresses":["shm:///x"]}"#, "shm"),
        ] {
            let err = record("calc", "k", value, "etcd").unwrap_err();
            assert!(err.contains(why), "{err} lacks {why}");
        }
    }
}
