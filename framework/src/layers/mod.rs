//! Layers: middleware around every call a server serves or a channel makes.
//!
//! A [`Layer`] sees each call before the handler (on a server) or before
//! the call leaves (on a channel): its method, deadline, metadata, transport
//! and peer. It may change the metadata, answer with a [`Status`] instead of
//! calling on, or call on ([`Next::run`]) and look at what came back.
//!
//! ```no_run
//! use switchyard::layers::{self, Call, Layer, LayerFuture, Next};
//!
//! /// Counts the calls it sees.
//! #[derive(Default)]
//! struct Counting(std::sync::atomic::AtomicU64);
//!
//! impl Layer for Counting {
//!     fn name(&self) -> &str {
//!         "counting"
//!     }
//!
//!     fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
//!         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         next.run(call)
//!     }
//! }
//!
//! # async fn run() -> Result<(), switchyard::Status> {
//! let server = switchyard::Server::builder()
//!     .layer(layers::RequireBearer::from_env("API_TOKEN"))
//!     .layer(layers::ConcurrencyLimit::per_method(64))
//!     .layer(Counting::default());
//! let channel = switchyard::Channel::builder()
//!     .layer(layers::Bearer::from_env("API_TOKEN"))
//!     .connect("inventory")
//!     .await?;
//! # let _ = (server, channel);
//! # Ok(())
//! # }
//! ```
//!
//! # Order
//!
//! Layers run in the order they were added: the first one added sees the
//! call first and the result last (it is the outermost). On a server, the
//! handler runs inside the last one; on a channel, the call is sent from
//! inside the last one.
//!
//! # What a layer cannot do
//!
//! The deadline is the call's, not a layer's: a layer reads it
//! ([`Call::deadline`]) but cannot lift it, and the deadline covers the
//! layers too (a layer that waits past it ends the call with
//! DEADLINE_EXCEEDED). A layer that panics ends its call with INTERNAL; the
//! server goes on. A stream's messages pass beside the layers: on a server
//! a layer wraps the whole call (its result arrives when the stream has
//! ended); on a channel it wraps the opening of the stream.

mod auth;
mod call;
mod fn_layer;
mod limit;
mod log;
mod stack;
#[cfg(feature = "tower")]
pub mod tower;

pub use auth::{AUTHORIZATION, Bearer, RequireBearer, RequireIdentity};
pub use call::{Call, Response, Side};
pub use fn_layer::{FnLayer, from_fn};
pub use limit::{ConcurrencyLimit, LoadShed, RateLimit};
pub use log::RequestLog;
#[cfg(feature = "unstable-bench-internals")]
pub use stack::bench_chain;
pub use stack::{LayerFuture, Next};
pub(crate) use stack::{LayerList, LayerStack, Layers, snapshot as stack_snapshot};

use crate::protocol::status::Status;

/// Middleware around calls: see the [module documentation](self).
///
/// A layer is shared by every call: keep per-call state in the future it
/// returns, shared state behind atomics or locks.
pub trait Layer: Send + Sync + 'static {
    /// The name the debug endpoint lists, with its rejections.
    fn name(&self) -> &str;

    /// Handles one call: answer it ([`refuse`]`(status)`), or call on with
    /// `next.run(call)`, before or after doing something (in
    /// `LayerFuture::new(async move { ... next.run(call).await ... })`).
    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a>;
}

/// A refusal future: what a layer returns to answer with `status`.
pub fn refuse<'a>(status: Status) -> LayerFuture<'a> {
    LayerFuture::ready(Err(status))
}
