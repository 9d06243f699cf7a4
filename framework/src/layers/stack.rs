//! A server's or a channel's layers in order, running a call through them
//! ([`Next`]), and what the debug endpoint shows of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use super::{Call, Layer, Response, Side};
use crate::protocol::status::Status;

/// What a call through a layer comes to.
type Outcome = Result<Response, Status>;

/// The future a layer returns: [`LayerFuture::new`] around an `async`
/// block, [`Next::run`]'s, or [`refuse`](super::refuse)'s.
#[must_use = "a layer's future does nothing unless awaited"]
pub struct LayerFuture<'a>(Repr<'a>);

enum Repr<'a> {
    /// A layer's own future.
    Boxed(Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>),
    /// The end of the chain, kept in the chain's own frame (no allocation).
    End(Pin<&'a mut (dyn Future<Output = Outcome> + Send + 'a)>),
    /// An answer already known (a refusal).
    Ready(Option<Outcome>),
}

impl<'a> LayerFuture<'a> {
    /// A layer's future: `LayerFuture::new(async move { ... })`.
    pub fn new(future: impl Future<Output = Outcome> + Send + 'a) -> Self {
        Self(Repr::Boxed(Box::pin(future)))
    }

    /// A future that answers `outcome` at once.
    pub fn ready(outcome: Outcome) -> Self {
        Self(Repr::Ready(Some(outcome)))
    }
}

impl<'a> From<Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>> for LayerFuture<'a> {
    fn from(future: Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>) -> Self {
        Self(Repr::Boxed(future))
    }
}

impl Future for LayerFuture<'_> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outcome> {
        match &mut self.0 {
            Repr::Boxed(future) => future.as_mut().poll(cx),
            Repr::End(future) => future.as_mut().poll(cx),
            Repr::Ready(outcome) => std::task::Poll::Ready(outcome.take().unwrap_or_else(|| {
                Err(Status::internal(
                    "a layer's future was polled after it finished",
                ))
            })),
        }
    }
}

impl std::fmt::Debug for LayerFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Repr::Boxed(_) => "boxed",
            Repr::End(_) => "end",
            Repr::Ready(_) => "ready",
        };
        f.debug_tuple("LayerFuture").field(&kind).finish()
    }
}

/// The rest of the chain: the layers after this one, then the handler (on
/// a server) or the call itself (on a channel).
pub struct Next<'a> {
    stack: &'a LayerStack,
    index: usize,
    depth: &'a AtomicUsize,
    end: &'a mut (dyn FnMut(Call) -> LayerFuture<'a> + Send),
}

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("side", &self.stack.side)
            .field("layers_left", &(self.stack.layers.len() - self.index))
            .finish()
    }
}

impl<'a> Next<'a> {
    /// Calls on: the next layer, or the handler or call itself after the
    /// last.
    pub fn run(self, call: Call) -> LayerFuture<'a> {
        match self.stack.layers.get(self.index) {
            Some(layer) => {
                self.depth.store(self.index + 1, Relaxed);
                layer.layer.call(
                    call,
                    Next {
                        stack: self.stack,
                        index: self.index + 1,
                        depth: self.depth,
                        end: self.end,
                    },
                )
            }
            None => {
                self.depth.store(self.stack.layers.len() + 1, Relaxed);
                (self.end)(call)
            }
        }
    }
}

/// Layers as a builder collects them.
#[derive(Clone, Default)]
pub(crate) struct LayerList(Vec<Arc<dyn Layer>>);

impl std::fmt::Debug for LayerList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|layer| layer.name()))
            .finish()
    }
}

impl LayerList {
    pub(crate) fn push(&mut self, layer: Arc<dyn Layer>) {
        self.0.push(layer);
    }

    /// The running stack of a server or channel named `owner`, registered
    /// with the debug endpoint while it lives; `None` without layers.
    pub(crate) fn build(&self, side: Side, owner: &str) -> Layers {
        if self.0.is_empty() {
            return Layers(None);
        }
        let stack = Arc::new(LayerStack {
            side,
            owner: owner.to_owned(),
            layers: self
                .0
                .iter()
                .map(|layer| Entry {
                    name: layer.name().to_owned(),
                    layer: Arc::clone(layer),
                    rejected: AtomicU64::new(0),
                })
                .collect(),
        });
        let mut live = lock(registry());
        live.retain(|weak| weak.strong_count() > 0);
        live.push(Arc::downgrade(&stack));
        Layers(Some(stack))
    }
}

/// The layers a server or channel runs its calls through (`None`: none,
/// and calls take no detour).
#[derive(Clone, Debug, Default)]
pub(crate) struct Layers(Option<Arc<LayerStack>>);

impl Layers {
    pub(crate) fn stack(&self) -> Option<&Arc<LayerStack>> {
        self.0.as_ref()
    }
}

/// Running layers with their rejection counts.
pub(crate) struct LayerStack {
    side: Side,
    owner: String,
    layers: Vec<Entry>,
}

struct Entry {
    name: String,
    layer: Arc<dyn Layer>,
    rejected: AtomicU64,
}

impl std::fmt::Debug for LayerStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStack")
            .field("side", &self.side)
            .field("owner", &self.owner)
            .field(
                "layers",
                &self.layers.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl LayerStack {
    /// Runs `call` through the layers, then `end`. A call that fails
    /// without reaching `end` counts as a rejection by the innermost layer
    /// it entered: that one answered instead of calling on.
    /// `stack` is the stack itself or what owns it (a server's call
    /// future owns an `Arc` of it; a channel's borrows it).
    pub(crate) async fn run<S, F, Fut>(stack: S, call: Call, end: F) -> Result<Response, Status>
    where
        S: std::ops::Deref<Target = Self> + Send,
        F: FnOnce(Call) -> Fut + Send,
        Fut: Future<Output = Result<Response, Status>> + Send,
    {
        let depth = AtomicUsize::new(0);
        // The end's future lives here, in this call's frame: reaching the
        // end allocates nothing.
        let mut slot = std::pin::pin!(None::<Fut>);
        let mut slot = Some(slot.as_mut());
        let mut end = Some(end);
        let mut end_fn = move |call: Call| -> LayerFuture<'_> {
            match (end.take(), slot.take()) {
                (Some(end), Some(mut slot)) => {
                    slot.set(Some(end(call)));
                    match slot.as_pin_mut() {
                        Some(future) => LayerFuture(Repr::End(future)),
                        None => {
                            super::refuse(Status::internal("the end of a layer chain vanished"))
                        }
                    }
                }
                // `Next` is consumed by `run`, so the end runs once.
                _ => super::refuse(Status::internal("a layer called on twice")),
            }
        };
        // Kept across the wait as the descriptor (one word; its name is
        // two): this future is boxed per call on a server, where every
        // word counts against glibc's per-thread cache of 1032 bytes.
        let method = call.method();
        let result = Next {
            stack: &stack,
            index: 0,
            depth: &depth,
            end: &mut end_fn,
        }
        .run(call)
        .await;
        if let Err(status) = &result {
            let entered = depth.load(Relaxed);
            if let Some(entry) = entered.checked_sub(1).and_then(|at| stack.layers.get(at)) {
                entry.rejected.fetch_add(1, Relaxed);
                tracing::debug!(
                    layer = %entry.name,
                    side = stack.side.as_str(),
                    method = method.full_name,
                    %status,
                    "a layer refused the call"
                );
            }
        }
        result
    }

    /// Serves a call a server received through the layers: at their end
    /// the handler starts, under the context the layers leave, and
    /// `complete` turns its future into the reply (a stream result's pump,
    /// say).
    pub(crate) fn serve<S, F>(
        stack: S,
        ctx: crate::context::Context,
        request: crate::service::Request,
        service: Arc<dyn crate::service::Service>,
        complete: impl FnOnce(crate::service::HandlerFuture) -> F + Send,
    ) -> impl Future<Output = Result<crate::service::Reply, Status>> + Send
    where
        S: std::ops::Deref<Target = Self> + Send,
        F: Future<Output = Result<crate::service::Reply, Status>> + Send,
    {
        use futures_util::FutureExt as _;
        use futures_util::future::{Either, ready};
        let method = ctx.method();
        // Combinators, not `async` blocks: a block keeps its captures
        // beside the future it awaits, and this future is boxed per call
        // (past glibc's per-thread cache of 1032 bytes, every call would
        // take the slow malloc).
        let end = move |call: Call| match call.into_server() {
            None => Either::Right(ready(Err(Status::internal(
                "a server layer lost the request",
            )))),
            Some((ctx, request)) => match service.call(method.id, request) {
                None => Either::Right(ready(Err(Status::internal(format!(
                    "{} is routed to a service that does not have it",
                    method.full_name
                ))))),
                Some(handler) => Either::Left(
                    ctx.scope(complete(handler))
                        .map(|reply| reply.map(Response::reply)),
                ),
            },
        };
        Self::run(stack, Call::server(ctx, request), end)
            .map(move |response| response.and_then(|r| r.into_reply(method.full_name)))
    }

    /// What the debug endpoint shows of it.
    fn info(&self) -> crate::debug::model::LayerStackInfo {
        crate::debug::model::LayerStackInfo {
            side: self.side.as_str().to_owned(),
            owner: self.owner.clone(),
            layers: self
                .layers
                .iter()
                .map(|entry| crate::debug::model::LayerInfo {
                    name: entry.name.clone(),
                    rejected: entry.rejected.load(Relaxed),
                })
                .collect(),
        }
    }
}

fn registry() -> &'static Mutex<Vec<Weak<LayerStack>>> {
    static LIVE: OnceLock<Mutex<Vec<Weak<LayerStack>>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every live server's and channel's layers, in the order they were made.
pub(crate) fn snapshot() -> Vec<crate::debug::model::LayerStackInfo> {
    lock(registry())
        .iter()
        .filter_map(Weak::upgrade)
        .map(|stack| stack.info())
        .collect()
}

bench_internal! {
    /// For the bench lab: runs `calls` calls of `method` through a
    /// channel's stack of `layers` to an end that answers at once, polled
    /// in place (no runtime), and returns the time they took: the cost of
    /// the chain itself, per call. Layers that wait are not for it (a call
    /// that does not finish at once is counted as done).
    pub fn bench_chain(
        layers: &[Arc<dyn Layer>],
        method: &'static crate::descriptor::MethodDescriptor,
        calls: u64,
    ) -> std::time::Duration {
        use futures_util::FutureExt;
        let mut list = LayerList::default();
        for layer in layers {
            list.push(Arc::clone(layer));
        }
        let built = list.build(Side::Client, "bench-chain");
        let started = std::time::Instant::now();
        for _ in 0..calls {
            let call = Call::client(method, None, crate::Metadata::new(), None);
            let answered = match built.stack() {
                Some(stack) => LayerStack::run(&**stack, call, |_| async { Ok(Response::sent()) })
                    .now_or_never(),
                None => {
                    std::hint::black_box(call);
                    Some(Ok(Response::sent()))
                }
            };
            std::hint::black_box(answered);
        }
        started.elapsed()
    }
}
