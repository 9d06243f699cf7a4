//! POSIX message queues for one-way calls, against real kernel queues.
//!
//! Every test uses its own queue names (pid, counter, test name) and removes
//! them when it ends, passing or failing. Where the kernel has no message
//! queues, or they cannot be used here, the tests say why and pass.

#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard::Code;
use switchyard::protocol::frame::{Header, Kind, MAX_FRAME_LIMIT, finish_frame, start_frame};
use switchyard::sys::mqueue::{self as sys, MqError};
use switchyard::transport::mqueue::{
    MalformedMessage, MqReceiver, MqSendError, MqSender, Removal, decode_message, limits,
    prune_named, remove_if_empty,
};

/// Message size for tests that do not exercise the limits: keeps parallel
/// tests well inside the per-user byte budget (`ulimit -q`).
const SMALL: usize = 1024;

/// Unique queue names for one test, unlinked when dropped.
struct Queues {
    test: &'static str,
    names: Vec<String>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Queues {
    /// `None` (after printing why) when message queues cannot be used here.
    fn new(test: &'static str) -> Option<Self> {
        if let Err(err) = limits() {
            eprintln!("skipping {test}: {err}");
            return None;
        }
        let mut queues = Self {
            test,
            names: Vec::new(),
        };
        let probe = queues.name();
        match sys::create_exclusive(&probe, 1, 64) {
            Ok(_) => Some(queues),
            Err(err @ (MqError::Unsupported { .. } | MqError::PermissionDenied { .. })) => {
                eprintln!("skipping {test}: {err}");
                None
            }
            Err(err) => panic!("probe queue: {err}"),
        }
    }

    fn name(&mut self) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("/sy-test-{}-{n}-{}", std::process::id(), self.test);
        self.names.push(name.clone());
        name
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = sys::unlink(name);
        }
    }
}

fn oneway(method_id: u32, metadata: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let start = start_frame(&mut out);
    out.extend_from_slice(metadata);
    out.extend_from_slice(payload);
    let mut header = Header::new(Kind::OneWay, 0);
    header.method_id = method_id;
    finish_frame(&mut out, start, header, metadata.len(), MAX_FRAME_LIMIT).unwrap();
    out
}

fn capacity() -> usize {
    limits().unwrap().msg_max
}

#[tokio::test]
async fn a_frame_round_trips_and_wakes_a_waiting_receiver() {
    let Some(mut queues) = Queues::new("roundtrip") else {
        return;
    };
    let name = queues.name();
    let mut rx = MqReceiver::create(&name, capacity(), SMALL).unwrap();
    assert!(!rx.queue().reopened());
    assert_eq!(rx.queue().message_size(), SMALL);
    let receiving = tokio::spawn(async move {
        let got = rx.recv_frame().await.unwrap();
        (got, rx)
    });
    // Let the receiver block on readability first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let tx = MqSender::open(&name).unwrap();
    assert_eq!(tx.max_message(), SMALL);
    tx.send(&oneway(42, b"meta", b"payload"), 7, None)
        .await
        .unwrap();
    let ((frame, priority), rx) = tokio::time::timeout(Duration::from_secs(5), receiving)
        .await
        .expect("the receiver woke up")
        .unwrap();
    assert_eq!(priority, 7);
    assert_eq!(frame.header.kind, Kind::OneWay);
    assert_eq!(frame.header.method_id, 42);
    assert_eq!(&frame.metadata[..], b"meta");
    assert_eq!(&frame.payload[..], b"payload");
    assert_eq!(rx.malformed(), 0);
    assert_eq!(rx.queue().attributes().unwrap().current_messages, 0);
}

#[tokio::test]
async fn highest_priority_first_and_fifo_within_a_priority() {
    let Some(mut queues) = Queues::new("priority") else {
        return;
    };
    let name = queues.name();
    let max = capacity();
    let mut rx = MqReceiver::create(&name, max, SMALL).unwrap();
    let tx = MqSender::open(&name).unwrap();
    let priorities = [1u32, 5, 1, 0, 5, 9, 1, 0, 9, 5, 3, 7];
    let sent: Vec<(u32, u32)> = priorities
        .iter()
        .take(max)
        .enumerate()
        .map(|(seq, &p)| (p, seq as u32))
        .collect();
    for &(priority, seq) in &sent {
        tx.try_send(&oneway(seq, b"", &seq.to_le_bytes()), priority)
            .unwrap();
    }
    let mut expected = sent.clone();
    expected.sort_by_key(|&(priority, seq)| (std::cmp::Reverse(priority), seq));
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        let (frame, priority) = rx.recv_frame().await.unwrap();
        got.push((priority, frame.header.method_id));
    }
    assert_eq!(got, expected);
    assert_eq!(rx.try_recv().unwrap(), None);
}

#[tokio::test]
async fn a_full_queue_is_backpressure_never_a_drop() {
    let Some(mut queues) = Queues::new("full") else {
        return;
    };
    let name = queues.name();
    let max = capacity();
    let mut rx = MqReceiver::create(&name, max, SMALL).unwrap();
    let tx = MqSender::open(&name).unwrap();
    for seq in 0..max as u32 {
        tx.try_send(&oneway(seq, b"", b"x"), 1).unwrap();
    }

    let started = Instant::now();
    let err = tx.try_send(&oneway(99, b"", b"x"), 1).unwrap_err();
    assert!(matches!(err, MqSendError::Full { .. }), "{err}");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(started.elapsed() < Duration::from_millis(50));

    let started = Instant::now();
    let deadline = started + Duration::from_millis(100);
    let err = tx
        .send(&oneway(99, b"", b"x"), 1, Some(deadline))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, MqSendError::DeadlineExceeded { .. }), "{err}");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(
        rx.queue().attributes().unwrap().current_messages,
        max,
        "neither the refused nor the timed-out call was enqueued"
    );

    // A deadline already past fails without sending.
    let err = tx
        .send(&oneway(99, b"", b"x"), 1, Some(Instant::now()))
        .await
        .unwrap_err();
    assert!(matches!(err, MqSendError::DeadlineExceeded { .. }), "{err}");

    // A blocked send completes as soon as one message is taken.
    let blocked = tokio::spawn(async move {
        tx.send(&oneway(100, b"", b"last"), 2, None).await.unwrap();
        Instant::now()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !blocked.is_finished(),
        "the send waits while the queue is full"
    );
    rx.recv_frame().await.unwrap();
    let drained = Instant::now();
    let sent_at = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("the blocked send completed")
        .unwrap();
    let lag = sent_at.saturating_duration_since(drained);
    assert!(lag < Duration::from_millis(500), "{lag:?}");
    // The late call has the highest priority, so it comes next.
    let (frame, priority) = rx.recv_frame().await.unwrap();
    assert_eq!((frame.header.method_id, priority), (100, 2));
}

#[tokio::test]
async fn a_frame_over_the_message_size_is_refused_without_sending() {
    let Some(mut queues) = Queues::new("toolarge") else {
        return;
    };
    let name = queues.name();
    let lim = limits().unwrap();
    // The system's own limits, read from /proc.
    let rx = MqReceiver::create(&name, lim.msg_max, lim.msgsize_max).unwrap();
    let tx = MqSender::open(&name).unwrap();
    assert_eq!(tx.max_message(), lim.msgsize_max);
    let exact = oneway(1, b"", &vec![7; lim.msgsize_max - 40]);
    assert_eq!(exact.len(), lim.msgsize_max);
    tx.try_send(&exact, 0).unwrap();
    let over = oneway(1, b"", &vec![7; lim.msgsize_max - 39]);
    for err in [
        tx.try_send(&over, 0).unwrap_err(),
        tx.send(&over, 0, None).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, MqSendError::TooLarge { len, max } if len == lim.msgsize_max + 1 && max == lim.msgsize_max),
            "{err}"
        );
        assert!(err.to_string().contains("over the connection"), "{err}");
    }
    assert_eq!(rx.queue().attributes().unwrap().current_messages, 1);

    // Sizes beyond the kernel's hard caps (65536 messages, 16 MiB) are
    // refused for everyone.
    let err = sys::create_exclusive(&queues.name(), 100_000, SMALL).unwrap_err();
    assert!(matches!(err, MqError::ExceedsLimits { .. }), "{err}");
    let err = sys::create_exclusive(&queues.name(), 1, 32 << 20).unwrap_err();
    assert!(err.to_string().contains("msgsize_max"), "{err}");
    // Between the system limits and those caps only a process with
    // CAP_SYS_RESOURCE may go; without it the kernel says EINVAL.
    let above = sys::create_exclusive(&queues.name(), lim.msg_max + 1, SMALL);
    match above {
        Ok(queue) => {
            assert_eq!(queue.max_messages(), lim.msg_max + 1);
            drop(queue);
            sys::unlink(&queues.name()).unwrap();
        }
        Err(err) => assert!(matches!(err, MqError::ExceedsLimits { .. }), "{err}"),
    }

    // Priorities above the maximum are refused.
    let err = tx
        .try_send(&oneway(1, b"", b""), sys::MAX_PRIORITY + 1)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn calls_wait_in_the_kernel_while_no_server_runs() {
    let Some(mut queues) = Queues::new("durable") else {
        return;
    };
    let name = queues.name();
    // A server ran once and left its queue.
    drop(MqReceiver::create(&name, capacity(), SMALL).unwrap());
    // A client finds the queue but no server, and still enqueues.
    let tx = MqSender::open(&name).unwrap();
    for seq in 0..3 {
        tx.send(&oneway(seq, b"", b"waiting"), 0, None)
            .await
            .unwrap();
    }
    drop(tx);
    // The server comes back: its own queue is reopened, not refused, and
    // keeps its messages.
    let mut rx = MqReceiver::create(&name, capacity(), SMALL).unwrap();
    assert!(rx.queue().reopened());
    for seq in 0..3 {
        let (frame, _) = rx.recv_frame().await.unwrap();
        assert_eq!(frame.header.method_id, seq);
    }
    // A previous run's sizes win over the new request.
    drop(rx);
    let rx = MqReceiver::create(&name, 2, 128).unwrap();
    assert!(rx.queue().reopened());
    assert_eq!(rx.queue().message_size(), SMALL);
}

#[tokio::test]
async fn a_queue_made_by_someone_else_is_refused_not_hijacked() {
    use nix::mqueue::{MQ_OFlag, MqAttr, mq_close, mq_open};
    use nix::sys::stat::Mode;

    let Some(mut queues) = Queues::new("foreign") else {
        return;
    };
    let name = queues.name();
    let mode = Mode::from_bits_truncate(0o644);
    let attr = MqAttr::new(0, 2, 128, 0);
    let mqd = mq_open(
        name.as_str(),
        MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR,
        mode,
        Some(&attr),
    )
    .unwrap();
    rustix::fs::fchmod(&mqd, rustix::fs::Mode::from_raw_mode(0o644)).unwrap();
    let our_uid = switchyard::sys::uid();
    let check = |err: MqError| {
        assert!(
            matches!(err, MqError::Foreign { owner_uid, mode: 0o644, .. } if owner_uid == our_uid),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("will not be used"), "{text}");
        assert!(text.contains("rm /dev/mqueue/sy-test-"), "{text}");
    };
    check(sys::create_exclusive(&name, 2, 128).unwrap_err());
    check(MqReceiver::create(&name, 2, 128).unwrap_err());
    check(sys::open_send(&name).unwrap_err());
    check(MqSender::open(&name).unwrap_err());
    check(remove_if_empty(&name).unwrap_err());
    // Still there, untouched.
    assert_eq!(
        nix::mqueue::mq_getattr(&mqd).unwrap().msgsize(),
        128,
        "the queue was left as it was"
    );
    mq_close(mqd).unwrap();
    assert!(sys::unlink(&name).is_ok(), "the queue still had its name");
}

#[tokio::test]
async fn a_malformed_message_is_dropped_counted_and_draining_goes_on() {
    let Some(mut queues) = Queues::new("malformed") else {
        return;
    };
    let name = queues.name();
    let mut rx = MqReceiver::create(&name, capacity(), SMALL).unwrap();
    let tx = sys::open_send(&name).unwrap();

    let garbage = b"definitely not a frame".to_vec();
    let mut request = oneway(1, b"", b"x");
    request[3] = Kind::Request as u8;
    let mut truncated = oneway(2, b"", b"some payload");
    truncated.truncate(truncated.len() - 3);
    let mut trailing = oneway(3, b"", b"x");
    trailing.push(0);
    let mut bad_magic = oneway(4, b"", b"x");
    bad_magic[0] = b'X';
    let cases = [
        (garbage.clone(), "shorter than a 40-byte frame header"),
        (request.clone(), "only one-way calls"),
        (truncated.clone(), "declares 12 bytes"),
        (trailing.clone(), "but the message has 2"),
        (bad_magic.clone(), "bad magic"),
    ];
    for (bytes, text) in &cases {
        let err = decode_message(Bytes::from(bytes.clone())).unwrap_err();
        assert!(err.to_string().contains(text), "{err} / {text}");
    }
    assert!(matches!(
        decode_message(Bytes::from(request.clone())),
        Err(MalformedMessage::NotOneWay {
            kind: Kind::Request
        })
    ));

    for (bytes, _) in &cases {
        tx.send(bytes, 3).unwrap();
    }
    tx.send(&oneway(77, b"m", b"good"), 3).unwrap();
    let (frame, priority) = rx.recv_frame().await.unwrap();
    assert_eq!((frame.header.method_id, priority), (77, 3));
    assert_eq!(&frame.payload[..], b"good");
    assert_eq!(rx.malformed(), cases.len() as u64);
}

#[tokio::test]
async fn shutdown_removes_a_queue_only_when_it_is_empty() {
    let Some(mut queues) = Queues::new("remove") else {
        return;
    };
    let name = queues.name();
    let mut rx = MqReceiver::create(&name, capacity(), SMALL).unwrap();
    let tx = MqSender::open(&name).unwrap();
    tx.try_send(&oneway(1, b"", b"x"), 0).unwrap();
    assert_eq!(
        remove_if_empty(&name).unwrap(),
        Removal::Kept { messages: 1 }
    );
    assert!(sys::open_send(&name).is_ok(), "a queue with messages stays");
    rx.recv_frame().await.unwrap();
    assert_eq!(remove_if_empty(&name).unwrap(), Removal::Removed);
    assert!(matches!(
        sys::open_send(&name),
        Err(MqError::NotFound { .. })
    ));
    assert!(!rx.queue().is_linked().unwrap());
    assert_eq!(remove_if_empty(&name).unwrap(), Removal::Absent);

    // A sender that still holds the removed queue is told, and sends
    // nothing into a queue nobody can open any more.
    let err = tx.try_send(&oneway(2, b"", b"x"), 0).unwrap_err();
    assert!(matches!(err, MqSendError::Removed { .. }), "{err}");
    assert_eq!(err.code(), Code::Unavailable);
    let err = tx.send(&oneway(2, b"", b"x"), 0, None).await.unwrap_err();
    assert!(matches!(err, MqSendError::Removed { .. }), "{err}");
    assert_eq!(rx.try_recv().unwrap(), None);
}

#[tokio::test]
async fn prune_removes_queues_whose_owner_is_gone() {
    let Some(mut queues) = Queues::new("prune") else {
        return;
    };
    let gone = queues.name();
    let alive = queues.name();
    let missing = queues.name();
    for name in [&gone, &alive] {
        drop(MqReceiver::create(name, capacity(), SMALL).unwrap());
        let tx = sys::open_send(name).unwrap();
        tx.send(&oneway(1, b"", b"x"), 0).unwrap();
        tx.send(&oneway(2, b"", b"y"), 0).unwrap();
    }
    let report = prune_named([&gone, &alive, &missing], |name| name == alive);
    assert_eq!(report.kept, vec![alive.clone()]);
    assert_eq!(report.pruned.len(), 1);
    assert_eq!(report.pruned[0].name, gone);
    assert_eq!(report.pruned[0].discarded, 2);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(matches!(
        sys::open_send(&gone),
        Err(MqError::NotFound { .. })
    ));
    assert_eq!(
        sys::open_send(&alive)
            .unwrap()
            .attributes()
            .unwrap()
            .current_messages,
        2
    );
}

#[test]
fn own_queues_are_listed_where_dev_mqueue_is_mounted() {
    let Some(mut queues) = Queues::new("list") else {
        return;
    };
    let uid = switchyard::sys::uid();
    let service = format!("test-{}-list", std::process::id());
    let name = sys::queue_name(&service, uid);
    queues.names.push(name.clone());
    let other = queues.name();
    drop(sys::create_exclusive(&name, 1, 64).unwrap());
    drop(sys::create_exclusive(&other, 1, 64).unwrap());
    match sys::list_own_queues() {
        Ok(names) => {
            assert!(names.contains(&name), "{names:?}");
            assert!(
                !names.contains(&other),
                "not named by queue_name: {names:?}"
            );
        }
        Err(err @ MqError::NotMounted { .. }) => {
            assert!(std::fs::metadata(sys::MQUEUE_DIR).is_err());
            assert!(err.to_string().contains("mount -t mqueue"), "{err}");
            eprintln!("{err}");
        }
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn limits_are_read_from_proc() {
    let Ok(lim) = limits() else {
        eprintln!("skipping: no /proc/sys/fs/mqueue");
        return;
    };
    let read = |file: &str| -> usize {
        std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{file}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(lim.msg_max, read("msg_max"));
    assert_eq!(lim.msgsize_max, read("msgsize_max"));
    assert_eq!(lim.queues_max, read("queues_max"));
    eprintln!("limits: {lim:?}");
}

/// Raw `mq_send`/`mq_receive` throughput, and through the tokio transport.
/// `cargo test -p switchyard --release --test mqueue -- --ignored --nocapture`
#[test]
#[ignore = "measurement"]
fn throughput() {
    let Some(mut queues) = Queues::new("throughput") else {
        return;
    };
    let lim = limits().unwrap();
    const N: usize = 200_000;
    for size in [64usize, 1024, lim.msgsize_max] {
        let name = queues.name();
        let owned = sys::create_exclusive(&name, lim.msg_max, lim.msgsize_max).unwrap();
        let tx = sys::open_send(&name).unwrap();
        let msg = vec![1u8; size];
        let mut buf = vec![0u8; owned.message_size()];
        // One thread: send then receive, the syscall cost of a message.
        let started = Instant::now();
        for _ in 0..N {
            tx.send(&msg, 1).unwrap();
            owned.receive(&mut buf).unwrap();
        }
        let pair = started.elapsed();
        // The same with the "still linked" check the transport adds per send.
        let started = Instant::now();
        for _ in 0..N {
            assert!(tx.is_linked().unwrap());
            tx.send(&msg, 1).unwrap();
            owned.receive(&mut buf).unwrap();
        }
        let checked = started.elapsed();
        eprintln!(
            "raw {size:>5} B, one thread: {:>5.0} ns per send+receive ({:.2} M msg/s); with fstat check {:>5.0} ns",
            pair.as_nanos() as f64 / N as f64,
            N as f64 / pair.as_secs_f64() / 1e6,
            checked.as_nanos() as f64 / N as f64,
        );

        // Two tasks on a two-thread runtime through MqSender/MqReceiver.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let frame = oneway(1, b"", &vec![1u8; size.max(40) - 40]);
        let elapsed = runtime.block_on(async {
            let mut rx = MqReceiver::new(owned).unwrap();
            let sender = MqSender::open(&name).unwrap();
            let started = Instant::now();
            let producer = tokio::spawn(async move {
                for _ in 0..N {
                    sender.send(&frame, 1, None).await.unwrap();
                }
            });
            for _ in 0..N {
                rx.recv_frame().await.unwrap();
            }
            producer.await.unwrap();
            started.elapsed()
        });
        eprintln!(
            "tokio {size:>5} B, sender and receiver tasks: {:.2} M msg/s, {:.0} MB/s",
            N as f64 / elapsed.as_secs_f64() / 1e6,
            (N * size) as f64 / elapsed.as_secs_f64() / 1e6,
        );
    }
}
