//! `switchyard inspect`: calls a process's `Introspection` service and
//! prints its connections.

use std::path::PathBuf;
use std::time::Duration;

use switchyard::debug::{IntrospectionClient, table};
use switchyard::{Channel, Code};

/// How long connecting, and then the call, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `target`, takes a snapshot and prints it.
pub(crate) fn run(target: &str, json: bool, runtime_dir: Option<PathBuf>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("starting the tokio runtime: {err}"))?;
    let snapshot = runtime.block_on(async {
        let mut builder = Channel::builder().connect_timeout(TIMEOUT).timeout(TIMEOUT);
        if let Some(dir) = runtime_dir {
            builder = builder.runtime_dir(dir);
        }
        let channel = builder
            .connect(target)
            .await
            .map_err(|status| format!("could not reach {target}: {}", status.message()))?;
        let client = IntrospectionClient::new(channel);
        client
            .snapshot()
            .await
            .map_err(|status| match status.code() {
                Code::Unimplemented => format!(
                    "{} (its server was built with `.introspection(false)` or by a switchyard \
                 without introspection)",
                    status.message()
                ),
                Code::DeadlineExceeded => format!(
                    "{target} did not answer within {} s: {}",
                    TIMEOUT.as_secs(),
                    status.message()
                ),
                _ => format!("asking {target} for its snapshot: {status}"),
            })
    })?;
    if json {
        let text = serde_json::to_string_pretty(&snapshot)
            .map_err(|err| format!("encoding the snapshot as JSON: {err}"))?;
        println!("{text}");
    } else {
        print!("{}", table::connections_table(&snapshot));
    }
    Ok(())
}
