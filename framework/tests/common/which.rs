//! A service whose replicas say which they are, for the discovery tests
//! (`dns.rs`, `etcd.rs`).

use std::collections::HashMap;

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

/// Which replica answered each of `n` calls, counted.
pub(crate) async fn spread(client: &WhichClient, n: usize) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts
            .entry(client.which().await.expect("call"))
            .or_default() += 1;
    }
    counts
}
