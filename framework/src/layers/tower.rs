//! The tower bridge, both ways: a `tower::Layer` as a switchyard layer
//! ([`TowerLayer`]), and a switchyard client as a `tower::Service`
//! ([`ClientService`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use switchyard::layers::tower::{ClientService, TowerLayer};
//! use tower::ServiceExt;
//!
//! # #[switchyard::service] pub trait Inventory { async fn get(&self, id: u64) -> u64; }
//! # struct Store; impl Inventory for Store { async fn get(&self, id: u64) -> u64 { id } }
//! # async fn run() -> Result<(), switchyard::Status> {
//! // Any tower layer over `TowerRequest`s, as a server's (or channel's) layer:
//! let server = switchyard::Server::builder()
//!     .layer(TowerLayer::new(
//!         "rate",
//!         tower::limit::RateLimitLayer::new(100, Duration::from_secs(1)),
//!     ))
//!     .add_service(InventoryServer::new(Store))
//!     .start()
//!     .await?;
//! // A client as a tower service: the request is the call to make.
//! let client = InventoryClient::new(switchyard::Channel::connect("inventory").await?);
//! let seven = ClientService::new(client)
//!     .oneshot(|client: InventoryClient| async move { client.get(7).await })
//!     .await?;
//! # let _ = (server, seven);
//! # Ok(())
//! # }
//! ```
//!
//! # What tower's model loses
//!
//! A tower service sees one request and one response. Through the bridge,
//! a tower layer sees the [`Call`] (its method, metadata, deadline) as the
//! request and the [`Response`] as the response; it does not see a
//! stream's messages (they pass beside every layer). The call's deadline
//! still holds: it covers the whole chain, a tower layer included, so a
//! tower timeout longer than the deadline never fires, and a tower layer
//! that waits (a rate limit's `poll_ready`) waits at most until the
//! deadline. A tower service is driven through `&mut self`: the bridge
//! keeps it behind an async lock, held while the service gets ready and
//! starts the call (not while the call runs), so a service that waits for
//! readiness (a rate limit) makes the calls behind it wait in turn, as
//! tower's `Buffer` would. tower's own errors come back as a [`Status`]:
//! a `Status` as itself, a load shed as UNAVAILABLE, a tower timeout as
//! DEADLINE_EXCEEDED, anything else as UNKNOWN naming the layer.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, select};
use tokio::sync::oneshot;

use super::{Call, Layer, LayerFuture, Next, Response};
use crate::protocol::status::{Code, Status};

/// What a tower layer behind [`TowerLayer`] gets as its request: the call,
/// and the way back into the switchyard chain.
#[derive(Debug)]
pub struct TowerRequest {
    call: Call,
    back: oneshot::Sender<Handoff>,
}

impl TowerRequest {
    /// The call, as switchyard layers see it.
    pub fn call(&self) -> &Call {
        &self.call
    }

    /// The call, to change (its metadata).
    pub fn call_mut(&mut self) -> &mut Call {
        &mut self.call
    }
}

/// A call handed back from the tower stack to the switchyard chain, and
/// where its outcome goes.
#[derive(Debug)]
struct Handoff {
    call: Call,
    outcome: oneshot::Sender<Result<Response, Status>>,
}

/// The innermost tower service of a [`TowerLayer`]: hands the call back to
/// the switchyard chain (the next layers, then the handler or the call).
#[derive(Clone, Copy, Debug, Default)]
pub struct HandBack;

impl tower::Service<TowerRequest> for HandBack {
    type Response = Response;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: TowerRequest) -> Self::Future {
        let (outcome, answer) = oneshot::channel();
        let handed = request.back.send(Handoff {
            call: request.call,
            outcome,
        });
        Box::pin(async move {
            if handed.is_err() {
                return Err(Status::cancelled(
                    "the call ended before the tower layer ran it",
                ));
            }
            answer
                .await
                .unwrap_or_else(|_| Err(Status::cancelled("the call ended")))
        })
    }
}

/// A `tower::Layer` as a switchyard layer: the tower layer wraps
/// [`HandBack`], and each call goes through the service it makes.
pub struct TowerLayer<S> {
    name: String,
    service: Arc<tokio::sync::Mutex<S>>,
}

impl<S> std::fmt::Debug for TowerLayer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerLayer")
            .field("name", &self.name)
            .finish()
    }
}

impl<S> TowerLayer<S>
where
    S: tower::Service<TowerRequest, Response = Response> + Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send,
{
    /// The switchyard layer named `name` (as the debug endpoint lists it)
    /// that runs calls through `layer`.
    pub fn new<L>(name: impl Into<String>, layer: L) -> Self
    where
        L: tower::Layer<HandBack, Service = S>,
    {
        Self {
            name: name.into(),
            service: Arc::new(tokio::sync::Mutex::new(layer.layer(HandBack))),
        }
    }

    /// Readies the service and starts `request` through it.
    async fn start(&self, request: TowerRequest) -> Result<S::Future, Status> {
        let mut service = self.service.lock().await;
        poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(|err| self.status(err.into()))?;
        Ok(service.call(request))
    }

    /// A tower error as a status.
    fn status(&self, err: tower::BoxError) -> Status {
        let err = match err.downcast::<Status>() {
            Ok(status) => return *status,
            Err(err) => err,
        };
        if err.is::<tower::load_shed::error::Overloaded>() {
            return Status::unavailable(format!(
                "shed by the tower layer {}: the service is overloaded; try again later or on \
                 another replica",
                self.name
            ));
        }
        if err.is::<tower::timeout::error::Elapsed>() {
            return Status::deadline_exceeded(format!(
                "the tower layer {} timed the call out",
                self.name
            ));
        }
        Status::new(
            Code::Unknown,
            format!("the tower layer {}: {err}", self.name),
        )
    }
}

impl<S> Layer for TowerLayer<S>
where
    S: tower::Service<TowerRequest, Response = Response> + Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        LayerFuture::new(async move {
            let (back, handed) = oneshot::channel();
            let started = self.start(TowerRequest { call, back }).await?;
            let tower =
                Box::pin(async move { started.await.map_err(|err| self.status(err.into())) });
            // The rest of the chain runs when the tower stack hands the
            // call back (a stack that answers itself never does).
            let rest = Box::pin(async move {
                if let Ok(Handoff { call, outcome }) = handed.await {
                    let _ = outcome.send(next.run(call).await);
                }
            });
            match select(tower, rest).await {
                Either::Left((result, _rest)) => result,
                Either::Right(((), tower)) => tower.await,
            }
        })
    }
}

/// A switchyard client as a `tower::Service`, so tower's middleware
/// (retry, timeout, rate limit, load shed, ...) can wrap its calls. A
/// request is the call to make: a function of the client to the call's
/// future, such as `|client: InventoryClient| async move { client.get(7).await }`
/// (cloneable when what it holds is, as tower's retry needs).
#[derive(Clone, Debug)]
pub struct ClientService<C> {
    client: C,
}

impl<C> ClientService<C> {
    /// The service of `client` (a generated `FooClient`, or any clonable
    /// handle).
    pub fn new(client: C) -> Self {
        Self { client }
    }
}

impl<C, F, Fut, T> tower::Service<F> for ClientService<C>
where
    C: Clone,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    type Response = T;
    type Error = Status;
    type Future = Fut;

    /// Always ready: the channel queues and bounds calls itself (and says
    /// RESOURCE_EXHAUSTED when it cannot take one).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: F) -> Fut {
        call(self.client.clone())
    }
}
