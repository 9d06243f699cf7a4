//! The shared-memory transport: two SPSC byte rings in a sealed memfd, with
//! eventfd wake-ups, set up over the server's Unix socket (see [`link`]'s
//! module docs for the set-up and the waiting discipline, and `ring.rs` for
//! the ring's layout and its defences against a hostile peer).

#[cfg(target_os = "linux")]
pub mod link;
#[cfg(target_os = "linux")]
pub(crate) mod pool;
#[cfg(all(test, target_os = "linux"))]
mod pool_tests;
#[cfg(target_os = "linux")]
mod spares;
#[cfg(target_os = "linux")]
mod words;
bench_internal! {
    #[cfg(target_os = "linux")]
    pub mod peer_pool;
}
bench_internal! {
    pub mod ring;
}

/// What a poll of a receiving half found (see [`LinkRx::try_recv`](crate::transport::LinkRx::try_recv)).
#[cfg(target_os = "linux")]
pub use crate::transport::Polled;
#[cfg(target_os = "linux")]
pub use link::{
    ACCEPT, Accepted, BulkTransfers, DEFAULT_BULK_THRESHOLD, DEFAULT_CAPACITY, DEFAULT_SPIN, OFFER,
    OFFER_V2, ShmConnector, ShmLink, ShmRx, ShmTx, accept, bulk_transfers, connect, connect_over,
};
#[cfg(target_os = "linux")]
pub use pool::DEFAULT_POOL_LIMIT;
