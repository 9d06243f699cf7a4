//! `switchyard inspect`: calls a process's `Introspection` service and
//! prints its connections.

use std::path::PathBuf;

use switchyard::Code;
use switchyard::debug::{IntrospectionClient, table};

use crate::reach::{self, TIMEOUT};

/// Connects to `target`, takes a snapshot and prints it.
pub(crate) fn run(target: &str, json: bool, runtime_dir: Option<PathBuf>) -> Result<(), String> {
    let snapshot = reach::call(target, runtime_dir, async |channel| {
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
