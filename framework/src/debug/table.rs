//! Plain-text views for terminals: the connections of a [`Snapshot`] and the
//! entries of the local registry, as column-aligned tables.
//!
//! `switchyard inspect`, `switchyard services` and the tour print these. The
//! text has no colours and no trailing spaces; the last column (the reason a
//! transport was chosen, or the endpoints) is not padded, so long values do
//! not widen the table.

use std::fmt::Write as _;

use super::model::{ConnectionInfo, PeerInfo, Snapshot};
use crate::discovery::Entry;

/// The process header line, then one row per connection (id, role, state,
/// transport, peer, calls ok/failed, bytes sent/received, p50/p99 and the
/// reason the transport was chosen), each followed by the transports it
/// rejected and why, indented.
///
/// ```text
/// tour (pid 4242) on host box, switchyard 0.1.0
/// serves: Calculator; listens: unix:///run/user/1000/switchyard/sockets/4242-0.sock
///
/// id  role    state  transport  peer        calls ok/failed  bytes sent/recv  p50/p99 µs  reason
/// 1   client  open   unix       tour/4242   3/0              312 B/188 B      41.0/97.0   same host: ...
///     rejected tcp: a Unix socket is faster on the same host
/// ```
pub fn connections_table(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let p = &snapshot.process;
    let host = if p.hostname.is_empty() {
        "unknown host"
    } else {
        &p.hostname
    };
    let _ = writeln!(
        out,
        "{} (pid {}) on host {}, switchyard {}",
        escape_terminal(if p.name.is_empty() { "?" } else { &p.name }),
        p.pid,
        escape_terminal(host),
        escape_terminal(if p.version.is_empty() {
            "?"
        } else {
            &p.version
        }),
    );
    let services: Vec<&str> = snapshot.services.iter().map(|s| s.name.as_str()).collect();
    let listeners: Vec<&str> = snapshot.listeners.iter().map(|l| l.url.as_str()).collect();
    let _ = writeln!(
        out,
        "serves: {}; listens: {}",
        escape_terminal(&list_or_none(&services)),
        escape_terminal(&list_or_none(&listeners))
    );
    for stack in &snapshot.layers {
        let layers: Vec<String> = stack
            .layers
            .iter()
            .map(|l| format!("{} ({} refused)", l.name, l.rejected))
            .collect();
        let _ = writeln!(
            out,
            "layers of {} {}: {}",
            escape_terminal(&stack.side),
            escape_terminal(&stack.owner),
            escape_terminal(&layers.join(" > "))
        );
    }
    out.push('\n');
    if snapshot.connections.is_empty() {
        out.push_str("no connections\n");
        channels_table(snapshot, &mut out);
        return out;
    }
    let mut table = Table::new(&[
        "id",
        "role",
        "state",
        "transport",
        "peer",
        "calls ok/failed",
        "bytes sent/recv",
        "p50/p99 µs",
        "reason",
    ]);
    for conn in &snapshot.connections {
        let mut below: Vec<String> = conn
            .rejected
            .iter()
            .map(|r| format!("rejected {}: {}", r.transport, r.why))
            .collect();
        below.extend(
            conn.mmap
                .iter()
                .filter(|m| m.bodies_sent + m.bodies_received > 0)
                .map(|m| {
                    format!(
                        "mmap: {} bodies sent ({}), {} received ({}) beside the ring",
                        m.bodies_sent,
                        bytes(m.bytes_sent),
                        m.bodies_received,
                        bytes(m.bytes_received)
                    )
                }),
        );
        below.extend(
            conn.mmap
                .iter()
                .filter(|m| m.pool_bodies_sent + m.pool_fallbacks + m.pool_held_bytes > 0)
                .map(|m| {
                    let in_place = if m.reads_in_place {
                        "; the peer's bodies are read in place"
                    } else {
                        ""
                    };
                    format!(
                        "shm pool: {} bodies sent through it ({} from loans, not copied), {} as a \
                         region of their own (too large for it); {} in use of {} held{}",
                        m.pool_bodies_sent,
                        m.pool_loaned_bodies,
                        m.pool_fallbacks,
                        bytes(m.pool_in_use_bytes),
                        bytes(m.pool_held_bytes),
                        in_place
                    )
                }),
        );
        let streams = &conn.streams;
        if streams.open + streams.messages_sent + streams.messages_received > 0 {
            below.push(format!(
                "streams: {} open ({} waiting for credit), {} messages sent, {} received",
                streams.open, streams.stalled, streams.messages_sent, streams.messages_received
            ));
        }
        below.extend(compression_line(conn));
        table.row(connection_cells(conn, &p.hostname), below);
    }
    table.render(&mut out);
    channels_table(snapshot, &mut out);
    out
}

/// Each channel to a name with its replicas, after a blank line: the
/// policy, where the replicas were found, and per replica its state,
/// transport, load and connection (whose row above says more).
fn channels_table(snapshot: &Snapshot, out: &mut String) {
    for channel in &snapshot.channels {
        let _ = writeln!(
            out,
            "\nchannel {} ({}{}{}):",
            escape_terminal(&channel.target),
            escape_terminal(&channel.balance),
            channel
                .source
                .as_deref()
                .map(|s| format!(", replicas from {}", escape_terminal(s)))
                .unwrap_or_default(),
            if channel.retries + channel.retries_throttled + channel.hedges > 0 {
                format!(
                    ", {} retries, {} hedges, {} held back by the budget",
                    channel.retries, channel.hedges, channel.retries_throttled
                )
            } else {
                String::new()
            }
        );
        if let Some(problem) = &channel.discovery_error {
            let _ = writeln!(out, "  discovery: {}", escape_terminal(problem));
        }
        for skipped in &channel.skipped {
            let _ = writeln!(out, "  skipped: {}", escape_terminal(skipped));
        }
        let mut table = Table::new(&[
            "  replica",
            "state",
            "transport",
            "in flight",
            "calls",
            "ewma µs",
            "conn",
        ]);
        for replica in &channel.replicas {
            let mut below: Vec<String> = replica
                .last_error
                .iter()
                .map(|e| format!("  last error: {e}"))
                .collect();
            if let Some(ms) = replica.ejected_for_ms {
                below.push(format!(
                    "  ejected for failing call after call: {ms} ms left (ejection {})",
                    replica.ejections
                ));
            }
            table.row(
                vec![
                    format!("  {}", replica.key),
                    replica.state.clone(),
                    replica.transport.clone().unwrap_or_else(|| "-".into()),
                    replica.in_flight.to_string(),
                    replica.calls_started.to_string(),
                    replica.latency_ewma_us.map_or_else(|| "-".into(), micros),
                    replica
                        .connection
                        .map_or_else(|| "-".into(), |id| id.to_string()),
                ],
                below,
            );
        }
        table.render(out);
    }
}

/// The line below a connection on its compression: where it compresses,
/// moved anything, or runs over a network (where a reader may wonder).
fn compression_line(conn: &ConnectionInfo) -> Option<String> {
    let c = &conn.compression;
    let m = &c.moved;
    let moved = m.payloads_sent + m.payloads_received > 0;
    let networked = matches!(conn.transport.as_str(), "tcp" | "quic");
    if !(c.on || moved || (networked && !c.reason.is_empty())) {
        return None;
    }
    let mut line = if c.on {
        format!("compression: {}", c.reason)
    } else {
        c.reason.clone()
    };
    if moved {
        line.push_str(&format!(
            "; sent {} payloads of {} as {} ({:.1}x), received {} of {} as {}; saved {}",
            m.payloads_sent,
            bytes(m.raw_bytes_sent),
            bytes(m.wire_bytes_sent),
            m.ratio_sent(),
            m.payloads_received,
            bytes(m.wire_bytes_received),
            bytes(m.raw_bytes_received),
            bytes(m.saved())
        ));
    }
    Some(line)
}

/// One row per live registry entry: name, pid, services and endpoints
/// (fastest first).
///
/// ```text
/// name        pid   services    endpoints
/// calculator  4242  Calculator  unix:///run/user/1000/switchyard/sockets/4242-0.sock tcp://127.0.0.1:7000
/// ```
pub fn services_table(entries: &[Entry]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no live entries\n");
        return out;
    }
    // The debug column appears when some process runs an endpoint.
    let with_debug = entries.iter().any(|e| e.debug.is_some());
    let mut columns = vec!["name", "pid", "services", "endpoints"];
    if with_debug {
        columns.push("debug");
    }
    let mut table = Table::new(&columns);
    for entry in entries {
        let mut cells = vec![
            entry.name.clone(),
            entry.pid.to_string(),
            list_or_none(&entry.services),
            match entry.urls() {
                urls if urls.is_empty() => "none".to_owned(),
                urls => urls.join(" "),
            },
        ];
        if with_debug {
            cells.push(
                entry
                    .debug
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), str::to_owned),
            );
        }
        table.row(cells, Vec::new());
    }
    table.render(&mut out);
    out
}

fn connection_cells(conn: &ConnectionInfo, our_host: &str) -> Vec<String> {
    let latency = if conn.latency.count == 0 {
        "-".to_owned()
    } else {
        format!(
            "{}/{}",
            micros(conn.latency.p50_us),
            micros(conn.latency.p99_us)
        )
    };
    vec![
        conn.id.to_string(),
        conn.role.clone(),
        conn.state.clone(),
        conn.transport.clone(),
        peer(&conn.peer, our_host),
        format!("{}/{}", conn.calls_succeeded, conn.calls_failed),
        format!("{}/{}", bytes(conn.bytes_sent), bytes(conn.bytes_received)),
        latency,
        conn.reason.clone(),
    ]
}

/// `process/pid`, plus `@host` when the peer is on another host; else its
/// address.
fn peer(peer: &PeerInfo, our_host: &str) -> String {
    let mut text = match (peer.process.is_empty(), peer.pid) {
        (false, Some(pid)) => format!("{}/{pid}", peer.process),
        (false, None) => peer.process.clone(),
        (true, Some(pid)) => format!("pid {pid}"),
        (true, None) if !peer.addr.is_empty() => return peer.addr.clone(),
        (true, None) => return "-".to_owned(),
    };
    if !peer.hostname.is_empty() && peer.hostname != our_host {
        text.push('@');
        text.push_str(&peer.hostname);
    }
    text
}

fn list_or_none<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn micros(us: f64) -> String {
    if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `text` made safe to print on a terminal: tabs and line breaks become
/// spaces (they would break the columns), and every other control character
/// (C0, DEL, C1: the start of an escape sequence that could move the
/// cursor, retitle the window or rewrite what was printed before) and every
/// bidirectional override is written as a visible `\u{..}` escape.
/// Process names, host names and reasons come from peers, who may put
/// anything in them.
pub fn escape_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Columns padded to their widest cell, two spaces apart; the last column is
/// not padded. Each row may carry lines printed indented below it.
struct Table {
    header: Vec<String>,
    rows: Vec<(Vec<String>, Vec<String>)>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; every cell and line below is escaped for a terminal
    /// (much of it is what peers say of themselves).
    fn row(&mut self, cells: Vec<String>, below: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        let escape = |texts: Vec<String>| texts.iter().map(|t| escape_terminal(t)).collect();
        self.rows.push((escape(cells), escape(below)));
    }

    fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for (cells, _) in &self.rows {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |out: &mut String, cells: &[String]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                // Tabs or newlines in a reason would break the columns.
                let cell = cell.replace(['\n', '\t'], " ");
                text.push_str(&cell);
                if i + 1 < cells.len() {
                    let pad = widths[i] - cell.chars().count() + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(out, &self.header);
        for (cells, below) in &self.rows {
            line(out, cells);
            for extra in below {
                let _ = writeln!(out, "    {}", extra.replace(['\n', '\t'], " ").trim_end());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::model::{
        ChannelInfo, Latency, ListenerInfo, MmapTrack, ProcessInfo, Rejected, ReplicaInfo,
        ServiceInfo,
    };

    fn snapshot() -> Snapshot {
        Snapshot {
            schema: 2,
            taken_unix_ms: 1,
            process: ProcessInfo {
                name: "tour".into(),
                pid: 4242,
                hostname: "box".into(),
                version: "0.1.0".into(),
                ..ProcessInfo::default()
            },
            services: vec![ServiceInfo {
                name: "Calculator".into(),
                methods: Vec::new(),
            }],
            listeners: vec![ListenerInfo {
                url: "unix:///run/x.sock".into(),
                transport: "unix".into(),
                attempts: Default::default(),
            }],
            connections: vec![
                ConnectionInfo {
                    id: 1,
                    role: "client".into(),
                    state: "open".into(),
                    transport: "unix".into(),
                    reason: "same host: a Unix socket is the fastest track it offers".into(),
                    rejected: vec![
                        Rejected {
                            transport: "tcp".into(),
                            why: "a Unix socket is faster on the same host".into(),
                        },
                        Rejected {
                            transport: "shm".into(),
                            why: "not implemented in this version".into(),
                        },
                    ],
                    peer: PeerInfo {
                        addr: "unix:///run/x.sock".into(),
                        pid: Some(4242),
                        process: "tour".into(),
                        hostname: "box".into(),
                        ..PeerInfo::default()
                    },
                    calls_succeeded: 3,
                    calls_failed: 1,
                    bytes_sent: 312,
                    bytes_received: 3 * 1024 * 1024 / 2,
                    latency: Latency {
                        count: 4,
                        p50_us: 41.04,
                        p99_us: 1234.0,
                    },
                    ..ConnectionInfo::default()
                },
                ConnectionInfo {
                    id: 12,
                    role: "server".into(),
                    state: "closed".into(),
                    transport: "tcp".into(),
                    reason: "the client connected to this server's tcp listener".into(),
                    peer: PeerInfo {
                        addr: "tcp://10.0.0.2:5555".into(),
                        pid: Some(7),
                        process: "calc".into(),
                        hostname: "other".into(),
                        ..PeerInfo::default()
                    },
                    ..ConnectionInfo::default()
                },
            ],
            methods: Vec::new(),
            mmap: MmapTrack::default(),
            layers: Vec::new(),
            compression: Default::default(),
            channels: Vec::new(),
        }
    }

    #[test]
    fn channels_follow_the_connections_with_their_replicas() {
        let mut s = snapshot();
        s.channels = vec![ChannelInfo {
            target: "inventory".into(),
            balance: "round_robin".into(),
            source: Some("the discovery file /d.toml".into()),
            discovery_error: None,
            replicas: vec![
                ReplicaInfo {
                    key: "pid 7".into(),
                    state: "ready".into(),
                    connection: Some(1),
                    transport: Some("shm".into()),
                    in_flight: 2,
                    calls_started: 40,
                    latency_ewma_us: Some(4.5),
                    ..ReplicaInfo::default()
                },
                ReplicaInfo {
                    key: "tcp://10.0.0.6:7000".into(),
                    state: "ejected".into(),
                    connection: Some(12),
                    transport: Some("tcp".into()),
                    ejections: 1,
                    ejected_for_ms: Some(9000),
                    ..ReplicaInfo::default()
                },
            ],
            changes: Vec::new(),
            skipped: Vec::new(),
            retries: 5,
            retries_throttled: 0,
            hedges: 0,
        }];
        let text = connections_table(&s);
        let channels = &text[text.find("\nchannel ").expect("a channel block")..];
        let expected = "
channel inventory (round_robin, replicas from the discovery file /d.toml, 5 retries, 0 hedges, 0 held back by the budget):
  replica              state    transport  in flight  calls  ewma µs  conn
  pid 7                ready    shm        2          40     4.5      1
  tcp://10.0.0.6:7000  ejected  tcp        0          0      -        12
      ejected for failing call after call: 9000 ms left (ejection 1)
";
        assert_eq!(channels, expected, "\n{channels}");
    }

    #[test]
    fn connections_table_aligns_columns_and_lists_rejected_below() {
        let text = connections_table(&snapshot());
        let expected = "\
tour (pid 4242) on host box, switchyard 0.1.0
serves: Calculator; listens: unix:///run/x.sock

id  role    state   transport  peer          calls ok/failed  bytes sent/recv  p50/p99 µs  reason
1   client  open    unix       tour/4242     3/1              312 B/1.5 MiB    41.0/1234   same host: a Unix socket is the fastest track it offers
    rejected tcp: a Unix socket is faster on the same host
    rejected shm: not implemented in this version
12  server  closed  tcp        calc/7@other  0/0              0 B/0 B          -           the client connected to this server's tcp listener
";
        assert_eq!(text, expected, "\n{text}");
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "no trailing spaces"
        );
    }

    #[test]
    fn layers_show_in_order_with_their_refusals() {
        let mut snap = snapshot();
        snap.layers.push(crate::debug::model::LayerStackInfo {
            side: "server".into(),
            owner: "Calculator".into(),
            layers: vec![
                crate::debug::model::LayerInfo {
                    name: "require-bearer".into(),
                    rejected: 3,
                },
                crate::debug::model::LayerInfo {
                    name: "concurrency-limit".into(),
                    rejected: 0,
                },
            ],
        });
        let text = connections_table(&snap);
        assert!(
            text.contains(
                "layers of server Calculator: require-bearer (3 refused) > concurrency-limit (0 refused)\n"
            ),
            "\n{text}"
        );
    }

    #[test]
    fn streams_show_below_their_connection() {
        let mut snap = snapshot();
        snap.connections[1].streams = crate::debug::model::StreamsInfo {
            open: 3,
            stalled: 1,
            messages_sent: 120,
            messages_received: 7,
        };
        let text = connections_table(&snap);
        assert!(
            text.ends_with(
                "    streams: 3 open (1 waiting for credit), 120 messages sent, 7 received\n"
            ),
            "\n{text}"
        );
        // A connection that never streamed shows no such line.
        assert_eq!(text.matches("streams:").count(), 1, "\n{text}");
    }

    #[test]
    fn compression_shows_its_choice_and_what_it_saved() {
        let mut snap = snapshot();
        snap.connections[1].compression = crate::debug::model::CompressionInfo {
            on: true,
            reason: "zstd level 1 for payloads of 1024 bytes or more: tcp to another host".into(),
            moved: crate::debug::model::CompressionTrack {
                payloads_sent: 2,
                raw_bytes_sent: 128 * 1024,
                wire_bytes_sent: 4 * 1024,
                payloads_received: 1,
                wire_bytes_received: 1024,
                raw_bytes_received: 64 * 1024,
                ..Default::default()
            },
        };
        snap.connections[0].compression.reason =
            "compression off: unix moves bytes through memory".into();
        let text = connections_table(&snap);
        assert!(
            text.ends_with(
                "    compression: zstd level 1 for payloads of 1024 bytes or more: tcp to another \
                 host; sent 2 payloads of 128.0 KiB as 4.0 KiB (32.0x), received 1 of 1.0 KiB as \
                 64.0 KiB; saved 187.0 KiB\n"
            ),
            "\n{text}"
        );
        // Off on a link through memory, and nothing moved: no line.
        assert!(!text.contains("compression off"), "\n{text}");
    }

    #[test]
    fn an_empty_snapshot_says_so() {
        let text = connections_table(&Snapshot::default());
        assert_eq!(
            text,
            "? (pid 0) on host unknown host, switchyard ?\nserves: none; listens: none\n\nno connections\n"
        );
    }

    #[test]
    fn peers_without_a_process_name_show_pid_or_address() {
        let mut p = PeerInfo {
            addr: "tcp://1.2.3.4:5".into(),
            ..PeerInfo::default()
        };
        assert_eq!(peer(&p, "box"), "tcp://1.2.3.4:5");
        p.pid = Some(9);
        assert_eq!(peer(&p, "box"), "pid 9");
        p.addr.clear();
        p.pid = None;
        assert_eq!(peer(&p, "box"), "-");
    }

    #[test]
    fn byte_counts_are_human_readable() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn peer_supplied_text_cannot_reach_the_terminal_raw() {
        let mut snap = snapshot();
        snap.process.name = "svc\u{1b}]0;owned\u{7}".into();
        snap.connections[0].peer.process = "evil\u{1b}[2J\u{1b}[H\u{9b}31m\u{202e}".into();
        snap.connections[0].peer.hostname = "h\u{1b}[1A".into();
        snap.connections[0].reason = "ok\r\u{1b}[Kfaked".into();
        let text = connections_table(&snap);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(text.contains("evil\\u{1b}[2J"), "{text}");
        assert!(text.contains("svc\\u{1b}]0;owned\\u{7}"), "{text}");
        assert_eq!(escape_terminal("plain text, ü"), "plain text, ü");
        let entries = vec![Entry {
            name: "x".into(),
            pid: 1,
            start_time: None,
            boot_id: String::new(),
            ipc_ns: 0,
            endpoints: vec![crate::transport::Endpoint::Unix("/\u{1b}[31m.sock".into())],
            unknown_endpoints: Vec::new(),
            services: vec!["S\u{7}".into()],
            published_ms: 0,
            debug: Some("http://127.0.0.1:9/debug/switchyard".into()),
        }];
        let text = services_table(&entries);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("debug"), "{text}");
        assert!(
            text.contains("http://127.0.0.1:9/debug/switchyard"),
            "{text}"
        );
    }

    #[test]
    fn services_table_lists_entries() {
        let entries = vec![Entry {
            name: "calculator".into(),
            pid: 4242,
            start_time: None,
            boot_id: String::new(),
            ipc_ns: 0,
            endpoints: vec![
                crate::transport::Endpoint::Unix("/run/x.sock".into()),
                crate::transport::Endpoint::Tcp("127.0.0.1:7000".into()),
            ],
            unknown_endpoints: Vec::new(),
            services: vec!["Calculator".into(), "Extra".into()],
            published_ms: 0,
            debug: None,
        }];
        assert_eq!(
            services_table(&entries),
            "\
name        pid   services           endpoints
calculator  4242  Calculator, Extra  unix:///run/x.sock tcp://127.0.0.1:7000
"
        );
        assert_eq!(services_table(&[]), "no live entries\n");
    }
}
