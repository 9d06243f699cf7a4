//! The compression table (`--only-compression`, and after the layers table
//! in a full run): 64 KiB `echo` round trips to a server child in a network
//! namespace of its own, reached through a veth pair ([`crate::netns`]), so
//! that each side's default compression ([`Compression::auto`]) compresses:
//! over tcp and over quic, with compression on (auto on both sides) and off
//! ([`Compression::off`] on both sides: the child gets it through
//! [`COMPRESSION_ENV`]), one after the other in one run.
//!
//! Payloads, both deterministic: 64 KiB of JSON lines (log records with
//! varied fields and a random trace id each, as a service would ship them),
//! and 64 KiB of pseudo-random bytes (incompressible: with compression on,
//! zstd runs on every payload and its output is thrown away). Then the JSON
//! rows again with both ends of the veth shaped to each of [`RATES`] in turn
//! (`tc`, see [`Veth::shape`]), where the bytes compression saves cost time
//! on the wire.
//!
//! Per row: p50 and p99 of a round trip one call at a time, calls/s with
//! [`CONCURRENCY`] in flight, CPU per call of each side, and the bytes one
//! call (request and reply) moves, measured over calls made one at a time
//! two ways: payload bytes on the wire from the client's compression
//! counters (a payload sent plain counts its 64 KiB), and the veth's own
//! byte counters (whole packets: framing, TLS, TCP or QUIC and IP headers,
//! ACKs included).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use switchyard::debug::model::CompressionTrack;
use switchyard::{Bytes, Channel, Compression, Server, Transport};

use crate::bench::{
    self, BenchClient, BenchServer, CONCURRENCY, ChildGuard, Echo, Figures, Settings, announce,
    measure_calls,
};
use crate::netns::{self, Veth};
use crate::report::Table;

/// Payload of every round trip, bytes (each way).
const PAYLOAD: usize = 64 * 1024;
/// Set in a child: `auto` or `off`, its server's compression.
const COMPRESSION_ENV: &str = "SWITCHYARD_BENCH_COMPRESSION";
/// The rates of the shaped rows, each way (tc rates), unless [`RATES_ENV`]
/// names others.
const RATES: &str = "1gbit,100mbit";
/// Set to tc rates (`10mbit,1gbit`; `none`: no shaped rows): the rates of
/// the shaped rows instead of [`RATES`]. A plain call takes ten times longer
/// at a tenth of the rate.
const RATES_ENV: &str = "SWITCHYARD_BENCH_COMPRESS_RATES";

/// The rates of the shaped rows.
fn rates() -> Vec<String> {
    let rates = std::env::var(RATES_ENV).unwrap_or_else(|_| RATES.to_owned());
    rates
        .split(',')
        .map(str::trim)
        .filter(|rate| !rate.is_empty() && *rate != "none")
        .map(str::to_owned)
        .collect()
}

/// What a row echoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// JSON lines ([`json_lines`]).
    Json,
    /// Pseudo-random bytes ([`random_bytes`]).
    Random,
}

impl Body {
    fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON lines",
            Self::Random => "random",
        }
    }

    fn bytes(self) -> Vec<u8> {
        match self {
            Self::Json => json_lines(PAYLOAD),
            Self::Random => random_bytes(PAYLOAD),
        }
    }
}

/// One row's setup.
#[derive(Clone, Debug)]
struct Case {
    transport: Transport,
    body: Body,
    /// Compression auto on both sides (else off on both).
    on: bool,
    /// The rate the veth is shaped to, if it is.
    rate: Option<String>,
}

impl Case {
    fn compression(&self) -> Compression {
        if self.on {
            Compression::auto()
        } else {
            Compression::off()
        }
    }

    fn link(&self) -> String {
        match &self.rate {
            Some(rate) => format!("veth {rate}"),
            None => "veth".to_owned(),
        }
    }
}

/// The groups of rows in table order, each on one link with one payload:
/// the bare veth with each payload, then the veth shaped to each of `rates`
/// with JSON lines.
fn groups(rates: &[String]) -> Vec<(Option<String>, Body)> {
    let mut groups = vec![(None, Body::Json), (None, Body::Random)];
    groups.extend(rates.iter().map(|rate| (Some(rate.clone()), Body::Json)));
    groups
}

/// A group's rows: each transport with compression on, then off.
fn cases(transports: &[Transport], rate: Option<&String>, body: Body) -> Vec<Case> {
    let mut cases = Vec::new();
    for &transport in transports {
        for on in [true, false] {
            cases.push(Case {
                transport,
                body,
                on,
                rate: rate.cloned(),
            });
        }
    }
    cases
}

/// How much to measure.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// On the bare veth.
    settings: Settings,
    /// On a shaped veth (a plain call takes a millisecond there at 1gbit,
    /// ten at 100mbit).
    shaped: Settings,
    /// Calls one at a time whose bytes are counted.
    byte_calls: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                settings: Settings {
                    iterations: 500,
                    warmup: 50,
                    throughput_for: Duration::from_millis(500),
                },
                shaped: Settings {
                    iterations: 100,
                    warmup: 10,
                    throughput_for: Duration::from_millis(500),
                },
                byte_calls: 100,
            }
        } else {
            Self {
                settings: Settings {
                    iterations: 5_000,
                    warmup: 500,
                    throughput_for: Duration::from_secs(2),
                },
                shaped: Settings {
                    iterations: 500,
                    warmup: 50,
                    throughput_for: Duration::from_secs(2),
                },
                byte_calls: 300,
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} KiB echo round trips: {} measured one at a time after {} warm-up ({} and {} on \
             a shaped link); calls/s over {:.1} s with {CONCURRENCY} calls in flight on one \
             connection; bytes counted over {} calls one at a time",
            PAYLOAD / 1024,
            self.settings.iterations,
            self.settings.warmup,
            self.shaped.iterations,
            self.shaped.warmup,
            self.settings.throughput_for.as_secs_f64(),
            self.byte_calls
        )
    }
}

/// What one row measured.
#[derive(Clone, Debug)]
struct Measured {
    case: Case,
    figures: Figures,
    /// Payload bytes on the wire per call, both ways, from the client's
    /// compression counters.
    payload_bytes: f64,
    /// Bytes through the veth per call, both ways.
    veth_bytes: f64,
    /// What the client's counters moved over the counted calls.
    moved: CompressionTrack,
}

impl Measured {
    /// Raw payload bytes per payload byte on the wire.
    fn ratio(&self) -> f64 {
        (2 * PAYLOAD) as f64 / self.payload_bytes
    }
}

/// The table, or why it was not measured.
pub(crate) struct Compressed {
    intro: String,
    notes: Vec<String>,
    outcome: Result<Table, String>,
}

/// Measures and prints the table. An error if it could not be measured,
/// `Ok` with the reason inside when `skip_quietly` (a full run, which goes
/// on without it).
pub(crate) fn run(quick: bool, skip_quietly: bool) -> Result<Compressed, String> {
    let plan = Plan::new(quick);
    bench::pin(0);
    let intro = format!(
        "{}; server child in a network namespace reached through a veth pair; compression \
         on: auto on both sides (zstd level {} for payloads of {} bytes or more, as across \
         network namespaces), off: Compression::off() on both sides; pinned to CPUs 0 and 1: {}",
        plan.describe(),
        Compression::DEFAULT_LEVEL,
        Compression::DEFAULT_MIN_SIZE,
        if bench::pinning() { "yes" } else { "no" }
    );
    println!("\ncompression: {intro}");
    let outcome = measure(&plan);
    let mut compressed = Compressed {
        intro,
        notes: Vec::new(),
        outcome: Err(String::new()),
    };
    match outcome {
        Ok((rows, notes)) => {
            let table = table(&rows);
            print!("{}", table.markdown_aligned());
            for note in &notes {
                println!("{note}");
            }
            compressed.notes = notes;
            compressed.outcome = Ok(table);
        }
        Err(why) if skip_quietly => {
            println!("compression not measured: {why}");
            compressed.outcome = Err(why);
        }
        Err(why) => return Err(format!("compression: {why}")),
    }
    Ok(compressed)
}

/// The transports measured: tcp, and quic where this build has the lab's
/// `quic` feature.
fn transports() -> Vec<Transport> {
    [Transport::Tcp, Transport::Quic]
        .into_iter()
        .filter(|t| t.is_available() && (*t != Transport::Quic || cfg!(feature = "quic")))
        .collect()
}

/// Every row, and the notes to print under the table.
fn measure(plan: &Plan) -> Result<(Vec<Measured>, Vec<String>), String> {
    netns::may_make_namespaces()?;
    let veth = Veth::new()?;
    let mut notes = vec![format!(
        "children in network namespace {} at {}, reached through {}",
        veth.namespace(),
        veth.child_addr(),
        veth.outer()
    )];
    let transports = transports();
    if !transports.contains(&Transport::Quic) {
        notes.push("quic: not in this build (the `quic` feature)".to_owned());
    }
    let mut rows = Vec::new();
    for (rate, body) in groups(&rates()) {
        let settings = match &rate {
            None => &plan.settings,
            Some(rate) => match veth.shape(rate) {
                Ok(how) => {
                    notes.push(format!("veth {rate}: {how}"));
                    &plan.shaped
                }
                Err(why) => {
                    notes.push(format!("veth {rate} rows not measured: {why}"));
                    continue;
                }
            },
        };
        for case in cases(&transports, rate.as_ref(), body) {
            let row = measure_row(case, &veth, settings, plan.byte_calls)?;
            notes.extend(check(&row, plan.byte_calls));
            println!(
                "  measured {} {} {} {}: p50 {:.1} µs, {:.0} calls/s",
                row.case.transport,
                row.case.link(),
                row.case.body.name(),
                if row.case.on { "on" } else { "off" },
                row.figures.p50_us,
                row.figures.calls_per_s
            );
            rows.push(row);
        }
        if let Some(rate) = &rate {
            if let Some(drops) = veth.shaper_drops() {
                notes.push(format!(
                    "the {rate} shapers dropped {drops} packets over their rows"
                ));
            }
            veth.unshape()?;
        }
    }
    notes.push(
        "payload B/call: request and reply payload bytes on the wire per call, from the \
         client's compression counters (a payload sent plain counts its 64 KiB); veth B/call: \
         bytes through the veth per call as the kernel counts them (framing, TLS, TCP or QUIC, \
         IP and Ethernet headers and ACKs included; a 64 KiB GSO packet counts its headers \
         once); ratio: raw payload bytes over payload bytes on the wire"
            .to_owned(),
    );
    Ok((rows, notes))
}

/// What looks wrong about `row`'s compression, if anything.
fn check(row: &Measured, calls: u64) -> Option<String> {
    let m = &row.moved;
    let case = &row.case;
    let expected = match (case.on, case.body) {
        // Both sides compress each payload.
        (true, Body::Json) => m.payloads_sent == calls && m.payloads_received == calls,
        // The client tries each and sends it plain; the server too.
        (true, Body::Random) => m.payloads_sent == 0 && m.incompressible == calls,
        (false, _) => m.payloads_sent == 0 && m.payloads_received == 0 && m.incompressible == 0,
    };
    (!expected).then(|| {
        format!(
            "unexpected: {} {} {} compression {}: over {calls} calls the client's counters \
             moved {m:?}",
            case.transport,
            case.link(),
            case.body.name(),
            if case.on { "on" } else { "off" }
        )
    })
}

/// The client side of `channel`'s connection, as the debug snapshot shows
/// it: whether it compresses, why, and what it moved.
fn client_view(channel: &Channel) -> Result<switchyard::debug::model::CompressionInfo, String> {
    let peer = channel.peer().addr;
    switchyard::debug::snapshot()
        .connections
        .into_iter()
        .find(|c| c.role == "client" && c.state == "open" && c.peer.addr == peer)
        .map(|c| c.compression)
        .ok_or_else(|| format!("the debug snapshot has no open client connection to {peer}"))
}

/// What moved between two readings of the counters.
fn moved_since(before: &CompressionTrack, after: &CompressionTrack) -> CompressionTrack {
    CompressionTrack {
        payloads_sent: after.payloads_sent - before.payloads_sent,
        raw_bytes_sent: after.raw_bytes_sent - before.raw_bytes_sent,
        wire_bytes_sent: after.wire_bytes_sent - before.wire_bytes_sent,
        incompressible: after.incompressible - before.incompressible,
        payloads_received: after.payloads_received - before.payloads_received,
        wire_bytes_received: after.wire_bytes_received - before.wire_bytes_received,
        raw_bytes_received: after.raw_bytes_received - before.raw_bytes_received,
    }
}

/// Payload bytes on the wire per call, both ways, when `calls` calls moved
/// `m`: compressed payloads at their wire size, the others at [`PAYLOAD`].
fn payload_bytes_per_call(m: &CompressionTrack, calls: u64) -> f64 {
    let plain = |compressed: u64| calls.saturating_sub(compressed) * PAYLOAD as u64;
    let total = m.wire_bytes_sent
        + plain(m.payloads_sent)
        + m.wire_bytes_received
        + plain(m.payloads_received);
    total as f64 / calls as f64
}

/// Starts the child of `case` behind `veth` and connects to it.
async fn connect(case: &Case, veth: &Veth) -> Result<(ChildGuard, Channel, String), String> {
    let mode = OsStr::new(if case.on { "auto" } else { "off" });
    let env = [(COMPRESSION_ENV, mode)];
    let builder = Channel::builder().compression(case.compression());
    match case.transport {
        #[cfg(feature = "quic")]
        Transport::Quic => {
            let (child, addr, pin) = crate::bench_quic::spawn("compress-quic", Some(veth), &env)?;
            let target = switchyard::transport::quic::url(addr);
            let link = switchyard::transport::quic::connect(&addr.to_string(), &pin)
                .await
                .map_err(|e| format!("connecting to {target}: {e}"))?;
            let channel = builder
                .connect_link(link)
                .await
                .map_err(|e| format!("the handshake over {target}: {e}"))?;
            Ok((child, channel, target))
        }
        _ => {
            let (child, endpoints) = netns::spawn("compress-tcp", Some(veth), &env, "its address")?;
            let target = endpoints
                .split(' ')
                .find(|e| e.starts_with("tcp://"))
                .ok_or_else(|| format!("the child offers no tcp endpoint: {endpoints}"))?
                .to_owned();
            // Demanded: a same-host connection could otherwise move to
            // shared memory after the handshake.
            let channel = builder
                .prefer(Transport::Tcp)
                .connect(&target)
                .await
                .map_err(|e| format!("connecting to {target}: {e}"))?;
            Ok((child, channel, target))
        }
    }
}

/// Measures one row.
fn measure_row(
    case: Case,
    veth: &Veth,
    settings: &Settings,
    byte_calls: u64,
) -> Result<Measured, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let (child, channel, target) = connect(&case, veth).await?;
        let selection = channel.selection();
        if selection.transport != case.transport {
            return Err(format!(
                "the {} rows need {}, but connecting to {target} selected {selection}",
                case.transport, case.transport
            ));
        }
        let view = client_view(&channel)?;
        if view.on != case.on {
            return Err(format!(
                "the client's compression over {target} is {} where it should be {}: {}",
                if view.on { "on" } else { "off" },
                if case.on { "on" } else { "off" },
                view.reason
            ));
        }
        let client = BenchClient::new(channel.clone());
        let payload = Bytes::from(case.body.bytes());
        let back = client
            .echo(payload.clone())
            .await
            .map_err(|e| format!("echo over {target}: {e}"))?;
        if back != payload {
            return Err(format!(
                "echo over {target} returned {} bytes that differ from the {} sent",
                back.len(),
                payload.len()
            ));
        }
        let target = std::sync::Arc::new(target);
        let call = move || {
            let (client, payload, target) = (client.clone(), payload.clone(), target.clone());
            async move {
                let back = client
                    .echo(payload)
                    .await
                    .map_err(|e| format!("echo over {target}: {e}"))?;
                if back.len() != PAYLOAD {
                    return Err(format!(
                        "echo over {target}: {} bytes came back, not {PAYLOAD}",
                        back.len()
                    ));
                }
                Ok(())
            }
        };
        let figures = measure_calls(child.pid(), settings, call.clone()).await?;
        let counters = client_view(&channel)?.moved;
        let wire = veth.bytes()?;
        for _ in 0..byte_calls {
            call().await?;
        }
        let veth_bytes = veth.bytes()?.saturating_sub(wire) as f64 / byte_calls as f64;
        let moved = moved_since(&counters, &client_view(&channel)?.moved);
        drop(child);
        Ok(Measured {
            case,
            figures,
            payload_bytes: payload_bytes_per_call(&moved, byte_calls),
            veth_bytes,
            moved,
        })
    })
}

fn table(rows: &[Measured]) -> Table {
    let header = [
        "transport".to_owned(),
        "link".to_owned(),
        "payload".to_owned(),
        "compression".to_owned(),
        "p50 µs".to_owned(),
        "p99 µs".to_owned(),
        format!("calls/s ({CONCURRENCY} in flight)"),
        "CPU µs/call, 1 in flight".to_owned(),
        format!("CPU µs/call, {CONCURRENCY} in flight"),
        "payload B/call".to_owned(),
        "veth B/call".to_owned(),
        "ratio".to_owned(),
    ];
    let rows = rows
        .iter()
        .map(|row| {
            let f = &row.figures;
            vec![
                row.case.transport.as_str().to_owned(),
                row.case.link(),
                format!("{} 64 KiB", row.case.body.name()),
                if row.case.on { "on" } else { "off" }.to_owned(),
                format!("{:.1}", f.p50_us),
                format!("{:.1}", f.p99_us),
                format!("{:.0}", f.calls_per_s),
                f.cpu_one.text(),
                f.cpu_many.text(),
                format!("{:.0}", row.payload_bytes),
                format!("{:.0}", row.veth_bytes),
                format!("{:.2}x", row.ratio()),
            ]
        })
        .collect();
    Table {
        header: header.to_vec(),
        rows,
    }
}

/// Adds the table to the section `switchyard-bench --report` wrote into
/// `report`.
pub(crate) fn write_report(report: &Path, compressed: &Compressed) -> Result<(), String> {
    let mut out = format!("**Compression**: {}.", compressed.intro);
    match &compressed.outcome {
        Ok(table) => {
            let _ = write!(out, "\n\n{}", table.markdown());
            for note in &compressed.notes {
                // A sentence each: capitalised, with a full stop.
                let mut chars = note.chars();
                let first = chars.next().map(|c| c.to_uppercase().to_string());
                let _ = writeln!(out, "\n{}{}.", first.unwrap_or_default(), chars.as_str());
            }
        }
        Err(why) => {
            let _ = writeln!(out, " Not measured: {why}.");
        }
    }
    crate::report::append(report, &out)
}

/// In a child process: `compress-tcp` serves `echo` over TCP,
/// `compress-quic` over QUIC, bound to [`netns::bind_addr`], with the
/// compression [`COMPRESSION_ENV`] names.
pub(crate) fn child(role: &str) -> Result<(), String> {
    let compression = match std::env::var(COMPRESSION_ENV).as_deref() {
        Ok("auto") => Compression::auto(),
        Ok("off") => Compression::off(),
        other => return Err(format!("{COMPRESSION_ENV} is {other:?}, not auto or off")),
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async {
        match role {
            "compress-tcp" => {
                let server = Server::builder()
                    .add_service(BenchServer::new(Echo::new()?))
                    .compression(compression)
                    .unpublished()
                    .no_unix()
                    .message_queues(false)
                    .tcp(netns::bind_addr()?.to_string())
                    .start()
                    .await
                    .map_err(|e| format!("server: {e}"))?;
                announce(&server.endpoints().join(" "));
                // Runs until the parent kills it or closes our stdin.
                std::future::pending::<()>().await;
                Ok(())
            }
            #[cfg(feature = "quic")]
            "compress-quic" => crate::bench_quic::serve_switchyard(compression).await,
            other => Err(format!("unknown role {other}")),
        }
    })
}

/// 64-bit pseudo-random numbers (splitmix64) from a fixed seed: the same
/// payloads every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// `len` bytes of JSON lines: request log records as a service would ship
/// them, each with a random 128-bit trace id, varied users, paths, statuses
/// and latencies (the last line cut at `len`).
fn json_lines(len: usize) -> Vec<u8> {
    let mut rng = SplitMix(0x5157_6974_6368_7961);
    let mut out = String::with_capacity(len + 512);
    let mut ms = 1_796_000_000_000u64;
    while out.len() < len {
        ms += rng.below(40);
        let level = if rng.below(20) == 0 { "warn" } else { "info" };
        let method = rng.pick(&["GET", "GET", "GET", "POST", "PUT", "DELETE"]);
        let resource = rng.pick(&["orders", "carts", "users", "items", "invoices"]);
        let status = rng.pick(&["200", "200", "200", "201", "204", "404", "409", "500"]);
        let _ = writeln!(
            out,
            "{{\"ts\":{ms},\"level\":\"{level}\",\"service\":\"checkout\",\"host\":\"web-{:02}\",\
             \"trace_id\":\"{:016x}{:016x}\",\"user_id\":{},\"method\":\"{method}\",\
             \"path\":\"/api/v1/{resource}/{}\",\"status\":{status},\"latency_ms\":{}.{},\
             \"bytes\":{}}}",
            rng.below(16),
            rng.next(),
            rng.next(),
            10_000 + rng.below(90_000),
            rng.below(1_000_000),
            rng.below(250),
            rng.below(10),
            rng.below(65_536)
        );
    }
    let mut out = out.into_bytes();
    out.truncate(len);
    out
}

/// `len` pseudo-random bytes: incompressible.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut rng = SplitMix(0x0bad_c0de_0bad_c0de);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    // Full paths, no imports: see the note in bench.rs's tests.

    #[test]
    fn the_payloads_are_deterministic_and_of_their_size() {
        let json = super::json_lines(super::PAYLOAD);
        assert_eq!(json.len(), super::PAYLOAD);
        assert_eq!(json, super::json_lines(super::PAYLOAD));
        let text = std::str::from_utf8(&json).expect("text");
        let first = text.lines().next().expect("a line");
        assert!(
            first.starts_with("{\"ts\":") && first.ends_with('}'),
            "{first}"
        );
        let random = super::random_bytes(super::PAYLOAD);
        assert_eq!(random.len(), super::PAYLOAD);
        assert_eq!(random, super::random_bytes(super::PAYLOAD));
        assert_ne!(random[..8], random[8..16]);
    }

    #[test]
    fn plain_payloads_count_their_size_on_the_wire() {
        let none = switchyard::debug::model::CompressionTrack::default();
        let per_call = super::payload_bytes_per_call(&none, 10);
        assert_eq!(per_call, (2 * super::PAYLOAD) as f64);
        let both = switchyard::debug::model::CompressionTrack {
            payloads_sent: 10,
            wire_bytes_sent: 10_000,
            payloads_received: 10,
            wire_bytes_received: 20_000,
            ..Default::default()
        };
        assert_eq!(super::payload_bytes_per_call(&both, 10), 3_000.0);
    }

    #[test]
    fn every_transport_is_measured_on_and_off_per_link_and_payload() {
        use switchyard::Transport;
        let rates = ["1gbit".to_owned(), "100mbit".to_owned()];
        let groups = super::groups(&rates);
        let links: Vec<(Option<&str>, super::Body)> = groups
            .iter()
            .map(|(rate, body)| (rate.as_deref(), *body))
            .collect();
        assert_eq!(
            links,
            [
                (None, super::Body::Json),
                (None, super::Body::Random),
                (Some("1gbit"), super::Body::Json),
                (Some("100mbit"), super::Body::Json),
            ]
        );
        let cases = super::cases(
            &[Transport::Tcp, Transport::Quic],
            Some(&rates[1]),
            super::Body::Json,
        );
        let rows: Vec<(Transport, bool, String)> = cases
            .iter()
            .map(|c| (c.transport, c.on, c.link()))
            .collect();
        let link = "veth 100mbit".to_owned();
        assert_eq!(
            rows,
            [
                (Transport::Tcp, true, link.clone()),
                (Transport::Tcp, false, link.clone()),
                (Transport::Quic, true, link.clone()),
                (Transport::Quic, false, link)
            ]
        );
    }
}
