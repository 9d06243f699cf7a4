//! A registry entry: one published name, which process serves it and where
//! to reach it; the contents of `registry/<name>@<pid>.json`.
//!
//! The file holds endpoint URLs; they are parsed into [`Endpoint`]s as the
//! entry is read, and written back by their `Display`, so the file's
//! format is unchanged.

use serde::{Deserialize, Serialize};

use crate::transport::{Endpoint, Transport};

/// One published name: which process serves it and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "EntryFile", into = "EntryFile")]
pub struct Entry {
    /// The published name, lower case.
    pub name: String,
    /// The serving process.
    pub pid: u32,
    /// The serving process's start time (ticks since boot), guarding
    /// against pid reuse.
    pub start_time: Option<u64>,
    /// The host's boot id when published.
    pub boot_id: String,
    /// The inode of the publisher's IPC namespace (0: unknown): equal to a
    /// client's means the two can share memory.
    pub ipc_ns: u64,
    /// Endpoints, fastest first (`unix:///...`, `tcp://...` in the file).
    pub endpoints: Vec<Endpoint>,
    /// URLs of the file's endpoints that this version cannot parse (a
    /// newer server's transports): never connected to, but shown and
    /// written back, after [`endpoints`](Self::endpoints).
    pub unknown_endpoints: Vec<String>,
    /// Services the process serves.
    pub services: Vec<String>,
    /// When it was published, milliseconds since the Unix epoch.
    pub published_ms: u64,
    /// The serving process's debug endpoint (its HTML page's URL), if it
    /// runs one.
    pub debug: Option<String>,
}

impl Entry {
    /// Whether the publishing process still runs: same boot (a runtime
    /// directory in /tmp can outlive a reboot), and a process with this pid
    /// and start time.
    pub fn is_alive(&self) -> bool {
        let boot = crate::sys::host_identity().boot_id;
        let same_boot = self.boot_id.is_empty() || boot.is_empty() || self.boot_id == boot;
        same_boot && crate::sys::process_alive(self.pid, self.start_time)
    }

    /// The first endpoint of `transport`.
    pub fn endpoint(&self, transport: Transport) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.transport() == transport)
    }

    /// Every endpoint URL, as the file lists them: the parsed endpoints,
    /// then the [`unknown_endpoints`](Self::unknown_endpoints).
    pub fn urls(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(Endpoint::to_string)
            .chain(self.unknown_endpoints.iter().cloned())
            .collect()
    }
}

/// The file's form of an [`Entry`]: endpoints as URLs.
#[derive(Clone, Serialize, Deserialize)]
struct EntryFile {
    name: String,
    pid: u32,
    start_time: Option<u64>,
    boot_id: String,
    #[serde(default)]
    ipc_ns: u64,
    endpoints: Vec<String>,
    services: Vec<String>,
    published_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    debug: Option<String>,
}

impl From<EntryFile> for Entry {
    fn from(file: EntryFile) -> Self {
        let mut endpoints = Vec::with_capacity(file.endpoints.len());
        let mut unknown_endpoints = Vec::new();
        for url in file.endpoints {
            match url.parse() {
                Ok(endpoint) => endpoints.push(endpoint),
                Err(_) => unknown_endpoints.push(url),
            }
        }
        Self {
            name: file.name,
            pid: file.pid,
            start_time: file.start_time,
            boot_id: file.boot_id,
            ipc_ns: file.ipc_ns,
            endpoints,
            unknown_endpoints,
            services: file.services,
            published_ms: file.published_ms,
            debug: file.debug,
        }
    }
}

impl From<Entry> for EntryFile {
    fn from(entry: Entry) -> Self {
        Self {
            endpoints: entry.urls(),
            name: entry.name,
            pid: entry.pid,
            start_time: entry.start_time,
            boot_id: entry.boot_id,
            ipc_ns: entry.ipc_ns,
            services: entry.services,
            published_ms: entry.published_ms,
            debug: entry.debug,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
  "name": "calculator",
  "pid": 42,
  "start_time": 7,
  "boot_id": "b",
  "ipc_ns": 9,
  "endpoints": [
    "unix:///run/x.sock",
    "tcp://127.0.0.1:7000",
    "carrier-pigeon://roof"
  ],
  "services": [
    "Calculator"
  ],
  "published_ms": 1
}"#;

    #[test]
    fn endpoints_are_parsed_as_read_and_written_back_as_urls() {
        let entry: Entry = serde_json::from_str(FILE).unwrap();
        assert_eq!(
            entry.endpoints,
            [
                Endpoint::Unix("/run/x.sock".into()),
                Endpoint::Tcp("127.0.0.1:7000".into())
            ]
        );
        assert_eq!(entry.unknown_endpoints, ["carrier-pigeon://roof"]);
        assert_eq!(entry.endpoint(Transport::Tcp), Some(&entry.endpoints[1]));
        assert_eq!(entry.endpoint(Transport::Quic), None);
        assert_eq!(serde_json::to_string_pretty(&entry).unwrap(), FILE);
    }

    #[test]
    fn an_older_entry_without_newer_fields_reads() {
        let old = r#"{"name":"a","pid":1,"start_time":null,"boot_id":"","endpoints":[],
            "services":[],"published_ms":0}"#;
        let entry: Entry = serde_json::from_str(old).unwrap();
        assert_eq!((entry.ipc_ns, entry.debug), (0, None));
    }
}
