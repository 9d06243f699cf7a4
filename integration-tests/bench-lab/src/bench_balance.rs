//! The balancing table (`--only-balance`): 64-byte echo round trips from a
//! channel to a name with one replica (the direct case: one sub-connection,
//! no policy) beside channels to a name with three replicas on this host,
//! each a server child publishing the same name in one runtime directory
//! and reached over shared memory, with each policy. Per row: p50, p99 and
//! calls/s with [`CONCURRENCY`] in flight, and how the calls spread over
//! the replicas (calls started on each replica's connection).

use std::path::Path;

use switchyard::{Balance, Channel, Transport};

use crate::bench::{
    self, BENCH_DESCRIPTOR, BenchClient, CONCURRENCY, ChildGuard, Figures, MESSAGE, ScratchDir,
    Settings, measure_calls,
};

/// `count` server children publishing the bench service in `dir`.
fn replicas(dir: &Path, count: usize) -> Result<Vec<ChildGuard>, String> {
    (0..count)
        .map(|_| bench::spawn_child("switchyard", dir).map(|(child, _)| child))
        .collect()
}

/// The figures of echo round trips over a channel to the bench service's
/// name in `dir` with `balance`, and the calls each replica took.
fn measure(
    settings: &Settings,
    dir: &Path,
    transport: Transport,
    balance: Balance,
    child_pid: u32,
) -> Result<(Figures, Vec<u64>), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let name = BENCH_DESCRIPTOR.name;
        let channel = Channel::builder()
            .runtime_dir(dir)
            .prefer(transport)
            .balance(balance)
            .connect(name)
            .await
            .map_err(|e| format!("connecting to {name}: {e}"))?;
        let client = BenchClient::new(channel.clone());
        let payload = switchyard::Bytes::from(vec![7u8; MESSAGE]);
        let figures = measure_calls(child_pid, settings, move || {
            let (client, payload) = (client.clone(), payload.clone());
            async move {
                client
                    .echo(payload)
                    .await
                    .map(drop)
                    .map_err(|e| format!("echo: {e}"))
            }
        })
        .await?;
        let spread = channel.replicas().iter().map(|r| r.calls_started).collect();
        Ok((figures, spread))
    })
}

/// Prints the balancing table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    bench::pin(0);
    println!(
        "\nbalancing: 64 B echo round trips, {}; replicas are server children on this host \
         publishing one name, reached over shared memory; {CONCURRENCY} in flight for calls/s",
        settings.describe()
    );
    println!(
        "{:<34} {:>9} {:>9} {:>12} {:>12}  calls per replica",
        "channel", "p50 µs", "p99 µs", "calls/s", "p50 vs one"
    );
    let one_dir = ScratchDir::new()?;
    let one = replicas(one_dir.path(), 1)?;
    let three_dir = ScratchDir::new()?;
    let three = replicas(three_dir.path(), 3)?;
    for transport in [Transport::Shm, Transport::Unix] {
        if !transport.is_available() {
            continue;
        }
        let (direct, _) = measure(
            &settings,
            one_dir.path(),
            transport,
            Balance::PickFirst,
            one[0].pid(),
        )?;
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>12.0} {:>12}  -",
            format!("{transport}, one replica"),
            direct.p50_us,
            direct.p99_us,
            direct.calls_per_s,
            "1.00x"
        );
        for balance in [
            Balance::PickFirst,
            Balance::RoundRobin,
            Balance::LeastInFlight,
            Balance::PeakEwma,
        ] {
            let (figures, spread) = measure(
                &settings,
                three_dir.path(),
                transport,
                balance,
                three[0].pid(),
            )?;
            println!(
                "{:<34} {:>9.2} {:>9.2} {:>12.0} {:>11.2}x  {spread:?}",
                format!("{transport}, 3 replicas, {balance}"),
                figures.p50_us,
                figures.p99_us,
                figures.calls_per_s,
                figures.p50_us / direct.p50_us
            );
        }
    }
    drop((one, three));
    Ok(())
}
