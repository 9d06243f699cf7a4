//! Platforms other than Linux: nothing about identity can be read, so every
//! peer looks like another host and selection falls back to sockets.

use crate::protocol::hello::HostIdentity;

/// An empty identity: locality checks treat it as "another host".
pub fn host_identity() -> HostIdentity {
    HostIdentity::default()
}

/// Unknown on this platform.
pub fn process_start_time(_pid: u32) -> Option<u64> {
    None
}

/// Without `/proc`, a registry entry's process is assumed alive; stale
/// entries then fail at connect time instead.
pub fn process_alive(_pid: u32, _start_time: Option<u64>) -> bool {
    true
}

/// The executable's file name.
pub fn process_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}
