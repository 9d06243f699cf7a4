//! `/metrics`: the [`Snapshot`] in the Prometheus text exposition format
//! (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use super::model::{MethodStats, MmapTrack, Snapshot};

/// A label value escaped as the text format requires (`\\`, `\"`, `\n`).
struct Label<'a>(&'a str);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A sample value: integers as integers, floats in Go-compatible notation.
struct Value(f64);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v.is_infinite() {
            f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{v}")
        }
    }
}

/// `service="..",method="..",transport="..",role=".."`
struct MethodLabels<'a>(&'a MethodStats);

impl fmt::Display for MethodLabels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "service=\"{}\",method=\"{}\",transport=\"{}\",role=\"{}\"",
            Label(&m.service),
            Label(&m.method),
            Label(&m.transport),
            Label(&m.role)
        )
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// The metrics page.
pub(super) fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + snapshot.methods.len() * 4096);
    // Writing into a String cannot fail.
    let _ = write_metrics(&mut out, snapshot);
    out
}

fn write_metrics(out: &mut String, s: &Snapshot) -> fmt::Result {
    // Series only for what happened: a method nobody called over a
    // transport would otherwise export ~40 zero series (its histogram
    // buckets most of all) for every transport and role.
    let methods: Vec<&MethodStats> = s
        .methods
        .iter()
        .filter(|m| m.calls > 0 || m.bytes_sent > 0 || m.bytes_received > 0)
        .collect();
    let methods = &methods;

    if s.layers.iter().any(|stack| !stack.layers.is_empty()) {
        family(
            out,
            "switchyard_layer_rejections_total",
            "counter",
            "Calls a layer answered itself (refused) instead of calling on.",
        )?;
        for stack in &s.layers {
            for layer in &stack.layers {
                writeln!(
                    out,
                    "switchyard_layer_rejections_total{{side=\"{}\",owner=\"{}\",layer=\"{}\"}} {}",
                    Label(&stack.side),
                    Label(&stack.owner),
                    Label(&layer.name),
                    layer.rejected
                )?;
            }
        }
    }

    family(
        out,
        "switchyard_calls_total",
        "counter",
        "Calls finished (succeeded or failed), by service, method, transport and role.",
    )?;
    for &m in methods {
        writeln!(
            out,
            "switchyard_calls_total{{{}}} {}",
            MethodLabels(m),
            m.calls
        )?;
    }

    family(
        out,
        "switchyard_call_errors_total",
        "counter",
        "Calls that ended with a status other than OK, by status code.",
    )?;
    for &m in methods {
        for (code, n) in &m.errors {
            writeln!(
                out,
                "switchyard_call_errors_total{{{},code=\"{}\"}} {n}",
                MethodLabels(m),
                Label(code)
            )?;
        }
    }

    family(
        out,
        "switchyard_call_duration_seconds",
        "histogram",
        "Call latency as this side measured it, in seconds.",
    )?;
    for &m in methods {
        let labels = MethodLabels(m);
        let mut last = 0;
        for &(le, count) in &m.histogram {
            // The recorder's counts are cumulative; keep them monotonic even
            // if a snapshot raced with a recording.
            last = last.max(count);
            writeln!(
                out,
                "switchyard_call_duration_seconds_bucket{{{labels},le=\"{}\"}} {last}",
                Value(le)
            )?;
        }
        writeln!(
            out,
            "switchyard_call_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {last}"
        )?;
        writeln!(
            out,
            "switchyard_call_duration_seconds_sum{{{labels}}} {}",
            Value(m.latency_sum_seconds)
        )?;
        writeln!(
            out,
            "switchyard_call_duration_seconds_count{{{labels}}} {last}"
        )?;
    }

    family(
        out,
        "switchyard_sent_bytes_total",
        "counter",
        "Bytes this side sent for calls (requests as a client, responses as a server).",
    )?;
    for &m in methods {
        writeln!(
            out,
            "switchyard_sent_bytes_total{{{}}} {}",
            MethodLabels(m),
            m.bytes_sent
        )?;
    }

    family(
        out,
        "switchyard_stream_messages_sent_total",
        "counter",
        "Stream messages this side sent in calls of the method.",
    )?;
    for &m in methods {
        writeln!(
            out,
            "switchyard_stream_messages_sent_total{{{}}} {}",
            MethodLabels(m),
            m.stream_messages_sent
        )?;
    }

    family(
        out,
        "switchyard_stream_messages_received_total",
        "counter",
        "Stream messages this side received in calls of the method.",
    )?;
    for &m in methods {
        writeln!(
            out,
            "switchyard_stream_messages_received_total{{{}}} {}",
            MethodLabels(m),
            m.stream_messages_received
        )?;
    }

    family(
        out,
        "switchyard_received_bytes_total",
        "counter",
        "Bytes this side received for calls.",
    )?;
    for &m in methods {
        writeln!(
            out,
            "switchyard_received_bytes_total{{{}}} {}",
            MethodLabels(m),
            m.bytes_received
        )?;
    }

    // The mmap track: bodies above the bulk threshold of shared-memory
    // connections, moved as memory-mapped regions (process totals, so the
    // counters never go down when a connection closes).
    if s.mmap != MmapTrack::default() {
        family(
            out,
            "switchyard_mmap_bodies_total",
            "counter",
            "Bodies moved as memory-mapped regions beside a shared-memory ring, by direction.",
        )?;
        writeln!(
            out,
            "switchyard_mmap_bodies_total{{direction=\"sent\"}} {}",
            s.mmap.bodies_sent
        )?;
        writeln!(
            out,
            "switchyard_mmap_bodies_total{{direction=\"received\"}} {}",
            s.mmap.bodies_received
        )?;
        family(
            out,
            "switchyard_mmap_bytes_total",
            "counter",
            "Bytes of the bodies moved as memory-mapped regions, by direction.",
        )?;
        writeln!(
            out,
            "switchyard_mmap_bytes_total{{direction=\"sent\"}} {}",
            s.mmap.bytes_sent
        )?;
        writeln!(
            out,
            "switchyard_mmap_bytes_total{{direction=\"received\"}} {}",
            s.mmap.bytes_received
        )?;
        family(
            out,
            "switchyard_shm_pool_bodies_total",
            "counter",
            "Bodies over the bulk threshold sent through the shared-memory pools, or as a region \
             of their own because a pool could not take them.",
        )?;
        writeln!(
            out,
            "switchyard_shm_pool_bodies_total{{path=\"pool\"}} {}",
            s.mmap.pool_bodies_sent
        )?;
        writeln!(
            out,
            "switchyard_shm_pool_bodies_total{{path=\"fallback\"}} {}",
            s.mmap.pool_fallbacks
        )?;
        family(
            out,
            "switchyard_shm_pool_loaned_bodies_total",
            "counter",
            "Of the bodies sent through the shared-memory pools, those sent from a loan, where \
             the caller wrote them (not copied).",
        )?;
        writeln!(
            out,
            "switchyard_shm_pool_loaned_bodies_total {}",
            s.mmap.pool_loaned_bodies
        )?;
        family(
            out,
            "switchyard_shm_pool_bytes",
            "gauge",
            "Shared memory of the sending pools: held (segments) and in use (bodies the peer has \
             not copied out).",
        )?;
        writeln!(
            out,
            "switchyard_shm_pool_bytes{{state=\"held\"}} {}",
            s.mmap.pool_held_bytes
        )?;
        writeln!(
            out,
            "switchyard_shm_pool_bytes{{state=\"in_use\"}} {}",
            s.mmap.pool_in_use_bytes
        )?;
    }

    // Compression: payload bytes before and after, by direction (process
    // totals, closed connections included), once anything was compressed.
    let z = &s.compression;
    if z.payloads_sent + z.payloads_received > 0 {
        family(
            out,
            "switchyard_compressed_payloads_total",
            "counter",
            "Payloads compressed (sent) and decompressed (received), by direction.",
        )?;
        writeln!(
            out,
            "switchyard_compressed_payloads_total{{direction=\"sent\"}} {}",
            z.payloads_sent
        )?;
        writeln!(
            out,
            "switchyard_compressed_payloads_total{{direction=\"received\"}} {}",
            z.payloads_received
        )?;
        family(
            out,
            "switchyard_compressed_bytes_total",
            "counter",
            "Bytes of compressed payloads by direction, uncompressed (raw) and on the wire.",
        )?;
        for (direction, form, value) in [
            ("sent", "raw", z.raw_bytes_sent),
            ("sent", "wire", z.wire_bytes_sent),
            ("received", "raw", z.raw_bytes_received),
            ("received", "wire", z.wire_bytes_received),
        ] {
            writeln!(
                out,
                "switchyard_compressed_bytes_total{{direction=\"{direction}\",form=\"{form}\"}} {value}"
            )?;
        }
    }

    channel_metrics(out, s)?;

    // What listeners did with connection attempts (QUIC: Retries sent,
    // attempts ignored, handshakes started and timed out); only what
    // happened, so a quiet listener exports nothing here.
    if s.listeners.iter().any(|l| !l.attempts.is_empty()) {
        family(
            out,
            "switchyard_listener_attempts_total",
            "counter",
            "Connection attempts a listener handled, by what it did with them.",
        )?;
        for l in &s.listeners {
            for (event, n) in &l.attempts {
                writeln!(
                    out,
                    "switchyard_listener_attempts_total{{listener=\"{}\",event=\"{}\"}} {n}",
                    Label(&l.url),
                    Label(event)
                )?;
            }
        }
    }

    family(
        out,
        "switchyard_connections",
        "gauge",
        "Connections not yet closed, by transport, role and state (open or draining).",
    )?;
    let mut connections: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for c in s.connections.iter().filter(|c| c.state != "closed") {
        *connections
            .entry((&c.transport, &c.role, &c.state))
            .or_default() += 1;
    }
    for ((transport, role, state), n) in connections {
        writeln!(
            out,
            "switchyard_connections{{transport=\"{}\",role=\"{}\",state=\"{}\"}} {n}",
            Label(transport),
            Label(role),
            Label(state)
        )?;
    }

    family(
        out,
        "switchyard_streams",
        "gauge",
        "Streaming calls open now on connections not yet closed, by transport, role and \
         state (stalled: waiting for the peer's credit).",
    )?;
    let mut streams: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for c in s.connections.iter().filter(|c| c.state != "closed") {
        let entry = streams.entry((&c.transport, &c.role)).or_default();
        entry.0 += c.streams.open;
        entry.1 += c.streams.stalled;
    }
    for ((transport, role), (open, stalled)) in streams {
        for (state, n) in [("open", open), ("stalled", stalled)] {
            writeln!(
                out,
                "switchyard_streams{{transport=\"{}\",role=\"{}\",state=\"{state}\"}} {n}",
                Label(transport),
                Label(role),
            )?;
        }
    }
    Ok(())
}

/// Channels to names, summed over the channels of one target: retries, and
/// per replica its state, calls in flight, latency estimate and ejections.
fn channel_metrics(out: &mut String, s: &Snapshot) -> fmt::Result {
    if s.channels.is_empty() {
        return Ok(());
    }
    let mut retries: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let mut states: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    // (target, replica) -> (in flight, ejections, latency EWMA in µs)
    let mut replicas: BTreeMap<(&str, &str), (u64, u64, Option<f64>)> = BTreeMap::new();
    for c in &s.channels {
        let r = retries.entry(&c.target).or_default();
        r.0 += c.retries;
        r.1 += c.retries_throttled;
        r.2 += c.hedges;
        for replica in &c.replicas {
            *states.entry((&c.target, &replica.state)).or_default() += 1;
            let e = replicas.entry((&c.target, &replica.key)).or_default();
            e.0 += replica.in_flight;
            e.1 += u64::from(replica.ejections);
            e.2 = match (e.2, replica.latency_ewma_us) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    family(
        out,
        "switchyard_channel_retries_total",
        "counter",
        "Retries of idempotent calls a channel made, by target.",
    )?;
    for (target, (made, _, _)) in &retries {
        writeln!(
            out,
            "switchyard_channel_retries_total{{target=\"{}\"}} {made}",
            Label(target)
        )?;
    }
    family(
        out,
        "switchyard_channel_retries_throttled_total",
        "counter",
        "Retries the retry budget held back, by target.",
    )?;
    for (target, (_, held, _)) in &retries {
        writeln!(
            out,
            "switchyard_channel_retries_throttled_total{{target=\"{}\"}} {held}",
            Label(target)
        )?;
    }
    family(
        out,
        "switchyard_channel_hedges_total",
        "counter",
        "Hedged attempts a channel made (after the first of a call), by target.",
    )?;
    for (target, (_, _, hedges)) in &retries {
        writeln!(
            out,
            "switchyard_channel_hedges_total{{target=\"{}\"}} {hedges}",
            Label(target)
        )?;
    }
    family(
        out,
        "switchyard_channel_replicas",
        "gauge",
        "Replicas behind a channel's target, by state (ready, ejected, idle, connecting, draining, failed).",
    )?;
    for ((target, state), n) in &states {
        writeln!(
            out,
            "switchyard_channel_replicas{{target=\"{}\",state=\"{}\"}} {n}",
            Label(target),
            Label(state)
        )?;
    }
    family(
        out,
        "switchyard_replica_in_flight",
        "gauge",
        "Calls in flight on a replica.",
    )?;
    for ((target, replica), (in_flight, _, _)) in &replicas {
        writeln!(
            out,
            "switchyard_replica_in_flight{{target=\"{}\",replica=\"{}\"}} {in_flight}",
            Label(target),
            Label(replica)
        )?;
    }
    family(
        out,
        "switchyard_replica_ejections_total",
        "counter",
        "Times a replica was ejected for failing call after call.",
    )?;
    for ((target, replica), (_, ejections, _)) in &replicas {
        writeln!(
            out,
            "switchyard_replica_ejections_total{{target=\"{}\",replica=\"{}\"}} {ejections}",
            Label(target),
            Label(replica)
        )?;
    }
    family(
        out,
        "switchyard_replica_latency_ewma_seconds",
        "gauge",
        "The peak-EWMA latency of a replica's unary calls, as peak_ewma balancing weighs it.",
    )?;
    for ((target, replica), (_, _, ewma)) in &replicas {
        if let Some(us) = ewma {
            writeln!(
                out,
                "switchyard_replica_latency_ewma_seconds{{target=\"{}\",replica=\"{}\"}} {}",
                Label(target),
                Label(replica),
                Value(us / 1e6)
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::model::ConnectionInfo;
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_complete() {
        let mut s = Snapshot::default();
        s.methods.push(MethodStats {
            service: "Svc\"\\\n".into(),
            method: "m".into(),
            transport: "unix".into(),
            role: "client".into(),
            calls: 3,
            errors: [("DEADLINE_EXCEEDED".to_owned(), 1)].into_iter().collect(),
            histogram: vec![(1e-6, 0), (2e-6, 2), (4e-6, 3)],
            latency_sum_seconds: 5e-6,
            ..MethodStats::default()
        });
        s.connections.push(ConnectionInfo {
            transport: "tcp".into(),
            role: "server".into(),
            state: "open".into(),
            ..ConnectionInfo::default()
        });
        s.connections.push(ConnectionInfo {
            transport: "tcp".into(),
            role: "server".into(),
            state: "closed".into(),
            ..ConnectionInfo::default()
        });
        let text = render(&s);
        let labels = r#"service="Svc\"\\\n",method="m",transport="unix",role="client""#;
        for line in [
            format!("switchyard_calls_total{{{labels}}} 3"),
            format!("switchyard_call_errors_total{{{labels},code=\"DEADLINE_EXCEEDED\"}} 1"),
            format!("switchyard_call_duration_seconds_bucket{{{labels},le=\"0.000002\"}} 2"),
            format!("switchyard_call_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 3"),
            format!("switchyard_call_duration_seconds_count{{{labels}}} 3"),
            format!("switchyard_call_duration_seconds_sum{{{labels}}} 0.000005"),
            "switchyard_connections{transport=\"tcp\",role=\"server\",state=\"open\"} 1".into(),
            format!("switchyard_stream_messages_sent_total{{{labels}}} 0"),
            "switchyard_streams{transport=\"tcp\",role=\"server\",state=\"stalled\"} 0".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("state=\"closed\""));
        assert_eq!(text.matches("# TYPE ").count(), 9);
        // A method nobody called exports nothing.
        s.methods.push(MethodStats {
            service: "Idle".into(),
            method: "never".into(),
            transport: "tcp".into(),
            role: "server".into(),
            histogram: vec![(1e-6, 0), (2e-6, 0)],
            ..MethodStats::default()
        });
        assert!(!render(&s).contains("Idle"), "{}", render(&s));
        assert!(
            !render(&s).contains("mmap"),
            "no mmap series before anything moved"
        );
        assert!(
            !render(&s).contains("switchyard_listener_attempts_total"),
            "no attempt series before any attempt"
        );
        s.listeners.push(crate::debug::ListenerInfo {
            url: "quic://127.0.0.1:4433".into(),
            transport: "quic".into(),
            attempts: [("retried".to_owned(), 3)].into(),
        });
        assert!(
            render(&s)
                .lines()
                .any(|l| l == "switchyard_listener_attempts_total{listener=\"quic://127.0.0.1:4433\",event=\"retried\"} 3"),
            "{}",
            render(&s)
        );
        s.mmap.bodies_sent = 2;
        s.mmap.bytes_sent = 600_000;
        let text = render(&s);
        assert!(
            text.lines()
                .any(|l| l == "switchyard_mmap_bodies_total{direction=\"sent\"} 2")
        );
        assert!(
            text.lines()
                .any(|l| l == "switchyard_mmap_bytes_total{direction=\"sent\"} 600000")
        );
        assert!(!text.contains("switchyard_compressed"), "none before any");
        s.compression.payloads_sent = 3;
        s.compression.raw_bytes_sent = 196_608;
        s.compression.wire_bytes_sent = 2_048;
        let text = render(&s);
        for line in [
            "switchyard_compressed_payloads_total{direction=\"sent\"} 3",
            "switchyard_compressed_bytes_total{direction=\"sent\",form=\"raw\"} 196608",
            "switchyard_compressed_bytes_total{direction=\"sent\",form=\"wire\"} 2048",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
