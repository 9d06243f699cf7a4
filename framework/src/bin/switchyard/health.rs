//! `switchyard health`: asks a server's health service whether it (or one
//! of its services) serves, for probes: exit 0 only when it does.

use std::path::PathBuf;
use std::time::Duration;

use switchyard::health::{HealthClient, ServingStatus};
use switchyard::{Channel, Code};

/// How long connecting, and then the call, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Prints `SERVING` and succeeds, or says why not and fails.
pub(crate) fn run(target: &str, service: &str, runtime_dir: Option<PathBuf>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("starting the tokio runtime: {err}"))?;
    let status = runtime.block_on(async {
        let mut builder = Channel::builder().connect_timeout(TIMEOUT).timeout(TIMEOUT);
        if let Some(dir) = runtime_dir {
            builder = builder.runtime_dir(dir);
        }
        let channel = builder
            .connect(target)
            .await
            .map_err(|status| format!("could not reach {target}: {}", status.message()))?;
        HealthClient::new(channel)
            .check(service.to_owned())
            .await
            .map_err(|status| match status.code() {
                Code::Unimplemented => format!(
                    "{} (its server was built with `.health(false)` or by a switchyard without \
                     the health service)",
                    status.message()
                ),
                _ => format!("asking {target} about its health: {status}"),
            })
    })?;
    match status {
        ServingStatus::Serving => {
            println!("SERVING");
            Ok(())
        }
        ServingStatus::NotServing => {
            println!("NOT_SERVING");
            Err(format!(
                "{target} reports {} not serving",
                if service.is_empty() {
                    "itself as".to_owned()
                } else {
                    format!("{service:?} as")
                }
            ))
        }
    }
}
