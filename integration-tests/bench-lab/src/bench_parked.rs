//! The parked case of shared memory: calls far enough apart that the
//! server has stopped busy-polling its ring (past its spin budget, 50 µs by
//! default) and sleeps on the futex, so each call pays a wake-up; and the
//! CPU each side burns per call (its spin after answering included) and
//! per second while idle. The busy rows above are the best case; this is
//! what a service called now and then sees.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bench::{
    BenchClient, CpuMark, MESSAGE, Settings, connect_switchyard, histogram, micros, spawn_child,
};

/// The gap between two calls: well past the spin budget.
const GAP: Duration = Duration::from_millis(1);

/// One line of figures for shm with the server parked between calls.
pub(crate) fn line(dir: &Path, s: &Settings) -> Result<String, String> {
    let calls: u64 = if s.iterations < 10_000 { 200 } else { 2_000 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let (serving, channel, target) = connect_switchyard("shm", dir).await?;
        let client = BenchClient::new(channel);
        let payload = switchyard::Bytes::from(vec![7u8; MESSAGE]);
        let mut hist = histogram()?;
        // Warm: the connection and the handler's first call.
        for _ in 0..100 {
            client
                .echo(payload.clone())
                .await
                .map_err(|e| format!("echo over {target}: {e}"))?;
        }
        let before = CpuMark::now(serving.pid());
        for _ in 0..calls {
            std::thread::sleep(GAP);
            let start = Instant::now();
            client
                .echo(payload.clone())
                .await
                .map_err(|e| format!("echo over {target}: {e}"))?;
            let _ = hist.record(start.elapsed().as_nanos() as u64);
        }
        let per_call = before.per_call(CpuMark::now(serving.pid()), calls);
        // Idle: connected, no call for a second.
        let before = CpuMark::now(serving.pid());
        std::thread::sleep(Duration::from_secs(1));
        let idle = before.per_call(CpuMark::now(serving.pid()), 1);
        drop(serving);
        let (raw_p50, raw_p99) = raw_unix(dir, calls)?;
        let us = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"));
        Ok(format!(
            "switchyard shm, server parked ({calls} calls {GAP:?} apart, past the {:?} spin \
             budget): p50 {:.1} µs, p99 {:.1} µs (raw unix socket echo, same gaps: p50 \
             {raw_p50:.1} µs, p99 {raw_p99:.1} µs; {:.2}x); cpu µs/call client {} + server {}; \
             idle connection: client {} + server {} µs of CPU per second",
            switchyard::transport::shm::DEFAULT_SPIN,
            micros(&hist, 0.5),
            micros(&hist, 0.99),
            micros(&hist, 0.5) / raw_p50,
            us(per_call.client_us),
            us(per_call.server_us),
            us(idle.client_us),
            us(idle.server_us),
        ))
    })
}

/// p50 and p99 (µs) of a raw unix socket echo with the same gaps: what a
/// sleeping peer's wake-up costs without switchyard.
fn raw_unix(dir: &Path, calls: u64) -> Result<(f64, f64), String> {
    let (_child, addr) = spawn_child("raw-unix", dir)?;
    let mut stream =
        UnixStream::connect(&addr).map_err(|e| format!("connecting to the raw unix child: {e}"))?;
    let io = |e: std::io::Error| format!("raw round trip: {e}");
    let out = [7u8; MESSAGE];
    let mut back = [0u8; MESSAGE];
    let mut hist = histogram()?;
    for i in 0..100 + calls {
        if i >= 100 {
            std::thread::sleep(GAP);
        }
        let start = Instant::now();
        stream.write_all(&out).map_err(io)?;
        stream.read_exact(&mut back).map_err(io)?;
        if i >= 100 {
            let _ = hist.record(start.elapsed().as_nanos() as u64);
        }
    }
    Ok((micros(&hist, 0.5), micros(&hist, 0.99)))
}
