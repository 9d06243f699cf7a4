//! What `inspect` and `health` share: a runtime, a channel to the target
//! (by name through the registry, or by URL), and one call on it, each with
//! a bounded wait.

use std::path::PathBuf;
use std::time::Duration;

use switchyard::Channel;

/// How long connecting, and then the call, may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `target` (names looked up in `runtime_dir`'s registry) and
/// runs `call` on the channel, on a runtime of its own.
pub(crate) fn call<T>(
    target: &str,
    runtime_dir: Option<PathBuf>,
    call: impl AsyncFnOnce(Channel) -> Result<T, String>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("starting the tokio runtime: {err}"))?;
    runtime.block_on(async {
        let mut builder = Channel::builder().connect_timeout(TIMEOUT).timeout(TIMEOUT);
        if let Some(dir) = runtime_dir {
            builder = builder.runtime_dir(dir);
        }
        let channel = builder
            .connect(target)
            .await
            .map_err(|status| format!("could not reach {target}: {}", status.message()))?;
        call(channel).await
    })
}
