//! Finding services: where a server publishes its endpoints and where a
//! client looks them up.
//!
//! This scope is one host: the [`registry`] in the runtime
//! directory. Static files and DNS join it behind the same lookup later.

pub mod registry;
pub mod runtime_dir;

pub use registry::{Entry, PublishGuard, Registry, RegistryError};
pub use runtime_dir::runtime_dir;
