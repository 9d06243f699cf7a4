//! A server's record in a discovery system beyond this host (an etcd key
//! under a lease, say), withdrawn when the server shuts down gracefully:
//! [`ServerHandle::withdraw_on_shutdown`](crate::ServerHandle::withdraw_on_shutdown)
//! withdraws it after the server reports NOT_SERVING and before it tells
//! its clients to go away, so no new client finds it while it drains.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A future returned by [`Registration::withdraw`].
pub type WithdrawFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A record of this server in a discovery system.
pub trait Registration: Send + fmt::Debug + 'static {
    /// Removes the record; failures are logged (the record then goes as the
    /// discovery system lets it, e.g. when a lease expires).
    fn withdraw(self: Box<Self>) -> WithdrawFuture;
}
