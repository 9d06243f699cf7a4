//! A layer from a function that looks at each call before it goes on: an
//! interceptor, as tonic calls it.

use super::{Call, Layer, LayerFuture, Next};
use crate::protocol::status::Status;

/// A layer that runs a function on each call before calling on; see
/// [`from_fn`].
pub struct FnLayer<F> {
    name: String,
    check: F,
}

impl<F> std::fmt::Debug for FnLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnLayer").field("name", &self.name).finish()
    }
}

/// A layer named `name` that calls `check` on each call first: `Ok` calls
/// on (with whatever `check` changed, say metadata), `Err` answers the call
/// with that status.
///
/// ```
/// use switchyard::layers;
/// use switchyard::Status;
///
/// let tenant = layers::from_fn("require-tenant", |call| {
///     match call.metadata().get_str("tenant") {
///         Some(_) => Ok(()),
///         None => Err(Status::invalid_argument("set the `tenant` metadata entry")),
///     }
/// });
/// # let _ = tenant;
/// ```
pub fn from_fn<F>(name: impl Into<String>, check: F) -> FnLayer<F>
where
    F: Fn(&mut Call) -> Result<(), Status> + Send + Sync + 'static,
{
    FnLayer {
        name: name.into(),
        check,
    }
}

impl<F> Layer for FnLayer<F>
where
    F: Fn(&mut Call) -> Result<(), Status> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn call<'a>(&'a self, mut call: Call, next: Next<'a>) -> LayerFuture<'a> {
        match (self.check)(&mut call) {
            Ok(()) => next.run(call),
            Err(status) => super::refuse(status),
        }
    }
}
