//! The operating-system boundary: host identity, process liveness.
//!
//! Each function has a Linux implementation and a fallback that reports
//! what it cannot tell, chosen once here rather than by `#[cfg]` scattered
//! through the crate.

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;

#[cfg(not(target_os = "linux"))]
#[path = "fallback.rs"]
mod imp;

pub use imp::{host_identity, process_alive, process_name, process_start_time};

#[cfg(all(target_os = "linux", feature = "rt"))]
pub mod bulk;
#[cfg(all(unix, feature = "rt"))]
pub mod inherit;
#[cfg(target_os = "linux")]
pub mod mqueue;
#[cfg(all(target_os = "linux", feature = "rt"))]
pub mod pool;
#[cfg(all(unix, feature = "rt"))]
pub mod reactor;
#[cfg(all(target_os = "linux", feature = "rt"))]
pub mod shm;

/// The calling process's id.
pub fn pid() -> u32 {
    std::process::id()
}

/// The calling process's real user id.
pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}
