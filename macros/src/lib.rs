//! The `#[switchyard::service]` attribute.
//!
//! A thin shell over [`switchyard_codegen::expand_service`]; use it through
//! the `switchyard` crate, which re-exports it as `switchyard::service`.
//!
//! ```ignore
//! #[switchyard::service]
//! pub trait Calculator {
//!     /// Adds.
//!     async fn add(&self, a: i64, b: i64) -> i64;
//!     #[switchyard(oneway)]
//!     async fn log(&self, line: String);
//! }
//! ```
//!
//! Options: `#[switchyard::service(crate = "::path::to::switchyard", name =
//! "WireName")]`. Method options, in `#[switchyard(...)]` on a method:
//! `oneway` (no reply is sent), `priority = N` (with `oneway`: its
//! message-queue priority, 0 to 32767) and `compress = false` (its payloads
//! are never compressed, for data that is already compressed). The expansion
//! is the trait (each `async fn` rewritten to return a `Send` future), a
//! `CALCULATOR_DESCRIPTOR` static, a `CalculatorClient` and a
//! `CalculatorServer` adapter.

#![forbid(unsafe_code)]

use proc_macro::TokenStream;

/// Turns a trait into a switchyard service: see the [crate docs](crate).
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    switchyard_codegen::expand_service(attr.into(), item.into()).into()
}
