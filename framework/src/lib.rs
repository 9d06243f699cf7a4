//! switchyard: RPC for microservices that takes the fastest track to each peer.
//!
//! Annotate a trait with [`#[switchyard::service]`](macro@service); the macro
//! generates a typed client (`FooClient`), a server adapter (`FooServer`) and
//! a descriptor. Every call then travels over the transport that reaches the
//! peer fastest, and [`Selection`] says which one and why.
//!
//! ```no_run
//! # #[cfg(feature = "rt")]
//! # mod demo {
//! #[switchyard::service]
//! pub trait Greeter {
//!     async fn hello(&self, name: String) -> String;
//! }
//!
//! struct English;
//! impl Greeter for English {
//!     async fn hello(&self, name: String) -> String {
//!         format!("hello, {name}")
//!     }
//! }
//!
//! async fn serve() -> Result<(), switchyard::Status> {
//!     let server = switchyard::Server::builder()
//!         .add_service(GreeterServer::new(English))
//!         .publish("greeter")
//!         .start()
//!         .await?;
//!     server.run_until_signal().await;
//!     Ok(())
//! }
//!
//! async fn call() -> Result<(), switchyard::Status> {
//!     let client = GreeterClient::connect("greeter").await?;
//!     assert_eq!(client.hello("ada".into()).await?, "hello, ada");
//!     println!("{}", client.selection());
//!     Ok(())
//! }
//! # }
//! ```
//!
//! The crate is layered as quinn is: [`protocol`] is a sans-IO state machine
//! with no tokio in it; [`transport`] holds one module per transport behind
//! the [`Link`](transport::Link) traits; [`select`] is the only code that
//! knows every transport; the client and server drive it all on tokio.

#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Declares an internal item that the benchmark lab
/// (`integration-tests/bench-lab`) and the tests reach: `pub` (and hidden
/// from the docs) under the `unstable-bench-internals` feature, which makes
/// no semver promise, and `pub(crate)` without it, so that it is not public
/// API.
///
/// Without the feature, what only the lab and the tests use (the ring's
/// heap and raw-pointer constructors, for one; without `rt`, most of `sys`)
/// is allowed to be unused: with it, as in every test build, it is public
/// and the rest of the item is checked for dead code as before.
macro_rules! bench_internal {
    ($(#[$attr:meta])* pub $($item:tt)*) => {
        #[cfg(feature = "unstable-bench-internals")]
        #[doc(hidden)]
        $(#[$attr])*
        pub $($item)*

        #[cfg(not(feature = "unstable-bench-internals"))]
        #[allow(unreachable_pub, dead_code, unused_imports)]
        $(#[$attr])*
        pub(crate) $($item)*
    };
}

// Lets `#[switchyard::service]` expansions inside this crate name
// `::switchyard::__private`, as they do everywhere else.
#[cfg(feature = "rt")]
extern crate self as switchyard;

#[doc(hidden)]
#[cfg(feature = "rt")]
pub mod __private;

pub mod codec;
pub mod descriptor;
pub mod payload;
pub mod protocol;

#[cfg(feature = "rt")]
pub mod client;
#[cfg(feature = "rt")]
pub mod context;
#[cfg(feature = "rt")]
pub mod debug;
#[cfg(feature = "rt")]
pub mod discovery;
#[cfg(feature = "rt")]
mod driver;
#[cfg(feature = "rt")]
pub mod health;
#[cfg(feature = "rt")]
pub mod layers;
#[cfg(feature = "rt")]
pub mod loan;
#[cfg(all(unix, feature = "rt"))]
pub mod process;
#[cfg(feature = "rt")]
pub mod select;
#[cfg(feature = "rt")]
pub mod server;
#[cfg(feature = "rt")]
pub mod service;
#[cfg(feature = "rt")]
mod session;
#[cfg(feature = "rt")]
pub mod streaming;
pub(crate) mod sync;
bench_internal! {
    pub mod sys;
}
pub mod trace;
#[cfg(feature = "rt")]
pub mod transport;

pub use codec::{Bincode, Codec, CodecError};
pub use descriptor::{MethodDescriptor, ServiceDescriptor};
pub use payload::Bytes;
pub use protocol::compress::{Compression, CompressionMode};
pub use protocol::metadata::Metadata;
pub use protocol::status::{Code, Status};

#[cfg(feature = "rt")]
pub use client::{
    Backoff, Balance, Channel, ChannelBuilder, DEFAULT_QUEUE_FULL_WAIT, DEFAULT_RESOLVE_INTERVAL,
    HedgePolicy, OutlierEjection, RetryBudget, RetryPolicy,
};
#[cfg(feature = "rt")]
pub use context::Context;
#[cfg(feature = "rt")]
pub use loan::Loan;
#[cfg(feature = "rt")]
pub use select::{Selection, Transport};
#[cfg(feature = "rt")]
pub use server::{Server, ServerBuilder, ServerHandle};
#[cfg(feature = "rt")]
pub use streaming::{IntoStreamItem, StreamSender, Streaming};
#[cfg(feature = "rt")]
#[doc(inline)]
pub use switchyard_macros::service;
