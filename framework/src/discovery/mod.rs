//! Finding services: where a server publishes its endpoints and where a
//! client looks them up.
//!
//! On one host, the [`registry`] in the runtime directory. Beyond it, a
//! [`Resolver`]: a [`StaticFile`] (TOML), `Dns` (A/AAAA or SRV records, as a
//! Kubernetes headless Service publishes them; the `dns` feature), `Etcd`
//! (keys under leases, watched; the `etcd` feature; servers register with
//! it too), or one of your own; host names in the addresses it gives are resolved by DNS when
//! connecting.

#[cfg(feature = "dns")]
pub mod dns;
mod entry;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod registration;
pub mod registry;
pub mod resolver;
pub mod runtime_dir;
pub mod static_file;

#[cfg(feature = "dns")]
pub use dns::Dns;
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdRegistration};
pub use registration::{Registration, WithdrawFuture};
pub use registry::{Entry, KeptQueue, PublishGuard, Registry, RegistryError};
pub use resolver::{ChangedFuture, DISCOVERY_ENV, ResolveFuture, Resolved, Resolver};
pub use runtime_dir::runtime_dir;
pub use static_file::{StaticFile, StaticFileError};
