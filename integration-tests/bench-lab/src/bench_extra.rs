//! Two measurements after the transport matrix, each beside its raw OS path
//! measured in the same run:
//!
//! * **Pipe bulk**: 1 MiB echo round trips over pipes with 1 MiB buffers, a
//!   raw child copying its stdin to its stdout beside the `switchyard-pipe`
//!   child of [`crate::bench`] (a `process::Spawner` child serving `echo`).
//! * **One-way calls through the message queue** (Linux): 64-byte `sink`
//!   calls sent one after another into the server's POSIX queue, beside a
//!   raw child draining a queue of its own; calls/s until the last one
//!   arrived, and the one-way latency (receipt minus send time, one clock
//!   for both processes).
//!
//! `switchyard-bench` runs them unless `--only` narrows the run; `--report`
//! adds them to the markdown section.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use switchyard::Status;

use crate::bench::{BenchClient, MESSAGE, histogram, micros, spawn_role, spawn_switchyard_pipe};
use crate::report::Table;

/// Payload of a bulk round trip, bytes (1 MiB), and the pipe buffer asked.
const BULK: usize = 1 << 20;
/// Set in the `raw-mqueue` child: how many messages to wait for.
const COUNT_ENV: &str = "SWITCHYARD_BENCH_COUNT";

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    /// Measured 1 MiB round trips per path.
    pub(crate) bulk_round_trips: u64,
    /// One-way calls per path.
    pub(crate) oneway_calls: u64,
}

impl Sizes {
    /// 200 round trips and 200 000 one-way calls, or 20 and 20 000 when
    /// `quick`.
    pub(crate) fn new(quick: bool) -> Self {
        let (bulk_round_trips, oneway_calls) = if quick { (20, 20_000) } else { (200, 200_000) };
        Self {
            bulk_round_trips,
            oneway_calls,
        }
    }

    /// Unmeasured bulk round trips first.
    fn bulk_warmup(&self) -> u64 {
        (self.bulk_round_trips / 10).max(2)
    }
}

/// One bulk path.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct BulkFigures {
    /// 10^9 bytes per second, both directions counted.
    pub(crate) gb_per_s: f64,
    /// Median round trip, µs.
    pub(crate) p50_us: f64,
}

/// One one-way path.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct OnewayFigures {
    /// Calls (messages) per second until the last arrived.
    pub(crate) per_s: f64,
    /// Median one-way latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile one-way latency, µs.
    pub(crate) p99_us: f64,
}

/// The one-way measurement, or why it was skipped.
#[derive(Clone, Debug)]
pub(crate) enum Oneway {
    /// Both paths measured.
    Measured {
        /// The raw queue.
        raw: OnewayFigures,
        /// switchyard's `sink` calls.
        ours: OnewayFigures,
        /// The client's one-way selection, `mqueue: why`.
        selection: String,
        /// The queues' capacity, messages.
        queue_messages: usize,
    },
    /// Not measured, and why.
    Skipped(String),
}

/// Both measurements.
#[derive(Clone, Debug)]
pub(crate) struct Extras {
    /// What was measured.
    pub(crate) sizes: Sizes,
    /// The raw pipe pair.
    pub(crate) bulk_raw: BulkFigures,
    /// switchyard's pipe.
    pub(crate) bulk_ours: BulkFigures,
    /// The pipe buffer the kernel granted the raw pipes, bytes.
    pub(crate) pipe_size: usize,
    /// One-way calls.
    pub(crate) oneway: Oneway,
    /// Shared memory's bulk path, or why it was not measured.
    pub(crate) shm_bulk: Result<Vec<crate::bench_bulk::BulkRow>, String>,
}

/// Measures both, printing a small table each.
pub(crate) fn run(quick: bool) -> Result<Extras, String> {
    let sizes = Sizes::new(quick);
    println!("\npipe bulk: {}", bulk_intro(&sizes));
    let (bulk_raw, pipe_size) = raw_bulk(&sizes)?;
    let bulk_ours = switchyard_bulk(&sizes)?;
    print!("{}", bulk_table(&bulk_raw, &bulk_ours).text());
    if pipe_size != BULK {
        println!("the kernel granted the raw pipes {pipe_size} bytes, not 1 MiB");
    }
    println!(
        "\none-way calls through the message queue: {}",
        oneway_intro(&sizes)
    );
    let oneway = oneway(&sizes)?;
    match &oneway {
        Oneway::Skipped(why) => println!("not measured: {why}"),
        Oneway::Measured {
            raw,
            ours,
            selection,
            queue_messages,
        } => {
            println!("queues of {queue_messages} messages; one-way selection: {selection}");
            print!("{}", oneway_table(raw, ours).text());
        }
    }
    println!("\nshm bulk (mmap): {}", crate::bench_bulk::intro());
    let shm_bulk = shm_bulk(quick);
    match &shm_bulk {
        Ok(rows) => print!("{}", crate::bench_bulk::text(rows)),
        Err(why) => println!("not measured: {why}"),
    }
    Ok(Extras {
        sizes,
        bulk_raw,
        bulk_ours,
        pipe_size,
        oneway,
        shm_bulk,
    })
}

#[cfg(target_os = "linux")]
fn shm_bulk(quick: bool) -> Result<Vec<crate::bench_bulk::BulkRow>, String> {
    crate::bench_bulk::run(quick)
}

#[cfg(not(target_os = "linux"))]
fn shm_bulk(_quick: bool) -> Result<Vec<crate::bench_bulk::BulkRow>, String> {
    Err("shared memory is Linux-only".to_owned())
}

fn bulk_intro(sizes: &Sizes) -> String {
    format!(
        "1 MiB echo round trips over pipes with 1 MiB buffers, {} measured after {} warm-up; \
         GB/s = 2 × 1 MiB × round trips / elapsed",
        sizes.bulk_round_trips,
        sizes.bulk_warmup()
    )
}

fn oneway_intro(sizes: &Sizes) -> String {
    format!(
        "{} calls of {MESSAGE} bytes sent one after another; calls/s until the last arrived; \
         latency = receipt - send time",
        sizes.oneway_calls
    )
}

fn ratio(x: f64) -> String {
    format!("{x:.2}x")
}

fn bulk_table(raw: &BulkFigures, ours: &BulkFigures) -> Table {
    let row = |path: &str, f: &BulkFigures, vs_raw| {
        vec![
            path.to_owned(),
            format!("{:.2}", f.gb_per_s),
            format!("{:.0}", f.p50_us),
            vs_raw,
        ]
    };
    Table {
        header: Table::header(&["path", "GB/s", "p50 µs/round trip", "GB/s vs raw"]),
        rows: vec![
            row("raw pipe pair", raw, String::new()),
            row("switchyard pipe", ours, ratio(ours.gb_per_s / raw.gb_per_s)),
        ],
    }
}

fn oneway_table(raw: &OnewayFigures, ours: &OnewayFigures) -> Table {
    let row = |path: &str, f: &OnewayFigures, vs_raw: [String; 3]| {
        let mut cells = vec![
            path.to_owned(),
            format!("{:.0}", f.per_s),
            format!("{:.1}", f.p50_us),
            format!("{:.1}", f.p99_us),
        ];
        cells.extend(vs_raw);
        cells
    };
    let vs_raw = [
        ratio(ours.per_s / raw.per_s),
        ratio(ours.p50_us / raw.p50_us),
        ratio(ours.p99_us / raw.p99_us),
    ];
    Table {
        header: Table::header(&[
            "path",
            "calls/s",
            "p50 µs",
            "p99 µs",
            "calls/s vs raw",
            "p50 vs raw",
            "p99 vs raw",
        ]),
        rows: vec![
            row("raw message queue", raw, Default::default()),
            row("switchyard mqueue", ours, vs_raw),
        ],
    }
}

/// In a child process: the roles of this file.
pub(crate) fn child(role: &str) -> Result<(), String> {
    match role {
        "raw-bulk-pipe" => {
            // Unbuffered copies of stdin and stdout (std's are buffered).
            let clone = |fd: std::os::fd::BorrowedFd<'_>| {
                fd.try_clone_to_owned()
                    .map(std::fs::File::from)
                    .map_err(|e| format!("stdin/stdout: {e}"))
            };
            let mut input = clone(std::io::stdin().as_fd())?;
            let mut output = clone(std::io::stdout().as_fd())?;
            let mut buf = vec![0u8; BULK];
            while input.read_exact(&mut buf).is_ok() {
                if output.write_all(&buf).is_err() {
                    break;
                }
            }
            Ok(())
        }
        #[cfg(target_os = "linux")]
        "raw-mqueue" => mq::raw_mqueue_child(),
        other => Err(format!("unknown child role {other}")),
    }
}

fn finish_bulk(hist: &hdrhistogram::Histogram<u64>, n: u64, elapsed: Duration) -> BulkFigures {
    BulkFigures {
        gb_per_s: 2.0 * BULK as f64 * n as f64 / elapsed.as_secs_f64() / 1e9,
        p50_us: micros(hist, 0.5),
    }
}

/// The raw pipe pair, and the pipe buffer the kernel granted.
fn raw_bulk(sizes: &Sizes) -> Result<(BulkFigures, usize), String> {
    let (mut child, mut output) = spawn_role("raw-bulk-pipe", &[])?;
    let mut input = child.take_stdin()?;
    let resize = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::pipe::fcntl_setpipe_size(fd, BULK)
            .map_err(|e| format!("setting the raw pipe's buffer to 1 MiB: {e}"))
    };
    let pipe_size = resize(input.as_fd())?.min(resize(output.as_fd())?);
    let io = |e: std::io::Error| format!("raw bulk round trip: {e}");
    let out = vec![7u8; BULK];
    let mut back = vec![0u8; BULK];
    let mut hist = histogram()?;
    let warmup = sizes.bulk_warmup();
    let mut start = Instant::now();
    for i in 0..warmup + sizes.bulk_round_trips {
        if i == warmup {
            start = Instant::now();
        }
        let one = Instant::now();
        input.write_all(&out).map_err(io)?;
        output.read_exact(&mut back).map_err(io)?;
        if i >= warmup {
            let _ = hist.record(one.elapsed().as_nanos() as u64);
        }
    }
    let figures = finish_bulk(&hist, sizes.bulk_round_trips, start.elapsed());
    drop(input);
    drop(child);
    Ok((figures, pipe_size))
}

/// 1 MiB echoes to a `process::Spawner` child over switchyard's pipes.
fn switchyard_bulk(sizes: &Sizes) -> Result<BulkFigures, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    let sizes = *sizes;
    runtime.block_on(async move {
        let child = spawn_switchyard_pipe().await?;
        let client = BenchClient::new(child.channel());
        let call_err = |e: Status| format!("1 MiB echo over the pipes: {e}");
        // The echoed buffer is sent again: no copy beside the call's own.
        let mut payload = switchyard::Bytes::from(vec![7u8; BULK]);
        let mut hist = histogram()?;
        let warmup = sizes.bulk_warmup();
        let mut start = Instant::now();
        for i in 0..warmup + sizes.bulk_round_trips {
            if i == warmup {
                start = Instant::now();
            }
            let one = Instant::now();
            payload = client.echo(payload).await.map_err(call_err)?;
            if i >= warmup {
                let _ = hist.record(one.elapsed().as_nanos() as u64);
            }
            if payload.len() != BULK {
                return Err(format!("the echo came back with {} bytes", payload.len()));
            }
        }
        let figures = finish_bulk(&hist, sizes.bulk_round_trips, start.elapsed());
        drop(child);
        Ok(figures)
    })
}

/// Without POSIX message queues in switchyard.
#[cfg(not(target_os = "linux"))]
fn oneway(_sizes: &Sizes) -> Result<Oneway, String> {
    Ok(Oneway::Skipped(
        "switchyard uses POSIX message queues on Linux only".into(),
    ))
}

#[cfg(target_os = "linux")]
use mq::oneway;

/// One-way calls through POSIX message queues (Linux).
#[cfg(target_os = "linux")]
mod mq {
    use std::ffi::OsStr;
    use std::io::BufRead;
    use std::time::{Duration, Instant};

    use switchyard::sys::mqueue::{self as sys, MqError};
    use switchyard::{Channel, Transport};

    use super::{COUNT_ENV, Oneway, OnewayFigures, Sizes};
    use crate::bench::{
        BENCH_DESCRIPTOR, BenchClient, MESSAGE, ScratchDir, announce, clock_ns, histogram,
        spawn_announcing, spawn_child,
    };

    /// How long the one-way calls may take to arrive once all are sent.
    const ARRIVAL_LIMIT: Duration = Duration::from_secs(30);

    pub(super) fn oneway(sizes: &Sizes) -> Result<Oneway, String> {
        let limits = match switchyard::transport::mqueue::limits() {
            Ok(limits) => limits,
            Err(err) => return Ok(Oneway::Skipped(format!("no POSIX message queues: {err}"))),
        };
        let raw = raw_oneway(sizes.oneway_calls)?;
        let (ours, selection) = switchyard_oneway(sizes.oneway_calls)?;
        Ok(Oneway::Measured {
            raw,
            ours,
            selection,
            queue_messages: limits.msg_max,
        })
    }

    /// Removes a message queue on drop.
    struct UnlinkQueue(String);

    impl Drop for UnlinkQueue {
        fn drop(&mut self) {
            let _ = switchyard::sys::mqueue::unlink(&self.0);
        }
    }

    /// The raw path: this process sends `count` 64-byte messages, each starting
    /// with its send time, into a queue a child drains.
    fn raw_oneway(count: u64) -> Result<OnewayFigures, String> {
        let count_text = count.to_string();
        let (child, mut stdout, name) = spawn_announcing(
            "raw-mqueue",
            &[(COUNT_ENV, OsStr::new(&count_text))],
            "its queue",
        )?;
        let _unlink = UnlinkQueue(name.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let start = runtime.block_on(async {
            let queue = sys::open_send(&name)
                .and_then(sys::SendQueue::into_async)
                .map_err(|e| format!("opening the raw queue: {e}"))?;
            let start = Instant::now();
            let send_err = |e: MqError| format!("sending into the raw queue: {e}");
            let mut message = [7u8; MESSAGE];
            for _ in 0..count {
                message[..8].copy_from_slice(&clock_ns().to_le_bytes());
                match queue.get_ref().send(&message, 0) {
                    Ok(()) => continue,
                    Err(MqError::Full { .. }) => {}
                    Err(err) => return Err(send_err(err)),
                }
                loop {
                    let mut guard = queue
                        .writable()
                        .await
                        .map_err(|e| format!("waiting for room in the raw queue: {e}"))?;
                    match guard.get_inner().send(&message, 0) {
                        Ok(()) => break,
                        Err(MqError::Full { .. }) => guard.clear_ready(),
                        Err(err) => return Err(send_err(err)),
                    }
                }
            }
            Ok::<Instant, String>(start)
        })?;
        // The child prints `count p50 p99` once the last message arrived.
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let elapsed = start.elapsed();
        drop(child);
        let fields: Vec<u64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [received, p50, p99] = fields[..] else {
            return Err(format!(
                "the raw-mqueue child printed {line:?}, not `count p50 p99`; its error is above"
            ));
        };
        if received != count {
            return Err(format!("the raw queue delivered {received} of {count}"));
        }
        Ok(OnewayFigures {
            per_s: count as f64 / elapsed.as_secs_f64(),
            p50_us: p50 as f64 / 1000.0,
            p99_us: p99 as f64 / 1000.0,
        })
    }

    /// The `raw-mqueue` child: creates a queue, prints its name, takes
    /// `COUNT_ENV` messages, prints `count p50 p99` (ns) and removes the queue.
    pub(super) fn raw_mqueue_child() -> Result<(), String> {
        let count: u64 = std::env::var(COUNT_ENV)
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or("SWITCHYARD_BENCH_COUNT is not set")?;
        let limits = sys::limits().map_err(|e| e.to_string())?;
        let name = sys::queue_name(
            &format!("bench-raw-{}", std::process::id()),
            switchyard::sys::uid(),
        );
        // A queue of that name can only be left over from a crashed run.
        let _ = sys::unlink(&name);
        let queue = sys::create_exclusive(&name, limits.msg_max, limits.msgsize_max)
            .map_err(|e| format!("creating the raw queue: {e}"))?;
        let _unlink = UnlinkQueue(name.clone());
        let mut buf = vec![0u8; queue.message_size()];
        let mut hist = histogram()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        runtime.block_on(async {
            let queue = queue
                .into_async()
                .map_err(|e| format!("polling the raw queue: {e}"))?;
            announce(&name);
            let mut received = 0;
            while received < count {
                let mut guard = queue
                    .readable()
                    .await
                    .map_err(|e| format!("waiting for a message: {e}"))?;
                match guard.get_inner().receive(&mut buf) {
                    Ok((len, _)) => {
                        let now = clock_ns();
                        let sent = buf
                            .get(..8)
                            .filter(|_| len >= 8)
                            .and_then(|b| b.try_into().ok())
                            .map_or(now, u64::from_le_bytes);
                        let _ = hist.record(now.saturating_sub(sent));
                        received += 1;
                    }
                    Err(MqError::WouldBlock { .. }) => guard.clear_ready(),
                    Err(err) => return Err(format!("receiving: {err}")),
                }
            }
            Ok::<(), String>(())
        })?;
        announce(&format!(
            "{} {} {}",
            hist.len(),
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99)
        ));
        Ok(())
    }

    /// switchyard's path: `sink` calls to a server found by name, which the
    /// client sends through the server's queue.
    fn switchyard_oneway(count: u64) -> Result<(OnewayFigures, String), String> {
        let dir = ScratchDir::new()?;
        let (child, _endpoints) = spawn_child("switchyard", dir.path())?;
        let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
        let figures = runtime.block_on(async {
            let channel = Channel::builder()
                .runtime_dir(dir.path())
                .connect("bench")
                .await
                .map_err(|e| format!("connecting to bench by name: {e}"))?;
            let selection = channel.oneway_selection(&BENCH_DESCRIPTOR);
            if selection.transport != Transport::MessageQueue {
                return Err(format!(
                    "one-way calls would not go through the message queue but {selection}"
                ));
            }
            let client = BenchClient::new(channel);
            let payload = vec![7u8; MESSAGE];
            let start = Instant::now();
            for _ in 0..count {
                client
                    .sink(clock_ns(), payload.clone())
                    .await
                    .map_err(|e| format!("a one-way call: {e}"))?;
            }
            let sent = Instant::now();
            loop {
                let (received, p50, p99) = client
                    .sunk()
                    .await
                    .map_err(|e| format!("asking what arrived: {e}"))?;
                if received >= count {
                    let elapsed = start.elapsed();
                    let figures = OnewayFigures {
                        per_s: count as f64 / elapsed.as_secs_f64(),
                        p50_us: p50 as f64 / 1000.0,
                        p99_us: p99 as f64 / 1000.0,
                    };
                    return Ok((figures, selection.to_string()));
                }
                if sent.elapsed() > ARRIVAL_LIMIT {
                    return Err(format!(
                        "only {received} of {count} one-way calls arrived within {ARRIVAL_LIMIT:?}"
                    ));
                }
                tokio::task::yield_now().await;
            }
        });
        drop(child);
        figures
    }
}

/// Adds both measurements to the section `switchyard-bench --report` just
/// wrote into `report`, before its end marker.
pub(crate) fn write_report(report: &Path, extras: &Extras) -> Result<(), String> {
    crate::report::append(report, &markdown(extras))
}

/// The markdown of both measurements, ending with a newline.
fn markdown(extras: &Extras) -> String {
    let mut out = format!(
        "**Pipe bulk**: {}.\n\n{}",
        bulk_intro(&extras.sizes),
        bulk_table(&extras.bulk_raw, &extras.bulk_ours).markdown()
    );
    if extras.pipe_size != BULK {
        let _ = writeln!(
            out,
            "\nThe kernel granted the raw pipes {} bytes, not 1 MiB.",
            extras.pipe_size
        );
    }
    let _ = write!(
        out,
        "\n**One-way calls through the message queue**: {}.",
        oneway_intro(&extras.sizes)
    );
    match &extras.oneway {
        Oneway::Skipped(why) => {
            let _ = writeln!(out, " Not measured: {why}.");
        }
        Oneway::Measured {
            raw,
            ours,
            selection,
            queue_messages,
        } => {
            let _ = write!(
                out,
                " Queues of {queue_messages} messages; one-way selection: `{selection}`.\n\n{}",
                oneway_table(raw, ours).markdown()
            );
        }
    }
    let _ = write!(
        out,
        "\n**Shm bulk (mmap)**: {}.",
        crate::bench_bulk::intro()
    );
    match &extras.shm_bulk {
        Ok(rows) => {
            let _ = write!(out, "\n\n{}", crate::bench_bulk::markdown(rows));
        }
        Err(why) => {
            let _ = writeln!(out, " Not measured: {why}.");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    // Full paths, no imports: see the note in bench.rs's tests.

    #[test]
    fn the_report_gets_both_tables_inside_the_section() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("perf.md");
        let doc = format!(
            "# Perf\n\n{}\nmatrix\n{}\nafter\n",
            crate::report::START,
            crate::report::END
        );
        std::fs::write(&path, doc).expect("writable");
        let raw = super::OnewayFigures {
            per_s: 200_000.0,
            p50_us: 10.0,
            p99_us: 20.0,
        };
        let extras = super::Extras {
            sizes: super::Sizes::new(true),
            bulk_raw: super::BulkFigures {
                gb_per_s: 4.0,
                p50_us: 500.0,
            },
            bulk_ours: super::BulkFigures {
                gb_per_s: 3.0,
                p50_us: 700.0,
            },
            pipe_size: super::BULK,
            oneway: super::Oneway::Measured {
                raw,
                ours: super::OnewayFigures {
                    per_s: 150_000.0,
                    ..raw
                },
                selection: "mqueue: same host".into(),
                queue_messages: 10,
            },
            shm_bulk: Ok(vec![crate::bench_bulk::BulkRow {
                pooled: true,
                loaned: false,
                size: 64 << 20,
                round_trips: 20,
                echo_gb_per_s: 6.0,
                echo_p50_us: 22_000.0,
                echo_p99_us: 30_000.0,
                cpu: crate::bench::Cpu {
                    client_us: Some(9_000.0),
                    server_us: Some(8_000.0),
                },
                memcpy_gb_per_s: 12.0,
                handoff_gb_per_s: 3.0,
                regions_per_call: 2.0,
                pool_held: 0,
                pool_in_use: 0,
            }]),
        };
        super::write_report(&path, &extras).expect("written");
        let text = std::fs::read_to_string(&path).expect("readable");
        let table = text.find("| switchyard pipe | 3.00 | 700 | 0.75x |");
        let oneway =
            text.find("| switchyard mqueue | 150000 | 10.0 | 20.0 | 0.75x | 1.00x | 1.00x |");
        let bulk = text.find(
            "| 64 MiB | pool | 20 | 6.00 | 22000 | 30000 | 9000.0+8000.0 | 12.00 | 0.50x | 3.00 | 2.00x | 2.0 |",
        );
        let end = text.find(crate::report::END);
        assert!(text.contains("matrix\n\n**Pipe bulk**"), "{text}");
        assert!(
            table.is_some() && oneway.is_some() && bulk.is_some(),
            "{text}"
        );
        assert!(table < oneway && oneway < bulk && bulk < end, "{text}");
        assert!(text.ends_with("|\n<!-- bench:end -->\nafter\n"), "{text}");
    }
}
