//! A service whose replicas say which they are, for the discovery tests
//! (`dns.rs`, `etcd.rs`).

/// A replica that says which it is.
#[switchyard::service]
pub trait Which {
    /// This replica's number.
    async fn which(&self) -> u32;
}

/// Replica number `.0`.
pub(crate) struct Impl(pub(crate) u32);

impl Which for Impl {
    async fn which(&self) -> u32 {
        self.0
    }
}
