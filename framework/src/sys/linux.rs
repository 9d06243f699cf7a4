//! Linux: identity and liveness from `/proc` and `/etc`.

use std::os::unix::fs::MetadataExt;

use crate::protocol::hello::HostIdentity;

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_default()
}

fn ns_inode(kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/self/ns/{kind}"))
        .map(|meta| meta.ino())
        .unwrap_or(0)
}

/// This host's identity: boot id, machine id, host name, IPC and network
/// namespace inodes. Fields that cannot be read are empty or zero, which
/// [`HostIdentity::locality`] treats as "not the same".
pub fn host_identity() -> HostIdentity {
    HostIdentity {
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        machine_id: read_trimmed("/etc/machine-id"),
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        ipc_ns: ns_inode("ipc"),
        net_ns: ns_inode("net"),
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), which with the pid identifies a process across pid
/// reuse. `None` if there is no such process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces:
    // count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` exists and started at `start_time` (if given).
/// A zombie counts as dead.
pub fn process_alive(pid: u32, start_time: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rfind(')')
        .and_then(|at| stat[at + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X");
    if zombie {
        return false;
    }
    match start_time {
        Some(expected) => process_start_time(pid) == Some(expected),
        None => true,
    }
}

/// The calling process's name (`/proc/self/comm`).
pub fn process_name() -> String {
    read_trimmed("/proc/self/comm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_with_its_own_start_time() {
        let pid = std::process::id();
        let start = process_start_time(pid).expect("own stat is readable");
        assert!(process_alive(pid, Some(start)));
        assert!(!process_alive(pid, Some(start + 1)));
        assert!(!process_alive(u32::MAX - 1, None));
    }

    #[test]
    fn identity_has_a_boot_id_and_namespaces() {
        let id = host_identity();
        assert!(!id.boot_id.is_empty());
        assert_ne!(id.ipc_ns, 0);
        assert_ne!(id.net_ns, 0);
    }
}
