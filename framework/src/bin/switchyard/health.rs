//! `switchyard health`: asks a server's health service whether it (or one
//! of its services) serves, for probes: exit 0 only when it does.

use std::path::PathBuf;

use switchyard::Code;
use switchyard::health::{HealthClient, ServingStatus};

use crate::reach;

/// Prints `SERVING` and succeeds, or says why not and fails.
pub(crate) fn run(target: &str, service: &str, runtime_dir: Option<PathBuf>) -> Result<(), String> {
    let status = reach::call(target, runtime_dir, async |channel| {
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
