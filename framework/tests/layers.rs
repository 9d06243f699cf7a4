//! Layers over the in-memory link, in one process: their order on both
//! sides, a layer that refuses (the handler never runs) or panics (INTERNAL,
//! the server goes on), metadata they set, the deadline over them, the
//! built-in limits under load (the excess refused, none lost), streams and
//! one-way calls through them, a layer answering from its own cache, and
//! what the debug views show (rejections by layer; never a token).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchyard::layers::{
    self, Bearer, Call, ConcurrencyLimit, Layer, LayerFuture, LoadShed, Next, RateLimit,
    RequireBearer, Response,
};
use switchyard::transport::memory;
use switchyard::{Channel, ChannelBuilder, Code, Server, ServerBuilder, Status, Streaming};

/// A service to put layers in front of.
#[switchyard::service]
pub trait Shop {
    /// `a + b`; logs "handler".
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Waits until the test releases it; counts itself in flight.
    async fn hold(&self) -> u64;
    /// The metadata entry `key` as the handler sees it.
    async fn metadata(&self, key: String) -> Option<String>;
    /// `0..count`.
    async fn count(&self, count: u64) -> Streaming<u64>;
    /// Counts a note.
    #[switchyard(oneway)]
    async fn note(&self, text: String);
}

struct Impl {
    log: Arc<Mutex<Vec<String>>>,
    handled: AtomicU64,
    in_flight: AtomicU64,
    /// `hold` calls wait for a permit of it.
    release: tokio::sync::Semaphore,
    notes: AtomicU64,
}

impl Default for Impl {
    fn default() -> Self {
        Self {
            log: Arc::default(),
            handled: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            release: tokio::sync::Semaphore::new(0),
            notes: AtomicU64::new(0),
        }
    }
}

impl Shop for Impl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        self.handled.fetch_add(1, Ordering::SeqCst);
        self.log.lock().unwrap().push("handler".into());
        a + b
    }

    async fn hold(&self) -> u64 {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let permit = self.release.acquire().await.unwrap();
        permit.forget();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        1
    }

    async fn metadata(&self, key: String) -> Option<String> {
        let ctx = switchyard::Context::current()?;
        ctx.metadata().get_str(&key).map(str::to_owned)
    }

    async fn count(&self, count: u64) -> Streaming<u64> {
        self.handled.fetch_add(1, Ordering::SeqCst);
        Streaming::from_iter(0..count)
    }

    async fn note(&self, _text: String) {
        self.notes.fetch_add(1, Ordering::SeqCst);
    }
}

/// A layer that writes `<name>>` on the way in and `<name><` on the way out.
struct Recording {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Layer for Recording {
    fn name(&self) -> &str {
        self.name
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        LayerFuture::new(async move {
            self.log.lock().unwrap().push(format!("{}>", self.name));
            let result = next.run(call).await;
            self.log.lock().unwrap().push(format!("{}<", self.name));
            result
        })
    }
}

/// A server with `server`'s layers and a channel with `client`'s, over the
/// in-memory link.
async fn serve(
    server: impl FnOnce(ServerBuilder) -> ServerBuilder,
    client: impl FnOnce(ChannelBuilder) -> ChannelBuilder,
) -> (switchyard::ServerHandle, ShopClient, Arc<Impl>) {
    let service = Arc::new(Impl::default());
    let builder = Server::builder()
        .add_service(ShopServer::from_arc(Arc::clone(&service)))
        .no_unix()
        .unpublished()
        .message_queues(false);
    let handle = server(builder).start().await.unwrap();
    let (client_end, server_end) = memory::pair();
    handle.serve_link(server_end);
    let channel = client(Channel::builder())
        .connect_link(client_end)
        .await
        .unwrap();
    (handle, ShopClient::new(channel), service)
}

/// The rejections the debug snapshot counts for the layer `name` of the
/// stack whose owner is `owner`.
fn rejected(owner: &str, name: &str) -> u64 {
    switchyard::debug::snapshot()
        .layers
        .iter()
        .filter(|stack| stack.owner == owner)
        .flat_map(|stack| &stack.layers)
        .filter(|layer| layer.name == name)
        .map(|layer| layer.rejected)
        .sum()
}

#[tokio::test]
async fn layers_run_in_the_order_they_were_added_on_both_sides() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let recording = |name| Recording {
        name,
        log: Arc::clone(&log),
    };
    let (server, client, service) = serve(
        |s| s.layer(recording("s1")).layer(recording("s2")),
        |c| c.layer(recording("c1")).layer(recording("c2")),
    )
    .await;
    *service.log.lock().unwrap() = Vec::new();
    // The handler writes into the same log as the layers.
    let shared = Arc::clone(&service.log);
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    let mut order = log.lock().unwrap().clone();
    let handler_at = order.iter().position(|e| e == "s2>").unwrap() + 1;
    order.insert(handler_at, shared.lock().unwrap().join(","));
    assert_eq!(
        order,
        [
            "c1>", "c2>", "s1>", "s2>", "handler", "s2<", "s1<", "c2<", "c1<"
        ],
        "the first added is the outermost, on each side"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_layer_that_refuses_answers_for_the_handler_and_is_counted() {
    let refuse_holds = layers::from_fn("no-hold-test-a", |call| {
        if call.method().name == "hold" {
            Err(Status::permission_denied("hold is closed today"))
        } else {
            Ok(())
        }
    });
    let (server, client, service) = serve(
        |s| {
            s.layer(refuse_holds)
                .layer(layers::from_fn("after-test-a", |_| Ok(())))
        },
        |c| c,
    )
    .await;
    let err = client.hold().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("hold is closed today"), "{err}");
    assert_eq!(service.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(client.add(1, 1).await.unwrap(), 2, "other methods pass");
    assert_eq!(rejected("Shop", "no-hold-test-a"), 1);
    assert_eq!(rejected("Shop", "after-test-a"), 0, "it never saw the call");
    let metrics = switchyard::debug::render_prometheus(&switchyard::debug::snapshot());
    assert!(
        metrics.contains(
            "switchyard_layer_rejections_total{side=\"server\",owner=\"Shop\",layer=\"no-hold-test-a\"} 1"
        ),
        "{metrics}"
    );
    let page = switchyard::debug::render_html(&switchyard::debug::snapshot());
    assert!(page.contains("no-hold-test-a"), "the page lists the layer");
    server.shutdown().await;
}

/// Panics on calls that carry a `boom` metadata entry.
struct Boom;

impl Layer for Boom {
    fn name(&self) -> &str {
        "boom"
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        if call.metadata().get("boom").is_some() {
            panic!("the boom layer blew up");
        }
        next.run(call)
    }
}

#[tokio::test]
async fn a_layer_that_panics_fails_its_call_with_internal_and_the_server_goes_on() {
    let (server, client, _) = serve(|s| s.layer(Boom), |c| c).await;
    let err = client
        .with_metadata("boom", "1")
        .add(1, 2)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("the boom layer blew up"), "{err}");
    assert_eq!(client.add(1, 2).await.unwrap(), 3, "the server goes on");
    server.shutdown().await;
}

#[tokio::test]
async fn metadata_set_by_layers_reaches_the_other_side_and_the_handler() {
    let (server, client, _) = serve(
        |s| {
            s.layer(layers::from_fn("derive-user", |call| {
                let tenant = call
                    .metadata()
                    .get_str("tenant")
                    .unwrap_or("none")
                    .to_owned();
                call.metadata_mut()
                    .insert("user", format!("user-of-{tenant}"))
                    .map_err(|e| Status::internal(e.to_string()))
            }))
        },
        |c| {
            c.layer(layers::from_fn("tenant", |call| {
                call.metadata_mut()
                    .insert("tenant", "acme")
                    .map_err(|e| Status::internal(e.to_string()))
            }))
        },
    )
    .await;
    assert_eq!(
        client.metadata("tenant".into()).await.unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(
        client.metadata("user".into()).await.unwrap().as_deref(),
        Some("user-of-acme")
    );
    server.shutdown().await;
}

/// Waits `wait` before calling on.
struct Slow(Duration);

impl Layer for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        LayerFuture::new(async move {
            tokio::time::sleep(self.0).await;
            next.run(call).await
        })
    }
}

#[tokio::test]
async fn the_deadline_covers_the_layers_on_both_sides() {
    for slow_side in ["server", "client"] {
        let slow = Slow(Duration::from_secs(30));
        let (server, client, service) = if slow_side == "server" {
            serve(|s| s.layer(slow), |c| c).await
        } else {
            serve(|s| s, |c| c.layer(slow)).await
        };
        let started = Instant::now();
        let err = client
            .with_timeout(Duration::from_millis(200))
            .add(1, 1)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{slow_side}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{slow_side}: the call ended near its deadline, not after the layer"
        );
        assert_eq!(service.handled.load(Ordering::SeqCst), 0);
        drop(client);
        let t = Instant::now();
        server.shutdown().await;
        eprintln!("{slow_side}: shutdown took {:?}", t.elapsed());
    }
}

/// Waits until `check` holds (bounded).
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_concurrency_limit_answers_the_excess_at_once_and_loses_no_call() {
    const LIMIT: usize = 4;
    const CALLS: usize = 24;
    let (server, client, service) =
        serve(|s| s.layer(ConcurrencyLimit::per_method(LIMIT)), |c| c).await;
    let refused = Arc::new(AtomicU64::new(0));
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let client = client.clone();
            let refused = Arc::clone(&refused);
            tokio::spawn(async move {
                let result = client.hold().await;
                if let Err(status) = &result {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                    assert!(status.message().contains("concurrency limit"), "{status}");
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                result
            })
        })
        .collect();
    until("the limit's calls in flight and the rest refused", || {
        service.in_flight.load(Ordering::SeqCst) == LIMIT as u64
            && refused.load(Ordering::SeqCst) == (CALLS - LIMIT) as u64
    })
    .await;
    // Per method: another method is not held back.
    assert_eq!(client.add(2, 2).await.unwrap(), 4);
    service.release.add_permits(CALLS);
    let mut ok = 0;
    for call in calls {
        if call.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(
        ok, LIMIT,
        "every call ended: {LIMIT} served, the rest refused"
    );
    // The permits came back: the limit admits calls again.
    service.release.add_permits(1);
    assert_eq!(client.hold().await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn load_shed_answers_unavailable_beyond_its_calls_in_flight() {
    let (server, client, service) = serve(|s| s.layer(LoadShed::max_in_flight(1)), |c| c).await;
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.hold().await }
    });
    until("one call in flight", || {
        service.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let err = client.add(1, 1).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("shed"), "{err}");
    service.release.add_permits(1);
    held.await.unwrap().unwrap();
    assert_eq!(client.add(1, 1).await.unwrap(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_answers_calls_beyond_its_rate() {
    let (server, client, _) = serve(
        |s| s.layer(RateLimit::per_method(5, Duration::from_secs(3600))),
        |c| c,
    )
    .await;
    for i in 0..5 {
        assert_eq!(client.add(i, 1).await.unwrap(), i + 1);
    }
    let err = client.add(9, 9).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("rate limit of 5 calls"), "{err}");
    assert_eq!(
        client.metadata("x".into()).await.unwrap(),
        None,
        "per method: another method has its own budget"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_are_required_and_never_shown() {
    const TOKEN: &str = "tok-5b1d9c0e7a-never-shown";
    let (server, client, service) = serve(|s| s.layer(RequireBearer::new(TOKEN)), |c| c).await;
    let err = client.add(1, 1).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("needs a bearer token"), "{err}");
    let err = client
        .with_metadata("authorization", "Bearer tok-wrong-presented")
        .add(1, 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(
        !err.message().contains("tok-wrong-presented"),
        "a refusal never echoes the token: {err}"
    );
    assert_eq!(service.handled.load(Ordering::SeqCst), 0);
    server.shutdown().await;

    let (server, client, _) = serve(
        |s| s.layer(RequireBearer::new("old-token").or(TOKEN)),
        |c| c.layer(Bearer::new(TOKEN)).layer(layers::RequestLog::new()),
    )
    .await;
    assert_eq!(client.add(1, 1).await.unwrap(), 2, "either token is taken");
    assert_eq!(
        client.metadata("authorization".into()).await.unwrap(),
        Some(format!("Bearer {TOKEN}")),
        "the handler may read it"
    );
    let snapshot = switchyard::debug::snapshot();
    for (view, text) in [
        ("json", switchyard::debug::render_json(&snapshot)),
        ("page", switchyard::debug::render_html(&snapshot)),
        ("metrics", switchyard::debug::render_prometheus(&snapshot)),
        (
            "table",
            switchyard::debug::table::connections_table(&snapshot),
        ),
        ("layer debug", format!("{:?}", Bearer::new(TOKEN))),
    ] {
        assert!(!text.contains(TOKEN), "the {view} shows the token");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn streams_pass_through_layers_that_wrap_the_whole_call() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (server, client, _) = serve(
        |s| {
            s.layer(Recording {
                name: "s",
                log: Arc::clone(&log),
            })
        },
        |c| {
            c.layer(Recording {
                name: "c",
                log: Arc::clone(&log),
            })
        },
    )
    .await;
    let got: Vec<u64> = client
        .count(100)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    until("the server layer saw the stream end", || {
        log.lock().unwrap().len() == 4
    })
    .await;
    let log = log.lock().unwrap().clone();
    assert_eq!(log[0], "c>");
    assert!(log.contains(&"s<".to_owned()) && log.contains(&"c<".to_owned()));
    server.shutdown().await;

    // Refused before the stream: the client's stream ends with the status.
    let (server, client, service) = serve(
        |s| {
            s.layer(layers::from_fn("no-streams", |_| {
                Err(Status::permission_denied("no"))
            }))
        },
        |c| c,
    )
    .await;
    let mut stream = client.count(10).await.unwrap();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert_eq!(service.handled.load(Ordering::SeqCst), 0);
    server.shutdown().await;

    // Refused on the channel: the call fails before it is made.
    let (server, client, _) = serve(
        |s| s,
        |c| {
            c.layer(layers::from_fn("client-no", |_| {
                Err(Status::aborted("not from here"))
            }))
        },
    )
    .await;
    let err = client.count(10).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn one_way_calls_run_through_the_layers() {
    let (server, client, service) = serve(
        |s| {
            s.layer(layers::from_fn("no-spam-test", |call| {
                match call.request_payload().map(|p| p.len()) {
                    Some(len) if len > 64 => Err(Status::invalid_argument("too long a note")),
                    _ => Ok(()),
                }
            }))
        },
        |c| c,
    )
    .await;
    client.note("short".into()).await.unwrap();
    // Sent (no one waits for a one-way answer), but refused by the layer.
    client.note("x".repeat(200)).await.unwrap();
    until("both notes handled or refused", || {
        service.notes.load(Ordering::SeqCst) + rejected("Shop", "no-spam-test") >= 2
    })
    .await;
    assert_eq!(service.notes.load(Ordering::SeqCst), 1);
    assert_eq!(rejected("Shop", "no-spam-test"), 1);
    server.shutdown().await;
}

/// Answers `add` from what it saw before, without calling on.
#[derive(Default)]
struct Cache(Mutex<Option<Vec<u8>>>);

impl Layer for Cache {
    fn name(&self) -> &str {
        "cache"
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        if let Some(hit) = self.0.lock().unwrap().clone() {
            return LayerFuture::ready(Ok(Response::from_encoded(hit)));
        }
        LayerFuture::new(async move {
            let response = next.run(call).await?;
            let encoded = response.encoded().map(<[u8]>::to_vec);
            *self.0.lock().unwrap() = encoded;
            Ok(response)
        })
    }
}

#[tokio::test]
async fn a_layer_may_answer_with_an_encoded_result_on_either_side() {
    for side in ["client", "server"] {
        let (server, client, service) = if side == "client" {
            serve(|s| s, |c| c.layer(Cache::default())).await
        } else {
            serve(|s| s.layer(Cache::default()), |c| c).await
        };
        assert_eq!(client.add(20, 22).await.unwrap(), 42);
        assert_eq!(
            client.add(1, 1).await.unwrap(),
            42,
            "{side}: from the cache"
        );
        assert_eq!(service.handled.load(Ordering::SeqCst), 1, "{side}");
        server.shutdown().await;
    }
}

mod tower_bridge {
    use std::time::Duration;

    use switchyard::Code;
    use switchyard::layers::tower::{ClientService, TowerLayer};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_tower_rate_limit_holds_calls_to_its_rate_within_their_deadline() {
        let (server, client, service) = serve(
            |s| {
                s.layer(TowerLayer::new(
                    "tower-rate",
                    tower::limit::RateLimitLayer::new(2, Duration::from_secs(3600)),
                ))
            },
            |c| c,
        )
        .await;
        assert_eq!(client.add(1, 1).await.unwrap(), 2);
        assert_eq!(client.add(2, 2).await.unwrap(), 4);
        // The third waits for the next hour's budget: its deadline ends it.
        let err = client
            .with_timeout(Duration::from_millis(300))
            .add(3, 3)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        assert_eq!(service.handled.load(Ordering::SeqCst), 2);
        let listed = switchyard::debug::snapshot()
            .layers
            .iter()
            .any(|stack| stack.layers.iter().any(|l| l.name == "tower-rate"));
        assert!(listed, "the debug endpoint lists the bridged layer");
        drop(client);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn tower_load_shed_answers_unavailable_through_the_bridge() {
        let shed = tower::ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(1)
            .into_inner();
        let (server, client, service) =
            serve(|s| s.layer(TowerLayer::new("tower-shed", shed)), |c| c).await;
        let held = tokio::spawn({
            let client = client.clone();
            async move { client.hold().await }
        });
        until("one call in flight", || {
            service.in_flight.load(Ordering::SeqCst) == 1
        })
        .await;
        let err = client.add(1, 1).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(
            err.message().contains("shed by the tower layer tower-shed"),
            "{err}"
        );
        service.release.add_permits(1);
        held.await.unwrap().unwrap();
        assert_eq!(client.add(1, 1).await.unwrap(), 2, "a permit again");
        assert_eq!(rejected("Shop", "tower-shed"), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_client_is_a_tower_service() {
        let (server, client, _) = serve(|s| s, |c| c).await;
        let service = tower::ServiceBuilder::new()
            .concurrency_limit(4)
            .service(ClientService::new(client.clone()));
        let sum = service
            .clone()
            .oneshot(|client: ShopClient| async move { client.add(20, 22).await })
            .await
            .unwrap();
        assert_eq!(sum, 42);
        let err = ClientService::new(client)
            .oneshot(|client: ShopClient| async move {
                client.with_timeout(Duration::from_millis(50)).hold().await
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::DeadlineExceeded,
            "statuses pass as they are"
        );
        server.shutdown().await;
    }
}
