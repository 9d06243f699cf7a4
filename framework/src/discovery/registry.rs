//! The local registry: one JSON file per published name and process under
//! `<runtime dir>/registry/`, written atomically, removed on graceful
//! shutdown, and ignored (then pruned) once its process is dead.
//!
//! File name: `<name>@<pid>.json`. Contents: [`Entry`].

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

pub use super::entry::Entry;
use super::runtime_dir::{RuntimeDir, runtime_dir};
use crate::transport::Endpoint;

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A file operation failed.
    #[error("registry i/o on {path}: {source}")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The runtime directory is not safe to use.
    #[error(
        "runtime directory {path} is not safe to use: {reason}; remove it if you did not make it, fix its owner and mode (0700), or set SWITCHYARD_RUNTIME_DIR (or XDG_RUNTIME_DIR) to a directory only you can write"
    )]
    Insecure {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A name has characters that cannot be a file name.
    #[error(
        "service name {name:?} is invalid: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
}

/// A message queue a gracefully stopped server kept for its next start,
/// recorded as `registry/<service>.kept` (lower case): what `switchyard
/// services` shows and `--remove-queue` removes. One-way calls by name find
/// the queue without it (its name derives from the runtime directory and
/// the service); the record tells people it is there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptQueue {
    /// The service whose one-way calls the queue holds.
    pub service: String,
    /// The queue's name (`/sy-…`).
    pub queue: String,
    /// The process that stopped and kept it.
    pub pid: u32,
    /// When it stopped, milliseconds since the Unix epoch.
    pub stopped_ms: u64,
}

/// The registry in one runtime directory, reached through the directory's
/// checked handles (see [`RuntimeDir`]).
#[derive(Clone, Debug)]
pub struct Registry {
    dir: Arc<RuntimeDir>,
}

impl Registry {
    /// The registry in the default [`runtime_dir`].
    pub fn open_default() -> Result<Self, RegistryError> {
        Self::open(&runtime_dir())
    }

    /// The registry under `root`, created with mode 0700 if missing; see
    /// [`RuntimeDir::open`] for what is refused.
    pub fn open(root: &Path) -> Result<Self, RegistryError> {
        Ok(Self {
            dir: Arc::new(RuntimeDir::open(root)?),
        })
    }

    /// The runtime directory's path (for messages and URLs).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The opened runtime directory, to bind and connect its sockets by
    /// handle.
    pub fn runtime_dir(&self) -> &Arc<RuntimeDir> {
        &self.dir
    }

    /// A fresh socket path for this process.
    pub fn socket_path(&self, seq: u64) -> PathBuf {
        self.dir
            .socket_path(&format!("{}-{seq}.sock", std::process::id()))
    }

    fn entry_file(name: &str, pid: u32) -> String {
        format!("{name}@{pid}.json")
    }

    /// Publishes `entry` (its name is normalised to lower case). The entry is
    /// removed when the returned guard drops.
    pub fn publish(&self, mut entry: Entry) -> Result<PublishGuard, RegistryError> {
        entry.name = normalize_name(&entry.name)?;
        let file = Self::entry_file(&entry.name, entry.pid);
        self.write_entry(&file, &entry)?;
        tracing::debug!(name = %entry.name, file, "published");
        Ok(PublishGuard {
            dir: Arc::clone(&self.dir),
            file,
        })
    }

    /// Writes `entry` as `file`, atomically (a temporary file renamed over
    /// it), relative to the registry's handle.
    fn write_entry(&self, file: &str, entry: &Entry) -> Result<(), RegistryError> {
        // Entry is plain data; serialising it cannot fail.
        self.write_json(file, &serde_json::to_vec_pretty(entry).unwrap_or_default())
    }

    /// Writes `json` as `file`, atomically (a temporary file renamed over
    /// it), relative to the registry's handle, never following a link.
    fn write_json(&self, file: &str, json: &[u8]) -> Result<(), RegistryError> {
        let tmp = format!("{file}.tmp");
        let fd = self.dir.registry_fd();
        let io_err = |name: &str, source: io::Error| RegistryError::Io {
            path: self.dir.path().join("registry").join(name),
            source,
        };
        let out = rustix::fs::openat(
            fd,
            tmp.as_str(),
            OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| io_err(&tmp, e.into()))?;
        std::fs::File::from(out)
            .write_all(json)
            .map_err(|e| io_err(&tmp, e))?;
        rustix::fs::renameat(fd, tmp.as_str(), fd, file).map_err(|e| io_err(file, e.into()))?;
        Ok(())
    }

    /// Records that a stopped server kept `kept.queue` for `kept.service`
    /// (replacing an earlier record for the service).
    pub fn record_kept_queue(&self, kept: &KeptQueue) -> Result<(), RegistryError> {
        let service = normalize_name(&kept.service)?;
        // KeptQueue is plain data; serialising it cannot fail.
        let json = serde_json::to_vec_pretty(kept).unwrap_or_default();
        self.write_json(&format!("{service}.kept"), &json)
    }

    /// Forgets the kept-queue record of `service` (its server started again,
    /// or the queue was removed). Missing is fine.
    pub fn forget_kept_queue(&self, service: &str) {
        if let Ok(service) = normalize_name(service) {
            let _ = rustix::fs::unlinkat(
                self.dir.registry_fd(),
                format!("{service}.kept").as_str(),
                AtFlags::empty(),
            );
        }
    }

    /// The queues stopped servers kept, by service.
    pub fn kept_queues(&self) -> Result<Vec<KeptQueue>, RegistryError> {
        let mut kept: Vec<KeptQueue> = self
            .read_files(".kept")?
            .into_iter()
            .filter_map(|(_, bytes)| serde_json::from_slice(&bytes?).ok())
            .collect();
        kept.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(kept)
    }

    /// The live entry for `name`, the most recently published if several
    /// processes serve it. Entries of dead processes are removed on the way.
    pub fn lookup(&self, name: &str) -> Result<Option<Entry>, RegistryError> {
        Ok(self.lookup_all(name)?.into_iter().next())
    }

    /// Every live entry publishing `name`: the replicas of a service on
    /// this host, newest first (then by pid).
    pub fn lookup_all(&self, name: &str) -> Result<Vec<Entry>, RegistryError> {
        let name = normalize_name(name)?;
        let mut entries: Vec<Entry> = self
            .scan()?
            .into_iter()
            .filter(|entry| entry.name == name)
            .collect();
        entries.sort_by(|a, b| b.published_ms.cmp(&a.published_ms).then(a.pid.cmp(&b.pid)));
        Ok(entries)
    }

    /// Every live entry, sorted by name. Entries of dead processes are
    /// removed on the way.
    pub fn list(&self) -> Result<Vec<Entry>, RegistryError> {
        let mut entries = self.scan()?;
        entries.sort_by(|a, b| a.name.cmp(&b.name).then(a.pid.cmp(&b.pid)));
        Ok(entries)
    }

    /// Removes entries (and socket files) of dead processes; returns how
    /// many entries went.
    pub fn prune(&self) -> Result<usize, RegistryError> {
        Ok(self.prune_dead()?.len())
    }

    /// Removes entries (and socket files) of dead processes; returns them.
    pub fn prune_dead(&self) -> Result<Vec<Entry>, RegistryError> {
        let mut pruned = Vec::new();
        self.scan_pruning(&mut pruned)?;
        Ok(pruned)
    }

    fn scan(&self) -> Result<Vec<Entry>, RegistryError> {
        self.scan_pruning(&mut Vec::new())
    }

    /// The `*.json` files in `registry/`, with what they hold (`None`:
    /// unreadable).
    fn files(&self) -> Result<Vec<(String, Option<Entry>)>, RegistryError> {
        Ok(self
            .read_files(".json")?
            .into_iter()
            .map(|(file, bytes)| {
                let entry = bytes.and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
                (file, entry)
            })
            .collect())
    }

    /// The files in `registry/` whose names end with `suffix`, with their
    /// bytes (`None`: unreadable).
    fn read_files(&self, suffix: &str) -> Result<Vec<RegistryFile>, RegistryError> {
        let fd = self.dir.registry_fd();
        let io_err = |source: io::Error| RegistryError::Io {
            path: self.dir.path().join("registry"),
            source,
        };
        let dir = rustix::fs::Dir::read_from(fd).map_err(|e| io_err(e.into()))?;
        let mut files = Vec::new();
        for item in dir {
            let Ok(item) = item else { continue };
            let Ok(file) = item.file_name().to_str() else {
                continue;
            };
            if !file.ends_with(suffix) || item.file_type() == FileType::Directory {
                continue;
            }
            let file = file.to_owned();
            let bytes = rustix::fs::openat(
                fd,
                file.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )
            .ok()
            .and_then(|fd| {
                let mut bytes = Vec::new();
                std::fs::File::from(fd)
                    .take(MAX_ENTRY_BYTES)
                    .read_to_end(&mut bytes)
                    .ok()?;
                Some(bytes)
            });
            files.push((file, bytes));
        }
        Ok(files)
    }

    fn scan_pruning(&self, pruned: &mut Vec<Entry>) -> Result<Vec<Entry>, RegistryError> {
        let mut live = Vec::new();
        for (file, entry) in self.files()? {
            match entry {
                Some(entry) if entry.is_alive() => live.push(entry),
                Some(entry) => {
                    tracing::debug!(name = %entry.name, pid = entry.pid, "pruning entry of a dead process");
                    let removed = rustix::fs::unlinkat(
                        self.dir.registry_fd(),
                        file.as_str(),
                        AtFlags::empty(),
                    )
                    .is_ok();
                    // Only sockets this registry handed out are removed.
                    for endpoint in &entry.endpoints {
                        if let Endpoint::Unix(socket) = endpoint
                            && let Some(name) = self.dir.socket_name(socket)
                        {
                            let _ =
                                rustix::fs::unlinkat(self.dir.sockets_fd(), name, AtFlags::empty());
                        }
                    }
                    if removed {
                        pruned.push(entry);
                    }
                }
                None => {
                    // Unreadable: half-written by a crashed process, or not ours.
                    tracing::warn!(file, "ignoring unreadable registry entry");
                }
            }
        }
        Ok(live)
    }
}

/// A file in `registry/`: its name and bytes (`None`: unreadable).
type RegistryFile = (String, Option<Vec<u8>>);

/// The largest registry entry read (a bigger file is not an entry).
const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// Removes a published entry when dropped.
#[derive(Debug)]
pub struct PublishGuard {
    dir: Arc<RuntimeDir>,
    file: String,
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(self.dir.registry_fd(), self.file.as_str(), AtFlags::empty());
    }
}

/// Lower-cases and checks a name.
pub fn normalize_name(name: &str) -> Result<String, RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(RegistryError::InvalidName { name: name.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    fn entry(name: &str, pid: u32, start_time: Option<u64>, published_ms: u64) -> Entry {
        Entry {
            name: name.into(),
            pid,
            start_time,
            boot_id: String::new(),
            ipc_ns: 0,
            endpoints: vec![
                Endpoint::Unix("/x.sock".into()),
                Endpoint::Tcp("127.0.0.1:1".into()),
            ],
            unknown_endpoints: Vec::new(),
            services: vec!["Calculator".into()],
            published_ms,
            debug: None,
        }
    }

    #[test]
    fn publish_lookup_and_remove_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("rt")).unwrap();
        let me = std::process::id();
        let start = crate::sys::process_start_time(me);
        let guard = registry.publish(entry("Calculator", me, start, 1)).unwrap();
        let found = registry.lookup("calculator").unwrap().unwrap();
        assert_eq!(found.pid, me);
        assert_eq!(
            found.endpoint(Transport::Tcp),
            Some(&Endpoint::Tcp("127.0.0.1:1".into()))
        );
        assert_eq!(
            found.endpoint(Transport::Unix),
            Some(&Endpoint::Unix("/x.sock".into()))
        );
        drop(guard);
        assert_eq!(registry.lookup("calculator").unwrap(), None);
    }

    #[test]
    fn dead_entries_are_ignored_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let me = std::process::id();
        let start = crate::sys::process_start_time(me);
        // A pid that cannot exist, and our pid with a wrong start time (reuse).
        let dead = registry
            .publish(entry("svc", u32::MAX - 7, None, 5))
            .unwrap();
        let reused = registry
            .publish(entry("svc", me, start.map(|s| s + 1), 6))
            .unwrap();
        std::mem::forget((dead, reused));
        assert_eq!(registry.prune().unwrap(), 2);
        assert_eq!(registry.lookup("svc").unwrap(), None);
        assert_eq!(registry.prune().unwrap(), 0, "nothing left to prune");
        assert!(registry.list().unwrap().is_empty());
    }

    #[test]
    fn the_newest_live_publisher_wins() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let me = std::process::id();
        let start = crate::sys::process_start_time(me);
        let _a = registry.publish(entry("svc", me, start, 10)).unwrap();
        let found = registry.lookup("svc").unwrap().unwrap();
        assert_eq!(found.published_ms, 10);
    }

    #[test]
    fn names_are_checked_and_dirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rt");
        let registry = Registry::open(&root).unwrap();
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(matches!(
            registry.lookup("../etc/passwd"),
            Err(RegistryError::InvalidName { .. })
        ));
        assert!(normalize_name("").is_err());
        assert_eq!(normalize_name("Calc-1.v2").unwrap(), "calc-1.v2");
    }
}
