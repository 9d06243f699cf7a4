//! The shm ring over real sealed memfds: round trips, wrap-around with odd
//! record sizes, a two-process stress run of a million records, a hostile
//! peer (in-process and in another process), header validation on attach,
//! and the sys helpers (seals, SCM_RIGHTS, eventfd).
//!
//! Multi-process tests re-execute this test binary with `--exact
//! child_process` and `SWITCHYARD_SHM_RING_CHILD` set; the child gets a
//! socket as its stdin and receives the memfd and eventfds over it with
//! SCM_RIGHTS.

#![cfg(all(target_os = "linux", feature = "rt"))]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use memmap2::MmapRaw;
use switchyard::sys::shm;
use switchyard::transport::shm::ring::{
    Consumer, Producer, RING_HEADER_LEN, RegionError, Ring, RingError, Role, layout, region_len,
};

const CHILD_ENV: &str = "SWITCHYARD_SHM_RING_CHILD";
const STRESS_RECORDS: u64 = 1_000_000;
const STRESS_CAPACITY: usize = 256 * 1024;
const HOSTILE_SCRIBBLES: u64 = 400_000;

// ---------------------------------------------------------------- helpers

/// splitmix64: deterministic, and the same in parent and child.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A running checksum over payloads, word by word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Checksum(u64);

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap());
            self.0 = (self.0 ^ word)
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(29);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 ^= bytes.len() as u64;
    }
}

/// A sealed memfd holding one ring of `capacity`, and a mapping of it.
fn new_region(capacity: usize) -> (OwnedFd, Arc<MmapRaw>) {
    let len = region_len(capacity);
    let fd = shm::create_memfd("switchyard-test-ring", len as u64).unwrap();
    let map = shm::map_sealed(fd.as_fd(), len).unwrap();
    (fd, Arc::new(map))
}

/// Writes a `u64` into a mapping the way a peer process would.
fn poke_u64(map: &MmapRaw, offset: usize, value: u64) {
    assert!(offset.is_multiple_of(8) && offset + 8 <= map.len());
    // SAFETY: in bounds and 8-aligned (checked above; the mapping is page
    // aligned); the ring reads this word only atomically.
    unsafe { AtomicU64::from_ptr(map.as_mut_ptr().add(offset).cast()) }
        .store(value, Ordering::Relaxed);
}

/// Reads a `u64` of a mapping the way a peer process would.
fn peek_u64(map: &MmapRaw, offset: usize) -> u64 {
    assert!(offset.is_multiple_of(8) && offset + 8 <= map.len());
    // SAFETY: as in `poke_u64`.
    unsafe { AtomicU64::from_ptr(map.as_mut_ptr().add(offset).cast()) }.load(Ordering::Relaxed)
}

/// Writes a `u32` into a mapping the way a peer process would.
fn poke_u32(map: &MmapRaw, offset: usize, value: u32) {
    assert!(offset.is_multiple_of(4) && offset + 4 <= map.len());
    // SAFETY: as in `poke_u64`.
    unsafe { AtomicU32::from_ptr(map.as_mut_ptr().add(offset).cast()) }
        .store(value, Ordering::Relaxed);
}

/// Writes a data byte into a mapping the way a peer process would.
fn poke_byte(map: &MmapRaw, offset: usize, value: u8) {
    assert!(offset < map.len());
    // SAFETY: in bounds (checked above); nothing in this process holds a
    // reference to the mapped bytes, the ring copies them by raw pointer.
    unsafe { map.as_mut_ptr().add(offset).write_volatile(value) };
}

/// Counts of how a side waited.
#[derive(Debug, Default)]
struct Waits {
    sleeps: u64,
    wakes_sent: u64,
}

/// Spin a little, then yield, then sleep on `mine` (an eventfd) until the
/// peer wakes us, if `prepare` says there is still nothing to do.
fn idle(
    round: &mut u32,
    mine: BorrowedFd<'_>,
    prepare: impl FnOnce() -> bool,
    cancel: impl FnOnce(),
    waits: &mut Waits,
) {
    *round += 1;
    if *round < 64 {
        std::hint::spin_loop();
    } else if *round < 80 {
        std::thread::yield_now();
    } else {
        if prepare() {
            waits.sleeps += 1;
            // A timeout only bounds a lost wake-up; the loops re-check.
            shm::wait_readable(mine, Some(Duration::from_millis(200))).unwrap();
            shm::eventfd_read(mine).unwrap();
            cancel();
        }
        *round = 0;
    }
}

/// Writes all of `bytes`, waking the consumer through `peer` and sleeping
/// on `mine` when the ring is full.
fn write_all(
    p: &Producer,
    mut bytes: &[u8],
    mine: BorrowedFd<'_>,
    peer: BorrowedFd<'_>,
    waits: &mut Waits,
) {
    let mut round = 0;
    while !bytes.is_empty() {
        let outcome = p.write(bytes).expect("ring corrupt");
        if outcome.wake_peer {
            shm::eventfd_write(peer, 1).unwrap();
            waits.wakes_sent += 1;
        }
        bytes = &bytes[outcome.written..];
        if outcome.written == 0 {
            idle(
                &mut round,
                mine,
                || p.prepare_to_wait(),
                || p.cancel_wait(),
                waits,
            );
        } else {
            round = 0;
        }
    }
}

/// Reads at least one byte (up to `max`) into `buf`, waking the producer
/// through `peer` and sleeping on `mine` while the ring is empty; gives up
/// at `deadline`.
fn read_some(
    c: &Consumer,
    buf: &mut BytesMut,
    max: usize,
    mine: BorrowedFd<'_>,
    peer: BorrowedFd<'_>,
    waits: &mut Waits,
    deadline: Instant,
) -> usize {
    let mut round = 0;
    loop {
        let outcome = c.read_buf(buf, max).expect("ring corrupt");
        if outcome.wake_peer {
            shm::eventfd_write(peer, 1).unwrap();
            waits.wakes_sent += 1;
        }
        if outcome.read > 0 {
            return outcome.read;
        }
        assert!(Instant::now() < deadline, "no data before the deadline");
        idle(
            &mut round,
            mine,
            || c.prepare_to_wait(),
            || c.cancel_wait(),
            waits,
        );
    }
}

/// Starts this test binary again as `child_process` in `mode`, with a
/// socket as its stdin; returns the child and our end of the socket.
fn spawn_child(mode: &str) -> (Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, ours)
}

/// Waits for `child` to exit successfully within `limit`.
fn reap(mut child: Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ------------------------------------------------------------ the child

/// The other process of the multi-process tests; does nothing unless this
/// binary was started by `spawn_child`.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let stdin = std::io::stdin();
    let mut payload = [0u8; 16];
    let (n, fds) = shm::recv_fds(stdin.as_fd(), &mut payload, 3).unwrap();
    assert_eq!(n, 16, "short setup message");
    let len = u64::from_le_bytes(payload[..8].try_into().unwrap()) as usize;
    let map = Arc::new(shm::map_sealed(fds[0].as_fd(), len).unwrap());
    match mode.as_str() {
        "stress" => stress_producer(map, len, fds[1].as_fd(), fds[2].as_fd()),
        "hostile" => scribble(&map, len),
        other => panic!("unknown child mode {other}"),
    }
}

/// Writes the stress records: `[u32 len][len bytes]` each, then a trailer
/// `[u32 0][u64 count][u64 checksum]`.
fn stress_producer(
    map: Arc<MmapRaw>,
    len: usize,
    wake_consumer: BorrowedFd<'_>,
    mine: BorrowedFd<'_>,
) {
    let producer = Ring::from_mmap(map, 0, len, Role::Attach)
        .unwrap()
        .into_producer();
    let mut sizes = Prng(1);
    let mut content = Prng(2);
    let mut sum = Checksum::default();
    let mut waits = Waits::default();
    let mut record = vec![0u8; 4 + 1000];
    for _ in 0..STRESS_RECORDS {
        let size = 1 + sizes.below(1000) as usize;
        record[..4].copy_from_slice(&(size as u32).to_le_bytes());
        content.fill(&mut record[4..4 + size]);
        sum.add(&record[4..4 + size]);
        write_all(
            &producer,
            &record[..4 + size],
            mine,
            wake_consumer,
            &mut waits,
        );
    }
    let mut trailer = Vec::with_capacity(20);
    trailer.extend_from_slice(&0u32.to_le_bytes());
    trailer.extend_from_slice(&STRESS_RECORDS.to_le_bytes());
    trailer.extend_from_slice(&sum.0.to_le_bytes());
    write_all(&producer, &trailer, mine, wake_consumer, &mut waits);
    eprintln!("stress producer: {waits:?}");
}

/// Writes random values over the whole ring region, most of them
/// transient (the old value is put back a moment later, as a peer that
/// rewrites an index after our check would).
fn scribble(map: &MmapRaw, len: usize) {
    let mut prng = Prng(99);
    for _ in 0..HOSTILE_SCRIBBLES {
        let undo = flip(&mut prng, map, len);
        for _ in 0..prng.below(200) {
            std::hint::spin_loop();
        }
        if prng.below(4) != 0 {
            undo();
        }
    }
}

/// One hostile write somewhere in a ring region of `len` bytes; returns
/// what puts the old value back.
fn flip<'a>(prng: &mut Prng, map: &'a MmapRaw, len: usize) -> Box<dyn FnOnce() + 'a> {
    let r = prng.next();
    let value = prng.next();
    let word = |offset| peek_u64(map, offset);
    match r % 8 {
        0..=3 => {
            let offset = if r.is_multiple_of(2) {
                layout::TAIL
            } else {
                layout::HEAD
            };
            let old = word(offset);
            // Half of them near the honest value, so that some calls pass.
            let new = if r % 8 < 2 {
                value
            } else {
                old.wrapping_add(value % 256).wrapping_sub(128)
            };
            poke_u64(map, offset, new);
            Box::new(move || poke_u64(map, offset, old))
        }
        4 | 5 => {
            let offset = if r.is_multiple_of(2) {
                layout::CONSUMER_WAITING
            } else {
                layout::PRODUCER_WAITING
            };
            poke_u32(map, offset, value as u32);
            Box::new(move || poke_u32(map, offset, 0))
        }
        6 => {
            let old = word(layout::CAPACITY);
            poke_u64(map, layout::CAPACITY, value);
            Box::new(move || poke_u64(map, layout::CAPACITY, old))
        }
        _ => {
            let at = RING_HEADER_LEN + value as usize % (len - RING_HEADER_LEN);
            poke_byte(map, at, r as u8);
            Box::new(|| {})
        }
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn round_trip_across_two_mappings() {
    let (fd, map) = new_region(4096);
    let len = map.len();
    let producer = Ring::from_mmap(map, 0, len, Role::Init { capacity: 4096 })
        .unwrap()
        .into_producer();
    // A second mapping of the same memfd, as the peer process would have.
    let peer_map = Arc::new(shm::map_sealed(fd.as_fd(), len).unwrap());
    let ring = Ring::from_mmap(peer_map, 0, len, Role::Attach).unwrap();
    assert_eq!(ring.capacity(), 4096);
    let consumer = ring.into_consumer();

    assert_eq!(consumer.available().unwrap(), 0);
    let outcome = producer.write(b"hello over shared memory").unwrap();
    assert_eq!(outcome.written, 24);
    assert!(!outcome.wake_peer);
    let mut out = [0u8; 64];
    let outcome = consumer.read(&mut out).unwrap();
    assert_eq!(&out[..outcome.read], b"hello over shared memory");
    assert_eq!(producer.free_space().unwrap(), 4096);
}

#[test]
fn wrap_around_with_odd_record_sizes() {
    const CAPACITY: usize = 64 * 1024;
    const RECORDS: [usize; 4] = [271_828, 314_159, 271_828, 314_159];
    let (_fd, map) = new_region(CAPACITY);
    let len = map.len();
    let (producer, consumer) = Ring::from_mmap(map, 0, len, Role::Init { capacity: CAPACITY })
        .unwrap()
        .split();
    let wake_producer = shm::eventfd().unwrap();
    let wake_consumer = shm::eventfd().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);

    std::thread::scope(|s| {
        let (wake_producer, wake_consumer) = (&wake_producer, &wake_consumer);
        s.spawn(move || {
            let mut content = Prng(7);
            let mut pieces = Prng(8);
            let mut waits = Waits::default();
            for size in RECORDS {
                let mut record = vec![0; size];
                content.fill(&mut record);
                let mut rest = &record[..];
                while !rest.is_empty() {
                    let piece = (1 + pieces.below(9973) as usize).min(rest.len());
                    let (now, later) = rest.split_at(piece);
                    write_all(
                        &producer,
                        now,
                        wake_producer.as_fd(),
                        wake_consumer.as_fd(),
                        &mut waits,
                    );
                    rest = later;
                }
            }
        });

        let mut content = Prng(7);
        let mut chunks = Prng(9);
        let mut waits = Waits::default();
        for size in RECORDS {
            let mut expected = vec![0; size];
            content.fill(&mut expected);
            let mut got = BytesMut::with_capacity(size);
            while got.len() < size {
                let max = (1 + chunks.below(7919) as usize).min(size - got.len());
                read_some(
                    &consumer,
                    &mut got,
                    max,
                    wake_consumer.as_fd(),
                    wake_producer.as_fd(),
                    &mut waits,
                    deadline,
                );
            }
            assert!(got[..] == expected[..], "record of {size} bytes differs");
        }
        assert_eq!(consumer.available().unwrap(), 0);
    });
}

#[test]
fn million_records_between_two_processes() {
    let len = region_len(STRESS_CAPACITY);
    let memfd = shm::create_memfd("switchyard-stress", len as u64).unwrap();
    let map = Arc::new(shm::map_sealed(memfd.as_fd(), len).unwrap());
    let consumer = Ring::from_mmap(
        map,
        0,
        len,
        Role::Init {
            capacity: STRESS_CAPACITY,
        },
    )
    .unwrap()
    .into_consumer();
    let wake_consumer = shm::eventfd().unwrap();
    let wake_producer = shm::eventfd().unwrap();

    let started = Instant::now();
    let (child, socket) = spawn_child("stress");
    let mut setup = [0u8; 16];
    setup[..8].copy_from_slice(&(len as u64).to_le_bytes());
    shm::send_fds(
        socket.as_fd(),
        &setup,
        &[memfd.as_fd(), wake_consumer.as_fd(), wake_producer.as_fd()],
    )
    .unwrap();

    let deadline = started + Duration::from_secs(300);
    let mut sizes = Prng(1);
    let mut sum = Checksum::default();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut waits = Waits::default();
    let mut buf = BytesMut::with_capacity(2 * STRESS_CAPACITY);
    'stream: loop {
        read_some(
            &consumer,
            &mut buf,
            STRESS_CAPACITY,
            wake_consumer.as_fd(),
            wake_producer.as_fd(),
            &mut waits,
            deadline,
        );
        while buf.len() >= 4 {
            let size = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            if size == 0 {
                if buf.len() < 20 {
                    break;
                }
                let count = u64::from_le_bytes(buf[4..12].try_into().unwrap());
                let their_sum = u64::from_le_bytes(buf[12..20].try_into().unwrap());
                assert_eq!(count, STRESS_RECORDS);
                assert_eq!(records, STRESS_RECORDS);
                assert_eq!(their_sum, sum.0, "checksum mismatch");
                buf.advance(20);
                assert!(buf.is_empty(), "bytes after the trailer");
                break 'stream;
            }
            if buf.len() < 4 + size {
                break;
            }
            let expected = 1 + sizes.below(1000) as usize;
            assert_eq!(size, expected, "record {records} has the wrong size");
            sum.add(&buf[4..4 + size]);
            buf.advance(4 + size);
            records += 1;
            bytes += 4 + size as u64;
        }
    }
    let elapsed = started.elapsed();
    reap(child, Duration::from_secs(30));
    eprintln!(
        "stress: {records} records, {bytes} bytes through a {} KiB ring in {elapsed:.2?} \
         ({:.0} records/s, {:.0} MB/s); consumer {waits:?}",
        STRESS_CAPACITY / 1024,
        records as f64 / elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6,
    );
}

/// The victim's side of a hostile-peer run: writes and reads through both
/// ends; every call must return Ok or Corrupt.
struct Victim {
    map: Arc<MmapRaw>,
    producer: Producer,
    consumer: Consumer,
    prng: Prng,
    ok: u64,
    corrupt: u64,
}

impl Victim {
    /// A victim over a fresh ring of `capacity` at the start of `map`.
    fn new(map: Arc<MmapRaw>, capacity: usize, seed: u64) -> Self {
        let len = map.len();
        let (producer, consumer) = Ring::from_mmap(map.clone(), 0, len, Role::Init { capacity })
            .unwrap()
            .split();
        Self {
            map,
            producer,
            consumer,
            prng: Prng(seed),
            ok: 0,
            corrupt: 0,
        }
    }

    /// Drops the corrupted ring and initialises a new one over the same
    /// region, as a new connection would.
    fn reset(&mut self) {
        let capacity = self.producer.capacity();
        // The old ends must go first: one ring per region per process.
        let (producer, consumer) = Ring::in_heap(capacity).unwrap().split();
        self.producer = producer;
        self.consumer = consumer;
        let len = self.map.len();
        let (producer, consumer) =
            Ring::from_mmap(self.map.clone(), 0, len, Role::Init { capacity })
                .unwrap()
                .split();
        self.producer = producer;
        self.consumer = consumer;
    }

    fn step(&mut self) {
        let r = self.prng.next();
        let result = match r % 6 {
            0 | 1 => {
                let data = vec![r as u8; (r >> 8) as usize % 200];
                self.producer.write(&data).map(|_| ())
            }
            2 => {
                let mut out = vec![0; (r >> 8) as usize % 200];
                self.consumer.read(&mut out).map(|_| ())
            }
            3 => {
                let mut out = BytesMut::new();
                self.consumer
                    .read_buf(&mut out, (r >> 8) as usize % 200)
                    .map(|_| ())
            }
            4 => self.consumer.available().map(|_| ()),
            _ => {
                if self.producer.prepare_to_wait() {
                    self.producer.cancel_wait();
                }
                if self.consumer.prepare_to_wait() {
                    self.consumer.cancel_wait();
                }
                self.producer.free_space().map(|_| ())
            }
        };
        match result {
            Ok(()) => self.ok += 1,
            Err(RingError::Corrupt { .. }) => self.corrupt += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}

#[test]
fn hostile_peer_in_process_gets_ok_or_corrupt() {
    const CAPACITY: usize = 64;
    let (fd, map) = new_region(CAPACITY);
    let len = map.len();
    let peer = shm::map_sealed(fd.as_fd(), len).unwrap();
    let mut victim = Victim::new(map, CAPACITY, 3);
    let mut hostile = Prng(4);
    for i in 0..150_000 {
        if i % 100 == 99 {
            victim.reset();
        }
        victim.step();
        let undo = flip(&mut hostile, &peer, len);
        victim.step();
        if hostile.below(4) != 0 {
            undo();
        }
    }
    eprintln!(
        "hostile (in process): {} ok, {} corrupt",
        victim.ok, victim.corrupt
    );
    assert!(victim.ok > 0 && victim.corrupt > 0, "both paths exercised");
}

#[test]
fn hostile_peer_process_gets_ok_or_corrupt() {
    const CAPACITY: usize = 64;
    let (fd, map) = new_region(CAPACITY);
    let len = map.len();
    let mut victim = Victim::new(map, CAPACITY, 5);
    let (mut child, socket) = spawn_child("hostile");
    let mut setup = [0u8; 16];
    setup[..8].copy_from_slice(&(len as u64).to_le_bytes());
    shm::send_fds(socket.as_fd(), &setup, &[fd.as_fd()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut steps = 0u64;
    loop {
        for _ in 0..1000 {
            victim.step();
        }
        victim.reset();
        steps += 1000;
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "hostile child failed: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "hostile child did not finish");
    }
    eprintln!(
        "hostile (other process, {HOSTILE_SCRIBBLES} scribbles): {steps} calls, {} ok, {} corrupt",
        victim.ok, victim.corrupt
    );
    assert!(victim.ok > 0);
}

#[test]
fn attach_refuses_bad_headers() {
    const CAPACITY: usize = 4096;
    let (_fd, map) = new_region(CAPACITY);
    let len = map.len();
    let attach = |len| Ring::from_mmap(map.clone(), 0, len, Role::Attach);

    // Never initialised: all zeroes.
    assert!(matches!(
        attach(len),
        Err(RegionError::BadMagic { found: 0 })
    ));

    drop(Ring::from_mmap(map.clone(), 0, len, Role::Init { capacity: CAPACITY }).unwrap());
    assert_eq!(attach(len).unwrap().capacity(), CAPACITY);

    // Shorter than the header, or than the capacity claims.
    assert!(matches!(
        attach(100),
        Err(RegionError::TooShort { len: 100, .. })
    ));
    assert!(matches!(attach(len - 1), Err(RegionError::TooShort { .. })));
    poke_u64(&map, layout::CAPACITY, 1 << 20);
    assert!(matches!(attach(len), Err(RegionError::TooShort { .. })));

    for bad in [0, 1000, 4097, 3, u64::MAX, 1 << 40] {
        poke_u64(&map, layout::CAPACITY, bad);
        match attach(len) {
            Err(RegionError::BadCapacity { capacity }) => assert_eq!(capacity, bad),
            other => panic!("capacity {bad}: {other:?}"),
        }
    }
    poke_u64(&map, layout::CAPACITY, CAPACITY as u64);

    poke_u32(&map, layout::VERSION, 2);
    assert!(matches!(
        attach(len),
        Err(RegionError::BadVersion { found: 2 })
    ));
    poke_u32(&map, layout::VERSION, 1);

    poke_u64(&map, layout::MAGIC, u64::from_le_bytes(*b"NOTARING"));
    assert!(matches!(attach(len), Err(RegionError::BadMagic { .. })));

    // Placement: misaligned, outside the mapping, non-power-of-two init.
    assert!(matches!(
        Ring::from_mmap(map.clone(), 8, len - 8, Role::Init { capacity: 1024 }),
        Err(RegionError::Misaligned { .. })
    ));
    assert!(matches!(
        Ring::from_mmap(map.clone(), 128, len, Role::Attach),
        Err(RegionError::OutsideMapping { .. })
    ));
    assert!(matches!(
        Ring::from_mmap(map.clone(), 0, len, Role::Init { capacity: 3000 }),
        Err(RegionError::BadCapacity { capacity: 3000 })
    ));

    // One ring per region per process.
    let ring = Ring::from_mmap(map.clone(), 0, len, Role::Init { capacity: CAPACITY }).unwrap();
    assert!(matches!(attach(len), Err(RegionError::InUse { .. })));
    drop(ring);
    assert!(attach(len).is_ok());
}

#[test]
fn sealed_memfd_and_eventfd_travel_over_a_socketpair() {
    let (a, b) = UnixStream::pair().unwrap();
    let memfd = shm::create_memfd("switchyard-test-send", 8192).unwrap();
    let efd = shm::eventfd().unwrap();
    shm::send_fds(a.as_fd(), b"setup", &[memfd.as_fd(), efd.as_fd()]).unwrap();

    let mut buf = [0u8; 16];
    let (n, fds) = shm::recv_fds(b.as_fd(), &mut buf, 2).unwrap();
    assert_eq!(&buf[..n], b"setup");
    assert_eq!(fds.len(), 2);
    for fd in &fds {
        let flags = rustix::io::fcntl_getfd(fd).unwrap();
        assert!(
            flags.contains(rustix::io::FdFlags::CLOEXEC),
            "received fds are close-on-exec"
        );
    }
    let seals = rustix::fs::fcntl_get_seals(&fds[0]).unwrap();
    assert!(seals.contains(shm::REQUIRED_SEALS | rustix::fs::SealFlags::SEAL));
    assert!(
        rustix::fs::ftruncate(&fds[0], 4096).is_err(),
        "the seals stop truncation"
    );
    shm::check_sealed(fds[0].as_fd(), 8192).unwrap();
    drop(shm::map_sealed(fds[0].as_fd(), 8192).unwrap());

    // The received eventfd is the same object as ours.
    shm::eventfd_write(efd.as_fd(), 1).unwrap();
    assert_eq!(shm::eventfd_read(fds[1].as_fd()).unwrap(), 1);

    // More fds than expected: refused, and the extra ones are not leaked to
    // the caller.
    shm::send_fds(
        a.as_fd(),
        b"x",
        &[memfd.as_fd(), efd.as_fd(), memfd.as_fd()],
    )
    .unwrap();
    let err = shm::recv_fds(b.as_fd(), &mut buf, 1).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

    let err = shm::send_fds(a.as_fd(), b"", &[memfd.as_fd()]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn unsealed_or_wrong_size_fds_are_refused() {
    use rustix::fs::{MemfdFlags, memfd_create};

    // A memfd that allows sealing but was never sealed.
    let open = memfd_create("unsealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&open, 4096).unwrap();
    match shm::map_sealed(open.as_fd(), 4096) {
        Err(shm::MapError::NotSealed { missing, .. }) => assert_eq!(missing, shm::REQUIRED_SEALS),
        other => panic!("unsealed memfd: {other:?}"),
    }

    // A memfd that cannot be sealed at all.
    let plain = memfd_create("plain", MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&plain, 4096).unwrap();
    assert!(matches!(
        shm::map_sealed(plain.as_fd(), 4096),
        Err(shm::MapError::NotSealed { .. })
    ));

    // A regular file: either not sealable or not sealed.
    let file = tempfile::tempfile().unwrap();
    file.set_len(4096).unwrap();
    assert!(matches!(
        shm::map_sealed(file.as_fd(), 4096),
        Err(shm::MapError::NotSealable(_) | shm::MapError::NotSealed { .. })
    ));

    // Sealed, but not the size agreed on.
    let sealed = shm::create_memfd("sized", 4096).unwrap();
    match shm::map_sealed(sealed.as_fd(), 8192) {
        Err(shm::MapError::WrongSize { expected, actual }) => {
            assert_eq!((expected, actual), (8192, 4096));
        }
        other => panic!("wrong size: {other:?}"),
    }
}

#[test]
fn eventfd_counts_and_wakes() {
    let efd = shm::eventfd().unwrap();
    assert_eq!(
        shm::eventfd_read(efd.as_fd()).unwrap(),
        0,
        "nothing pending"
    );
    assert!(!shm::wait_readable(efd.as_fd(), Some(Duration::from_millis(10))).unwrap());
    shm::eventfd_write(efd.as_fd(), 1).unwrap();
    shm::eventfd_write(efd.as_fd(), 2).unwrap();
    assert!(shm::wait_readable(efd.as_fd(), Some(Duration::ZERO)).unwrap());
    assert_eq!(shm::eventfd_read(efd.as_fd()).unwrap(), 3);
    assert_eq!(shm::eventfd_read(efd.as_fd()).unwrap(), 0);

    // A wake from another thread ends a sleep.
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            shm::eventfd_write(efd.as_fd(), 1).unwrap();
        });
        assert!(shm::wait_readable(efd.as_fd(), Some(Duration::from_secs(10))).unwrap());
    });
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert_eq!(shm::eventfd_read(efd.as_fd()).unwrap(), 1);
}
