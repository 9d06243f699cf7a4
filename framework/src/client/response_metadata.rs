//! Reading the metadata a server sends back with a response (what a
//! handler set with [`Context::set_response_metadata`](crate::Context::set_response_metadata)):
//! gRPC's initial and trailing metadata in one.

use std::cell::RefCell;

use crate::protocol::metadata::{Metadata, MetadataError, MetadataLimits};
use crate::protocol::status::Status;

tokio::task_local! {
    /// The response metadata of the last call that got a response within
    /// the current capture.
    static CAPTURED: RefCell<Metadata>;
}

/// Runs `future` (one or more calls) and returns its output with the
/// response metadata of the last call in it that got a response, success
/// or error; empty when no call did or the server set none.
///
/// Calls are seen when they run on the task that polls `future`, as calls
/// awaited inside it do; calls on tasks it spawns are not.
///
/// ```no_run
/// #[switchyard::service]
/// pub trait Accounts {
///     async fn balance(&self, id: u64) -> u64;
/// }
///
/// # async fn demo() -> Result<(), switchyard::Status> {
/// let accounts = AccountsClient::connect("accounts").await?;
/// let (balance, metadata) =
///     switchyard::client::with_response_metadata(accounts.balance(7)).await;
/// if let Some(replica) = metadata.get_str("served-by") {
///     println!("{replica} answered: {balance:?}");
/// }
/// # Ok(())
/// # }
/// ```
pub async fn with_response_metadata<F: Future>(future: F) -> (F::Output, Metadata) {
    CAPTURED
        .scope(RefCell::new(Metadata::new()), async move {
            let output = future.await;
            let metadata = CAPTURED.with(|captured| captured.take());
            (output, metadata)
        })
        .await
}

/// Keeps the response metadata of a call of `method` if a caller captures
/// it: bytes that do not decode fail the call (the server broke the
/// protocol). Outside a capture the bytes are not looked at.
pub(crate) fn record(method: &str, encoded: &[u8], limits: MetadataLimits) -> Result<(), Status> {
    let capturing = CAPTURED.try_with(|_| ()).is_ok();
    if !capturing {
        return Ok(());
    }
    let metadata = Metadata::decode_limited(encoded, limits).map_err(|err| match err {
        MetadataError::TooLarge { .. } | MetadataError::TooManyEntries { .. } => {
            Status::resource_exhausted(format!(
                "the response metadata of {method}: {err}; ask the server for less, or raise \
                 ChannelBuilder::max_metadata"
            ))
        }
        _ => Status::internal(format!(
            "the response metadata of {method} is malformed ({err}); is the server a \
             switchyard of the same version?"
        )),
    })?;
    let _ = CAPTURED.try_with(|captured| *captured.borrow_mut() = metadata);
    Ok(())
}
