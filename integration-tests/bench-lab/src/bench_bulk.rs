//! Shared memory's bulk path (`mmap`): `echo` round trips of 1 MiB and
//! 64 MiB [`Bytes`](switchyard::Bytes) over a shm connection, whose bodies
//! do not go through the ring: through each side's pool (segments mapped
//! once and reused; the receiver copies a body out); through the pools
//! with loans (the client copies its payload into a `Channel::loan`, both
//! sides read bodies in place, and the server's echo copies the request
//! into its own pool); and, on a connection whose pools are off, as a
//! sealed memfd of their own mapped by the receiver. Beside them a raw `memcpy` of the same size in this process
//! and the raw cost of one fresh-memfd hand-off done by hand (written with
//! `pwrite`, sealed, mapped read-only with its pages populated, unmapped),
//! the floor of the regions path.
//! GB/s of an echo counts both directions (2 × size × round trips /
//! elapsed), as the pipe bulk table does; a memcpy or a hand-off moves the
//! size once.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use switchyard::transport::shm::bulk_transfers;

use crate::bench::{
    BenchClient, Cpu, CpuMark, IN_PLACE_ENV, POOL_ENV, ScratchDir, connect_shm_with, histogram,
    micros, spawn_child_with,
};

/// The payload sizes measured.
/// 64 KiB is under the bulk threshold: through the ring, except a loan,
/// which is sent from the pool whatever its size.
pub(crate) const SIZES: [usize; 3] = [64 << 10, 1 << 20, 64 << 20];

/// Names other sizes to measure, e.g. `64K` or `16K,64K,256K` (bytes, or
/// with a K or M suffix): to profile one row alone.
pub(crate) const SIZES_ENV: &str = "SWITCHYARD_BENCH_BULK_SIZES";

/// The sizes to measure: [`SIZES`], or those [`SIZES_ENV`] names.
fn sizes() -> Result<Vec<usize>, String> {
    let Ok(text) = std::env::var(SIZES_ENV) else {
        return Ok(SIZES.to_vec());
    };
    text.split(',').map(parse_size).collect()
}

/// `4096`, `64K` or `1M` as bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = match text.strip_suffix(['K', 'k']) {
        Some(digits) => (digits, 1 << 10),
        None => match text.strip_suffix(['M', 'm']) {
            Some(digits) => (digits, 1 << 20),
            None => (text, 1),
        },
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{SIZES_ENV}: {text:?} is not a size (e.g. 4096, 64K, 1M)"))
}

/// One size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct BulkRow {
    /// Payload bytes.
    pub(crate) size: usize,
    /// Through the pools (else: a sealed memfd per body).
    pub(crate) pooled: bool,
    /// With loans and bodies read in place (pooled too).
    pub(crate) loaned: bool,
    /// Measured round trips.
    pub(crate) round_trips: u64,
    /// switchyard shm echo, 10^9 bytes per second, both directions.
    pub(crate) echo_gb_per_s: f64,
    /// Median echo round trip, µs.
    pub(crate) echo_p50_us: f64,
    /// 99th percentile echo round trip, µs.
    pub(crate) echo_p99_us: f64,
    /// CPU each side spent per echo (spinning included).
    pub(crate) cpu: Cpu,
    /// In-process memcpy of the same size, 10^9 bytes per second.
    pub(crate) memcpy_gb_per_s: f64,
    /// One raw sealed-memfd hand-off of the same size, in process.
    pub(crate) handoff_gb_per_s: f64,
    /// Bulk regions sent per round trip (1: the request went as one).
    pub(crate) regions_per_call: f64,
    /// Shared memory this process's pools held right after the row, and
    /// how much of it held bodies not copied out yet.
    pub(crate) pool_held: u64,
    /// See `pool_held`.
    pub(crate) pool_in_use: u64,
}

/// What one run measured.
pub(crate) fn intro() -> String {
    "echo of a `switchyard::Bytes` over shared memory, request and response bodies each \
     through the sender's pool (pool: copied in while encoded, copied out by the receiver; \
     loan: the client copies its payload into a loan, bodies are read in place, the echo \
     copies the request into the server's pool, the client reads every byte of the response) or, with the pools off, as a sealed memfd \
     of its own mapped by the receiver; GB/s = 2 × size × round trips / elapsed; beside a \
     memcpy of the same size in one process (size × copies / elapsed)"
        .to_owned()
}

/// Measures every size.
pub(crate) fn run(quick: bool) -> Result<Vec<BulkRow>, String> {
    // The children pin themselves to CPU 1; this side (the client) takes
    // CPU 0, as the other tables do, so that neither side's spinning takes
    // the other's CPU.
    crate::bench::pin(0);
    let mut rows = run_path(quick, true, false)?;
    rows.extend(run_path(quick, true, true)?);
    rows.extend(run_path(quick, false, false)?);
    Ok(rows)
}

/// Every size through the pools (with loans and reads in place if
/// `loaned`), or with them off on both sides.
fn run_path(quick: bool, pooled: bool, loaned: bool) -> Result<Vec<BulkRow>, String> {
    let dir = ScratchDir::new()?;
    let off = std::ffi::OsStr::new("0");
    let on = std::ffi::OsStr::new("1");
    let env: &[(&str, &std::ffi::OsStr)] = match (pooled, loaned) {
        (false, _) => &[(POOL_ENV, off)],
        (true, true) => &[(IN_PLACE_ENV, on)],
        (true, false) => &[],
    };
    let (child, _endpoints) = spawn_child_with("switchyard", dir.path(), env)?;
    let server = child.pid();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    let sizes = sizes()?;
    let rows = runtime.block_on(async {
        let (channel, _) = connect_shm_with(dir.path(), (!pooled).then_some(0), loaned).await?;
        let client = BenchClient::new(channel);
        let mut rows = Vec::new();
        for size in sizes {
            let round_trips = match (quick, size) {
                (true, s) if s > 8 << 20 => 3,
                (false, s) if s > 8 << 20 => 20,
                (true, s) if s < 1 << 20 => 200,
                (false, s) if s < 1 << 20 => 2000,
                (true, _) => 20,
                (false, _) => 200,
            };
            let mut row = echo(&client, server, size, round_trips, loaned).await?;
            row.pooled = pooled;
            row.loaned = loaned;
            rows.push(row);
        }
        Ok::<_, String>(rows)
    })?;
    drop(child);
    Ok(rows)
}

async fn echo(
    client: &BenchClient,
    server: u32,
    size: usize,
    round_trips: u64,
    loaned: bool,
) -> Result<BulkRow, String> {
    let payload = switchyard::Bytes::from(vec![7u8; size]);
    let call_err = |e: switchyard::Status| format!("{size}-byte echo over shm: {e}");
    // The request: the payload as it is (the encoder copies it into the
    // pool), or copied into a loan by the caller (the encoder does not).
    let request = || {
        if loaned {
            let mut loan = client.channel().loan(size);
            loan.copy_from_slice(&payload);
            loan.freeze()
        } else {
            payload.clone()
        }
    };
    // Warm-up: the first regions fault in pages on both sides.
    for _ in 0..2 {
        client.echo(request()).await.map_err(call_err)?;
    }
    let before = bulk_transfers();
    let mut hist = histogram()?;
    let cpu_before = CpuMark::now(server);
    let start = Instant::now();
    for _ in 0..round_trips {
        let one = Instant::now();
        let back = client.echo(request()).await.map_err(call_err)?;
        let _ = hist.record(one.elapsed().as_nanos() as u64);
        if back.len() != size {
            return Err(format!(
                "a {size}-byte echo came back with {} bytes",
                back.len()
            ));
        }
        // Read in place, a response is not read by the framework at all:
        // the client reads every byte once (a memcmp with the payload), as
        // the other rows' copy-out and iceoryx2's client (which copies its
        // response out) do.
        if loaned && back[..] != payload[..] {
            return Err(format!("a {size}-byte echo came back changed"));
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_before.per_call(CpuMark::now(server), round_trips);
    let after = bulk_transfers();
    let regions = after.sent - before.sent;
    Ok(BulkRow {
        size,
        pooled: true,
        loaned,
        round_trips,
        echo_gb_per_s: 2.0 * size as f64 * round_trips as f64 / elapsed.as_secs_f64() / 1e9,
        echo_p50_us: micros(&hist, 0.5),
        echo_p99_us: micros(&hist, 0.99),
        cpu,
        memcpy_gb_per_s: memcpy_gb_per_s(size),
        handoff_gb_per_s: handoff_gb_per_s(size)?,
        regions_per_call: regions as f64 / round_trips as f64,
        pool_held: after.pool_held,
        pool_in_use: after.pool_in_use,
    })
}

/// Copies `size` bytes between two warm buffers for about 200 ms.
fn memcpy_gb_per_s(size: usize) -> f64 {
    let from = vec![7u8; size];
    let mut to = vec![0u8; size];
    to.copy_from_slice(&from);
    let start = Instant::now();
    let mut copies = 0u64;
    while start.elapsed() < Duration::from_millis(200) || copies < 3 {
        to.copy_from_slice(std::hint::black_box(&from));
        std::hint::black_box(&mut to);
        copies += 1;
    }
    size as f64 * copies as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Hands `size` bytes over through a fresh sealed memfd, as the bulk path
/// does (write, seal, map read-only and populated, unmap), for about 200 ms.
fn handoff_gb_per_s(size: usize) -> Result<f64, String> {
    use switchyard::sys::bulk::{Region, create_region};
    let data = vec![7u8; size];
    let start = Instant::now();
    let mut handoffs = 0u64;
    while start.elapsed() < Duration::from_millis(200) || handoffs < 3 {
        let fd = create_region(&[&data]).map_err(|e| format!("raw hand-off: {e}"))?;
        let region = Region::map(&fd, size).map_err(|e| format!("raw hand-off: {e}"))?;
        std::hint::black_box(region.as_ref().last());
        drop((region, fd));
        handoffs += 1;
    }
    Ok(size as f64 * handoffs as f64 / start.elapsed().as_secs_f64() / 1e9)
}

fn size_name(size: usize) -> String {
    if size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

fn path_name(row: &BulkRow) -> &'static str {
    match (row.pooled, row.loaned) {
        (true, true) => "loan",
        (true, false) => "pool",
        (false, _) => "regions",
    }
}

/// The rows as a text table.
pub(crate) fn text(rows: &[BulkRow]) -> String {
    let mut out = format!(
        "{:<8} {:<8} {:>10} {:>10} {:>10} {:>14} {:>12} {:>10} {:>13} {:>12} {:>13}\n",
        "size",
        "path",
        "echo GB/s",
        "p50 µs",
        "p99 µs",
        "cpu µs/echo",
        "memcpy GB/s",
        "vs memcpy",
        "handoff GB/s",
        "vs handoff",
        "regions/call"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:>10.2} {:>10.0} {:>10.0} {:>14} {:>12.2} {:>9.2}x {:>13.2} {:>11.2}x {:>13.1}",
            size_name(row.size),
            path_name(row),
            row.echo_gb_per_s,
            row.echo_p50_us,
            row.echo_p99_us,
            row.cpu.text(),
            row.memcpy_gb_per_s,
            row.echo_gb_per_s / row.memcpy_gb_per_s,
            row.handoff_gb_per_s,
            row.echo_gb_per_s / row.handoff_gb_per_s,
            row.regions_per_call
        );
    }
    out
}

/// The pooled rows beside iceoryx2 request-response of the same size
/// (copy in and out, both sides busy-polling), measured in the same run;
/// both as GB/s counting both directions.
pub(crate) fn beside_iceoryx2(rows: &[BulkRow], peers: &[crate::bench_peers::PeerTrip]) -> String {
    let mut out = String::new();
    for row in rows.iter().filter(|r| r.pooled) {
        let Some(peer) = crate::bench_peers::iceoryx2_of(peers, row.size as u64) else {
            continue;
        };
        // One call at a time both: GB/s from each median round trip.
        let gb_per_s = |p50_us: f64| 2.0 * row.size as f64 / (p50_us * 1e3);
        let _ = writeln!(
            out,
            "iceoryx2 request-response {} (copy in and out, busy-poll): p50 {:.0} µs ({:.2} GB/s \
             at p50); switchyard {} p50 {:.0} µs ({:.2} GB/s at p50): {:.2}x iceoryx2",
            size_name(row.size),
            peer.p50_us,
            gb_per_s(peer.p50_us),
            path_name(row),
            row.echo_p50_us,
            gb_per_s(row.echo_p50_us),
            peer.p50_us / row.echo_p50_us
        );
    }
    out
}

/// What the pools held after each pooled row, and after every connection
/// closed (`bulk_transfers` after the run).
pub(crate) fn pool_memory(rows: &[BulkRow]) -> String {
    let mut out = String::new();
    for row in rows.iter().filter(|r| r.pooled) {
        let _ = writeln!(
            out,
            "{} after the {} rows (client process): {} B held, {} B in use",
            path_name(row),
            size_name(row.size),
            row.pool_held,
            row.pool_in_use
        );
    }
    let end = bulk_transfers();
    let _ = writeln!(
        out,
        "pool at the end of the run, connections closed: {} B held, {} B in use",
        end.pool_held, end.pool_in_use
    );
    out
}

/// The rows as a markdown table.
pub(crate) fn markdown(rows: &[BulkRow]) -> String {
    let mut out = "| size | path | round trips | echo GB/s | p50 µs/round trip | p99 µs | CPU µs/echo, client+server | memcpy GB/s | echo vs memcpy | raw hand-off GB/s | echo vs hand-off | bodies sent per call (pool or region) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n".to_owned();
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {} | {:.2} | {:.2}x | {:.2} | {:.2}x | {:.1} |",
            size_name(row.size),
            path_name(row),
            row.round_trips,
            row.echo_gb_per_s,
            row.echo_p50_us,
            row.echo_p99_us,
            row.cpu.text(),
            row.memcpy_gb_per_s,
            row.echo_gb_per_s / row.memcpy_gb_per_s,
            row.handoff_gb_per_s,
            row.echo_gb_per_s / row.handoff_gb_per_s,
            row.regions_per_call
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_and_without_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 64K"), Ok(64 << 10));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        for bad in ["", "0", "K", "12Q", "-1"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("SWITCHYARD_BENCH_BULK_SIZES"), "{err}");
        }
    }

    #[test]
    fn sizes_are_named_in_the_largest_whole_unit() {
        use super::size_name;
        assert_eq!(size_name(64 << 10), "64 KiB");
        assert_eq!(size_name(1 << 20), "1 MiB");
        assert_eq!(size_name(1536 << 10), "1536 KiB");
        assert_eq!(size_name(1000), "1000 B");
    }
}
