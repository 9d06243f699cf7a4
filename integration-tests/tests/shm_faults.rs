//! Faults on the shared-memory (shm) transport, across real processes: a
//! server killed with calls in flight, fd hygiene over a thousand
//! connections, an idle connection's CPU cost, oversized frames both ways,
//! and a hostile peer that corrupts its ring.
//!
//! Every test connects by name (the registry in the server's own runtime
//! directory) and first asserts the selection is [`Transport::Shm`], so none
//! can silently pass over the Unix socket.
//!
//! Speeds are printed, never asserted: the bounds below only catch hangs and
//! busy-spins. Run with `--nocapture` to see the figures.
//!
//! The fd and CPU tests measure the whole process, so each re-executes this
//! test binary with only itself selected (`--exact`, and
//! `SWITCHYARD_SHM_FAULTS_CHILD` naming the test): the other tests, which run
//! in parallel threads, cannot disturb the counts.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard::codec::{Bincode, Codec};
use switchyard::protocol::frame::{
    Decoded, Frame, FrameDecoder, Header, Kind, finish_frame, start_frame,
};
use switchyard::protocol::hello::Hello;
use switchyard::sys::shm;
use switchyard::transport::shm::ring::{self, Consumer, Producer, Ring, layout, region_len};
use switchyard::transport::shm::{ACCEPT, OFFER_V2};
use switchyard::{Channel, Code, Transport};
use switchyard_integration_tests::{ServerProcess, TestingClient, shm_client_on, within};

/// The watchdog of every test: far above anything a working build needs.
const LIMIT: Duration = Duration::from_secs(60);
/// Names the one test a re-executed child runs.
const CHILD_ENV: &str = "SWITCHYARD_SHM_FAULTS_CHILD";

// ---------------------------------------------------------------- helpers

/// A client to `server` by name, checked to run over shared memory.
async fn shm_client(server: &ServerProcess) -> TestingClient {
    shm_client_on(server.channel().await)
}

/// Waits until the server has started `n` requests (counted by its
/// `requests_seen`, which does not count itself).
async fn wait_for_requests(client: &TestingClient, n: u64) {
    while client.requests_seen().await.unwrap() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether this process is the re-executed child that runs `test`.
fn in_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test)
}

/// Runs `test` alone in a fresh process (this binary, `--exact test`),
/// relays its output and fails if it fails or outlives `limit`. The child
/// gets its own process group, so a hung child is killed together with any
/// server it started.
fn run_alone(test: &str, limit: Duration) {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary re-executes");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            break Some(status);
        }
        if Instant::now() > deadline {
            // The group is the child and whatever it started (its servers).
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => eprint!("{stderr}"),
        Some(status) => panic!("{test} failed in its own process ({status}):\n{stdout}{stderr}"),
        None => panic!("{test} hung: killed after {limit:?}:\n{stdout}{stderr}"),
    }
}

/// A current-thread runtime for a child's test body.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The open fds of process `pid` (`"self"` or a number), as what each
/// points at with inode numbers removed (`socket`, `anon_inode:[eventfd]`,
/// `/memfd:switchyard-shm (deleted)`), counted.
fn fd_kinds(pid: &str) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return kinds;
    };
    for entry in dir.flatten() {
        let target = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "(gone)".to_owned());
        let kind = match target.split_once(":[") {
            Some((kind, _)) if !kind.starts_with("anon_inode") => kind.to_owned(),
            _ => target,
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

fn total(kinds: &BTreeMap<String, usize>) -> usize {
    kinds.values().sum()
}

/// What grew from `before` to `now`, for a failure message.
fn growth(before: &BTreeMap<String, usize>, now: &BTreeMap<String, usize>) -> String {
    now.iter()
        .filter_map(|(kind, n)| {
            let was = before.get(kind).copied().unwrap_or(0);
            (*n > was).then(|| format!("{kind}: {was} -> {n}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The mappings of switchyard's memfds (rings, pool segments, bulk
/// regions: `memfd:switchyard-*`) of process `pid`.
fn shm_mappings(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|maps| {
            maps.lines()
                .filter(|l| l.contains("memfd:switchyard-"))
                .count()
        })
        .unwrap_or(0)
}

/// What the threads of a process have used so far, summed over
/// `/proc/<pid>/task/*/schedstat`.
#[derive(Clone, Copy, Debug)]
struct Cpu {
    /// Nanoseconds run on a CPU (first field).
    ns: u64,
    /// Times a thread was put on a CPU (third field): about the wake-ups.
    runs: u64,
    /// Threads counted.
    threads: usize,
}

impl Cpu {
    fn of(pid: &str) -> Self {
        let mut cpu = Self {
            ns: 0,
            runs: 0,
            threads: 0,
        };
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("the process exists")
            .flatten()
        {
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let fields: Vec<u64> = stat
                .split_whitespace()
                .map(|f| f.parse().expect("schedstat holds numbers"))
                .collect();
            cpu.ns += fields[0];
            cpu.runs += fields[2];
            cpu.threads += 1;
        }
        cpu
    }

    /// The use since `before`: ms of CPU, % of one core over `wall`, and
    /// wake-ups per second.
    fn since(self, before: Self, wall: Duration) -> (f64, f64, f64) {
        let ns = self.ns.saturating_sub(before.ns) as f64;
        let runs = self.runs.saturating_sub(before.runs) as f64;
        let wall = wall.as_secs_f64();
        (ns / 1e6, ns / 1e9 / wall * 100.0, runs / wall)
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_server_killed_mid_call_fails_in_flight_calls_fast() {
    const CALLS: usize = 8;
    // A hang guard only; the target (100 ms) is printed, not asserted.
    const HANG_GUARD: Duration = Duration::from_secs(2);
    let mut server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let client = shm_client(&server).await;
        let calls: Vec<_> = (0..CALLS)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    let result = client.sleep(60_000).await;
                    (result, Instant::now())
                })
            })
            .collect();
        wait_for_requests(&client, CALLS as u64).await;
        let killed = Instant::now();
        server.kill();
        let mut last = killed;
        let mut message = String::new();
        for call in calls {
            let (result, failed_at) = call.await.unwrap();
            let err = result.expect_err("a call in flight on a killed server cannot succeed");
            assert_eq!(err.code(), Code::Unavailable, "{err}");
            assert!(
                err.message().contains("closed"),
                "the message should say the connection closed: {err}"
            );
            last = last.max(failed_at);
            message = err.message().to_owned();
        }
        let took = last.saturating_duration_since(killed);
        eprintln!(
            "shm kill: {CALLS} calls in flight, SIGKILL to the last Unavailable: {took:.2?} \
             (issue 3 asks < 100 ms); message: {message}"
        );
        assert!(
            took < HANG_GUARD,
            "in-flight calls took {took:?} to fail after SIGKILL: a hang"
        );
    })
    .await;
}

/// The open fds and shm mappings of this process and of the server.
#[derive(Debug)]
struct Resources {
    client_fds: BTreeMap<String, usize>,
    server_fds: BTreeMap<String, usize>,
    client_maps: usize,
    server_maps: usize,
}

impl Resources {
    fn now(server_pid: &str) -> Self {
        Self {
            client_fds: fd_kinds("self"),
            server_fds: fd_kinds(server_pid),
            client_maps: shm_mappings("self"),
            server_maps: shm_mappings(server_pid),
        }
    }

    /// Whether every count is at most `base`'s.
    fn within(&self, base: &Self) -> bool {
        total(&self.client_fds) <= total(&base.client_fds)
            && total(&self.server_fds) <= total(&base.server_fds)
            && self.client_maps <= base.client_maps
            && self.server_maps <= base.server_maps
    }

    /// Whether every count is above `base`'s.
    fn above(&self, base: &Self) -> bool {
        total(&self.client_fds) > total(&base.client_fds)
            && total(&self.server_fds) > total(&base.server_fds)
            && self.client_maps > base.client_maps
            && self.server_maps > base.server_maps
    }

    fn summary(&self) -> String {
        format!(
            "client {} fds, {} shm maps; server {} fds, {} shm maps",
            total(&self.client_fds),
            self.client_maps,
            total(&self.server_fds),
            self.server_maps
        )
    }
}

/// Closing is asynchronous on both sides: waits at most `limit` for the
/// counts to come back to `base`; the counts then, and how long it took.
async fn settle(pid: &str, base: &Resources, limit: Duration) -> (Resources, Duration) {
    let closing = Instant::now();
    let mut now = Resources::now(pid);
    while !now.within(base) && closing.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
        now = Resources::now(pid);
    }
    (now, closing.elapsed())
}

/// Fails naming what leaked, if `now` is above `base` after `cycles`
/// connections.
fn assert_no_leak(base: &Resources, now: &Resources, cycles: usize) {
    let client_leak = total(&now.client_fds).saturating_sub(total(&base.client_fds));
    let server_leak = total(&now.server_fds).saturating_sub(total(&base.server_fds));
    assert!(
        client_leak == 0,
        "the client leaked {client_leak} fds over {cycles} shm connections: {}",
        growth(&base.client_fds, &now.client_fds)
    );
    assert!(
        server_leak == 0,
        "the server leaked {server_leak} fds over {cycles} shm connections: {}",
        growth(&base.server_fds, &now.server_fds)
    );
    assert!(
        now.within(base),
        "shm mappings leaked over {cycles} connections: baseline {}; after {}",
        base.summary(),
        now.summary()
    );
}

#[test]
fn shm_fd_count_returns_to_baseline_after_1000_cycles() {
    const NAME: &str = "shm_fd_count_returns_to_baseline_after_1000_cycles";
    const CYCLES: i64 = 1000;
    if !in_child(NAME) {
        return run_alone(NAME, Duration::from_secs(180));
    }
    let server = ServerProcess::start(&[]);
    let pid = server.pid().to_string();
    runtime().block_on(within(Duration::from_secs(150), async {
        // A first connection opens whatever either side opens only once
        // (lazily made runtime fds); the baseline is taken after it. While
        // it is open, every count must be above the baseline: otherwise
        // these probes could not see a leaked connection.
        let first = shm_client(&server).await;
        assert_eq!(first.add(0, 0).await.unwrap(), 0);
        let connected = Resources::now(&pid);
        drop(first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let base = Resources::now(&pid);
        assert!(
            connected.above(&base),
            "one open shm connection is not visible in the counts: with it {}; without {}",
            connected.summary(),
            base.summary()
        );
        let started = Instant::now();
        for i in 0..CYCLES {
            let client = shm_client(&server).await;
            assert_eq!(client.add(i, 1).await.unwrap(), i + 1);
        }
        let cycles_took = started.elapsed();
        let (now, settled) = settle(&pid, &base, Duration::from_secs(5)).await;
        eprintln!(
            "shm fds: {CYCLES} connect+call+drop cycles took {cycles_took:.2?} ({:.0} µs each); \
             settled {settled:.2?} later; baseline {}; after {}; one connection open: {}",
            cycles_took.as_secs_f64() * 1e6 / CYCLES as f64,
            base.summary(),
            now.summary(),
            connected.summary(),
        );
        assert_no_leak(&base, &now, CYCLES as usize);
    }));
    drop(server);
}

#[test]
fn shm_pools_leave_no_fds_or_mappings_when_clients_vanish_mid_transfer_1000_times() {
    const NAME: &str =
        "shm_pools_leave_no_fds_or_mappings_when_clients_vanish_mid_transfer_1000_times";
    const CYCLES: usize = 1000;
    if !in_child(NAME) {
        return run_alone(NAME, Duration::from_secs(240));
    }
    let server = ServerProcess::start(&[]);
    let pid = server.pid().to_string();
    runtime().block_on(within(Duration::from_secs(200), async {
        // `Bytes` both ways (a `Vec<u8>` is encoded byte by byte, slow in a
        // debug build); the server answers with a 1 MiB body of its own.
        let body = switchyard::Bytes::from(vec![5u8; 1 << 20]);
        // The baseline comes after one connection moved a pooled body each
        // way (whatever is made once per process is made then).
        let first = shm_client(&server).await;
        assert_eq!(
            first
                .unary_call(body.clone(), 1 << 20)
                .await
                .unwrap()
                .2
                .len(),
            1 << 20
        );
        let connected = Resources::now(&pid);
        drop(first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let base = Resources::now(&pid);
        assert!(
            connected.above(&base),
            "an open connection with pools is not visible in the counts: with it {}; without {}",
            connected.summary(),
            base.summary()
        );
        let started = Instant::now();
        let mut cut = 0;
        for i in 0..CYCLES {
            let client = shm_client(&server).await;
            // Every tenth cycle completes an echo (both pools in use); the
            // others go while the body is in flight: the request is in the
            // client's pool, the server copying it out or answering.
            if i % 10 == 0 {
                assert_eq!(
                    client
                        .unary_call(body.clone(), 1 << 20)
                        .await
                        .unwrap()
                        .2
                        .len(),
                    1 << 20
                );
            } else {
                let echo = client.unary_call(body.clone(), 1 << 20);
                if tokio::time::timeout(Duration::from_micros(200), echo)
                    .await
                    .is_err()
                {
                    cut += 1;
                }
            }
            drop(client);
        }
        let cycles_took = started.elapsed();
        let (now, settled) = settle(&pid, &base, Duration::from_secs(10)).await;
        eprintln!(
            "shm pools: {CYCLES} connect+1 MiB call cycles ({cut} cut mid-transfer) took \
             {cycles_took:.2?}; settled {settled:.2?} later; baseline {}; after {}; one \
             connection open: {}",
            base.summary(),
            now.summary(),
            connected.summary(),
        );
        assert!(
            cut > 0,
            "no cycle was cut mid-transfer: the test proved nothing"
        );
        assert_no_leak(&base, &now, CYCLES);
    }));
    drop(server);
}

#[test]
fn shm_idle_connection_uses_almost_no_cpu() {
    const NAME: &str = "shm_idle_connection_uses_almost_no_cpu";
    const IDLE: Duration = Duration::from_secs(5);
    // Catches a busy-spin (a full core is 100%), not a regression in cost.
    const BUSY_SPIN: f64 = 10.0;
    if !in_child(NAME) {
        return run_alone(NAME, Duration::from_secs(60));
    }
    let server = ServerProcess::start(&[]);
    let server_pid = server.pid().to_string();
    runtime().block_on(within(LIMIT, async {
        let client = shm_client(&server).await;
        assert_eq!(client.add(1, 2).await.unwrap(), 3);
        let client_before = Cpu::of("self");
        let server_before = Cpu::of(&server_pid);
        let started = Instant::now();
        tokio::time::sleep(IDLE).await;
        let wall = started.elapsed();
        let (client_ms, client_pct, client_wakeups) = Cpu::of("self").since(client_before, wall);
        let (server_ms, server_pct, server_wakeups) =
            Cpu::of(&server_pid).since(server_before, wall);
        // The connection is still there and works.
        assert_eq!(client.add(2, 2).await.unwrap(), 4);
        eprintln!(
            "shm idle for {wall:.2?}: client {client_ms:.1} ms CPU ({client_pct:.2}% of a core, \
             {client_wakeups:.0} wake-ups/s, {} threads), server {server_ms:.1} ms CPU \
             ({server_pct:.2}% of a core, {server_wakeups:.0} wake-ups/s, {} threads)",
            client_before.threads, server_before.threads,
        );
        assert!(
            client_pct < BUSY_SPIN,
            "the idle client used {client_pct:.1}% of a core: a busy-spin?"
        );
        assert!(
            server_pct < BUSY_SPIN,
            "the server with one idle shm connection used {server_pct:.1}% of a core: a \
             busy-spin?"
        );
    }));
    drop(server);
}

#[tokio::test]
async fn shm_oversized_request_is_refused_before_sending() {
    const LIMIT_BYTES: u32 = 1024;
    let server = ServerProcess::start(&["--max-frame", "1024"]);
    within(LIMIT, async {
        // A request over the server's limit.
        let client = shm_client(&server).await;
        // A response over the client's limit, on a second channel.
        let small = shm_client_on(
            Channel::builder()
                .runtime_dir(server.dir())
                .max_frame(LIMIT_BYTES)
                .connect("testing")
                .await
                .expect("connect by name"),
        );
        // A call in flight on each channel across the refusals shows that
        // neither connection was torn down (a reconnect would hide that from
        // the next call, not from this one).
        let in_flight = [client.clone(), small.clone()]
            .map(|c| tokio::spawn(async move { (c.sleep(1_000).await, Instant::now()) }));
        wait_for_requests(&client, 2).await;

        let err = client.echo(vec![0; 4096]).await.unwrap_err();
        eprintln!("shm oversized request: {err}");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(
            err.message().contains("over the server's limit of 1024"),
            "the message should name the limit: {err}"
        );
        assert_eq!(client.echo(vec![1; 500]).await.unwrap(), vec![1; 500]);
        assert_eq!(
            client.requests_seen().await.unwrap(),
            3,
            "the two sleeps and the small echo arrived, the big echo never did"
        );

        let err = small.payload(4096).await.unwrap_err();
        eprintln!("shm oversized response: {err}");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(
            err.message().contains("limit of 1024"),
            "the message should name the limit: {err}"
        );
        assert_eq!(small.payload(100).await.unwrap().len(), 100);
        let refused = Instant::now();

        for call in in_flight {
            let (result, finished) = call.await.unwrap();
            let slept = result.expect("the call in flight survives the refusals");
            assert!(slept >= 1_000, "slept {slept} ms");
            assert!(
                finished > refused,
                "the call in flight must span the refusals for this test to mean anything"
            );
        }
        for c in [&client, &small] {
            assert_eq!(c.selection().transport, Transport::Shm);
        }
    })
    .await;
}

/// The client side of a shm connection done by hand, so that it can break
/// the rules: the memfd (to write the ring header with `pwrite`), our ends
/// of both rings, the server's eventfd and the control socket.
struct HostileClient {
    memfd: OwnedFd,
    control: UnixStream,
    to_server: Producer,
    from_server: Consumer,
    server_wake: OwnedFd,
    // Kept open for the server to write.
    _mine: OwnedFd,
    received: BytesMut,
    decoder: FrameDecoder,
}

impl HostileClient {
    const CAPACITY: usize = 64 * 1024;

    /// Sets up shared memory over the server's Unix socket as the real
    /// client does (a version-2 offer: rings only, no pool words), then
    /// says hello; returns the server's hello too.
    fn connect(unix_endpoint: &str) -> (Self, Hello) {
        let path = unix_endpoint
            .strip_prefix("unix://")
            .expect("a unix:// endpoint");
        let control = UnixStream::connect(path).expect("the server's Unix socket");
        control
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let ring_len = region_len(Self::CAPACITY);
        let memfd = shm::create_memfd("hostile-shm", 2 * ring_len as u64).unwrap();
        let map = Arc::new(shm::map_sealed(memfd.as_fd(), 2 * ring_len).unwrap());
        let init = ring::Role::Init {
            capacity: Self::CAPACITY,
        };
        let to_server = Ring::from_mmap(Arc::clone(&map), 0, ring_len, init).unwrap();
        let from_server = Ring::from_mmap(map, ring_len, ring_len, init).unwrap();
        let mine = shm::eventfd().unwrap();
        let mut offer = OFFER_V2.to_vec();
        offer.extend_from_slice(&(Self::CAPACITY as u32).to_le_bytes());
        // The third fd: one end of the bulk-region socket pair.
        let (_regions, their_regions) = switchyard::sys::bulk::region_socketpair().unwrap();
        shm::send_fds(
            control.as_fd(),
            &offer,
            &[memfd.as_fd(), mine.as_fd(), their_regions.as_fd()],
        )
        .unwrap();
        let mut reply = [0u8; 16];
        let (n, mut fds) = shm::recv_fds(control.as_fd(), &mut reply, 1).unwrap();
        assert_eq!(&reply[..n], ACCEPT, "the server accepts shared memory");
        assert_eq!(fds.len(), 1, "with its eventfd");
        let mut hostile = Self {
            memfd,
            control,
            to_server: to_server.into_producer(),
            from_server: from_server.into_consumer(),
            server_wake: fds.remove(0),
            _mine: mine,
            received: BytesMut::new(),
            decoder: FrameDecoder::new(1 << 20),
        };
        let buf = switchyard_integration_tests::raw::client_hello("hostile");
        hostile.send(&buf);
        let frame = hostile.recv();
        assert_eq!(frame.header.kind, Kind::Hello, "{frame:?}");
        let server_hello = Hello::decode(&frame.payload).unwrap();
        (hostile, server_hello)
    }

    /// Writes `bytes` into the ring to the server and wakes it.
    fn send(&mut self, bytes: &[u8]) {
        let outcome = self.to_server.write(bytes).unwrap();
        assert_eq!(outcome.written, bytes.len(), "the ring has room");
        shm::eventfd_write(self.server_wake.as_fd(), 1).unwrap();
    }

    /// The next frame from the server (polls the ring; bounded).
    fn recv(&mut self) -> Frame {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(decoded) = self.decoder.decode(&mut self.received).unwrap() {
                match decoded {
                    Decoded::Frame(frame) => return frame,
                    other => panic!("unexpected {other:?}"),
                }
            }
            let read = self
                .from_server
                .read_buf(&mut self.received, usize::MAX)
                .unwrap();
            if read.read == 0 {
                assert!(Instant::now() < deadline, "the server did not answer");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Calls `Testing.add(a, b)` through the rings.
    fn add(&mut self, method_id: u32, call_id: u64, a: i64, b: i64) -> i64 {
        let mut header = Header::new(Kind::Request, call_id);
        header.method_id = method_id;
        let mut buf = Vec::new();
        let start = start_frame(&mut buf);
        Bincode::encode(&(a, b), &mut buf).unwrap();
        finish_frame(&mut buf, start, header, 0, u32::MAX).unwrap();
        self.send(&buf);
        let frame = self.recv();
        assert_eq!(
            (
                frame.header.kind,
                frame.header.call_id,
                Code::from_u16(frame.header.status)
            ),
            (Kind::Response, call_id, Code::Ok),
            "{frame:?}"
        );
        Bincode::decode(&frame.payload).unwrap()
    }

    /// Rewrites the `tail` of the ring to the server (the producer's index,
    /// which the server reads) to claim far more bytes than the ring holds,
    /// and wakes the server to look.
    fn corrupt_tail(&self) {
        let mut word = [0u8; 8];
        let offset = layout::TAIL as u64;
        assert_eq!(
            rustix::io::pread(&self.memfd, &mut word, offset).unwrap(),
            8
        );
        let bogus = u64::from_le_bytes(word).wrapping_add(3 * Self::CAPACITY as u64);
        assert_eq!(
            rustix::io::pwrite(&self.memfd, &bogus.to_le_bytes(), offset).unwrap(),
            8
        );
        shm::eventfd_write(self.server_wake.as_fd(), 1).unwrap();
    }

    /// Blocks until the server closes the control socket (`Ok(())`), or
    /// says what came instead (unexpected bytes, or the 10 s read timeout).
    /// The half-close byte `E` (the server sends no more) may come first.
    fn wait_closed(&mut self) -> Result<(), String> {
        let mut byte = [0u8; 1];
        loop {
            match self.control.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) if byte[0] == b'E' => continue,
                Ok(_) => return Err(format!("unexpected byte {byte:?} on the control socket")),
                Err(err) => return Err(format!("the control socket stayed open: {err}")),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_hostile_peer_corrupting_ring_fails_only_that_connection() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let honest = shm_client(&server).await;
        assert_eq!(honest.add(1, 1).await.unwrap(), 2);
        // A call in flight on the honest connection while the other is
        // broken: long enough to span the hostile set-up and its end.
        let in_flight = tokio::spawn({
            let honest = honest.clone();
            async move {
                let result = honest.sleep(2_000).await;
                (result, Instant::now())
            }
        });
        wait_for_requests(&honest, 2).await;
        let endpoint = server.endpoint("unix");
        let hostile = tokio::task::spawn_blocking({
            move || {
                let (mut hostile, hello) = HostileClient::connect(&endpoint);
                let add = hello.services[0]
                    .methods
                    .iter()
                    .find(|m| m.name == "add")
                    .expect("Testing.add")
                    .id;
                // The hand-made connection works before it is broken.
                assert_eq!(hostile.add(add, 1, 20, 22), 42);
                let corrupted = Instant::now();
                hostile.corrupt_tail();
                // The server says why on the way out, then closes.
                let goaway = hostile.recv();
                let closed = hostile.wait_closed();
                (goaway, closed, corrupted, corrupted.elapsed())
            }
        })
        .await
        .unwrap();
        let (goaway, closed, corrupted, took) = hostile;
        let message = String::from_utf8_lossy(&goaway.payload);
        assert_eq!(
            (goaway.header.kind, Code::from_u16(goaway.header.status)),
            (Kind::GoAway, Code::InvalidArgument),
            "{goaway:?}: {message}"
        );
        assert!(message.contains("corrupted shared memory"), "{message}");
        closed.expect("the server closes the connection whose ring was corrupted");
        eprintln!(
            "shm hostile: corrupted tail to the server's goaway and close: {took:.2?}; goaway: \
             {message}"
        );
        let (result, finished) = in_flight.await.unwrap();
        let slept = result.expect("the honest call in flight is not affected");
        assert!(slept >= 2_000, "slept {slept} ms");
        assert!(
            finished > corrupted,
            "the honest call must span the corruption for this test to mean anything"
        );
        assert_eq!(honest.add(2, 3).await.unwrap(), 5);
        assert_eq!(
            honest.pid().await.unwrap(),
            server.pid(),
            "the same server lives"
        );
        let fresh = shm_client(&server).await;
        assert_eq!(fresh.add(4, 5).await.unwrap(), 9);
    })
    .await;
}
