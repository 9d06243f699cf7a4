//! What client and server connections share: the hello exchange, status
//! frames, and the task that writes queued frames to a link in batches.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::protocol::compress::{Compression, CompressionChoice, FrameCompressor, LinkFacts};
use crate::protocol::frame::Decoded;
use crate::protocol::hello::{Hello, Role, ServiceInfo};
pub(crate) use crate::protocol::session::LimitKnobs;
pub(crate) use crate::protocol::session::encode::{hello_frame, status_frame};
use crate::protocol::session::handshake::check_hello;
use crate::protocol::status::Status;
use crate::transport::bulk::{BulkBody, BulkCounters, BulkTx, SpillTo};
use crate::transport::{DirectWrite, LinkRx, LinkTx, Transport, Written};

/// Frames queued for the writer task before senders wait.
pub(crate) const OUTGOING_QUEUE: usize = 4096;
/// Bytes queued for the writer task, per connection, before senders wait:
/// a peer that stops reading holds at most this much of our memory in
/// replies (the server's driver then waits, so it reads no more of that
/// connection's requests: backpressure instead of buffering).
pub(crate) const OUTGOING_BYTES: usize = 16 * 1024 * 1024;
/// How many bytes the writer gathers into one write at most.
const BATCH_BYTES: usize = 256 * 1024;

/// This process's hello.
pub(crate) fn local_hello(
    role: Role,
    services: Vec<ServiceInfo>,
    max_frame: u32,
    max_in_flight: u32,
) -> Hello {
    Hello {
        role,
        host: crate::sys::host_identity(),
        pid: crate::sys::pid(),
        uid: crate::sys::uid(),
        process_name: crate::sys::process_name(),
        max_frame,
        max_in_flight,
        services,
        queues: Vec::new(),
        endpoints: Vec::new(),
        codecs: crate::protocol::compress::readable_codecs(),
        features: crate::protocol::hello::FEATURES,
    }
}

/// Whether a connection over `transport` between the processes that sent
/// `own` and `peer` compresses what this side sends, with `setting`.
pub(crate) fn compression_choice(
    setting: &Compression,
    transport: Transport,
    own: &Hello,
    peer: &Hello,
) -> CompressionChoice {
    crate::protocol::compress::decide(
        setting,
        &LinkFacts {
            transport: transport.as_str(),
            networked: matches!(transport, Transport::Tcp | Transport::Quic),
            locality: own.host.locality(&peer.host),
            same_net_ns: own.host.net_ns != 0 && own.host.net_ns == peer.host.net_ns,
            peer_codecs: peer.codecs,
        },
    )
}

/// A frame queued for the writer task.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// One or more encoded frames.
    pub(crate) bytes: Vec<u8>,
    /// Told once the transport has taken the bytes (one-way calls wait on
    /// this so that "sent" means sent, not queued).
    pub(crate) written: Option<oneshot::Sender<()>>,
    /// The body of a single frame whose header is `bytes`, when it was
    /// encoded into a bulk region (see [`Outbound::spill_to`]).
    pub(crate) bulk: Option<BulkBody>,
    /// Its share of the connection's [`OUTGOING_BYTES`], given back when
    /// the writer has written it (set by [`Outbound`]).
    pub(crate) budget: Option<OwnedSemaphorePermit>,
}

impl Outgoing {
    /// What it counts against [`OUTGOING_BYTES`]: its bytes, bulk body
    /// included, and at most the whole budget (one frame always fits).
    fn cost(&self) -> u32 {
        let len = self.bytes.len() + self.bulk.as_ref().map_or(0, BulkBody::len);
        u32::try_from(len.clamp(1, OUTGOING_BYTES)).unwrap_or(u32::MAX)
    }
}

impl From<Vec<u8>> for Outgoing {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            written: None,
            bulk: None,
            budget: None,
        }
    }
}

/// The side of a link that makes this process's calls, where another
/// driver reads the link (a peer link: the driver serves the other side's
/// calls and hands this side's responses over).
pub(crate) trait CallerSide: Send + Sync + std::fmt::Debug {
    /// Takes a frame for this side's calls: a response or a GoAway.
    fn handle(&self, decoded: Decoded);

    /// Takes frames for this side's calls, in order.
    fn handle_all(&self, frames: Vec<Decoded>) {
        for decoded in frames {
            self.handle(decoded);
        }
    }

    /// The link ended, cleanly (`Ok`) or not, as a caller reading it found:
    /// this side's calls fail.
    fn link_ended(&self, end: Result<bool, crate::transport::LinkError>);
}

/// Reads the peer's hello, which must be the first frame, within `timeout`.
/// Frames that arrived right behind it are left in `rest`.
pub(crate) async fn read_hello<R: LinkRx>(
    rx: &mut R,
    expect: Role,
    timeout: Duration,
    rest: &mut Vec<Decoded>,
) -> Result<Hello, Status> {
    let received = tokio::time::timeout(timeout, rx.recv(rest)).await;
    let received = received.map_err(|_| {
        Status::unavailable(format!(
            "the peer sent no hello within {timeout:?}; is it a switchyard endpoint?"
        ))
    })?;
    match received {
        Ok(true) => {}
        Ok(false) => {
            return Err(Status::unavailable(
                "the peer closed the connection during the handshake",
            ));
        }
        // A TLS refusal that arrives after the handshake (TLS 1.3: the
        // server checks the client's certificate last) is no outage.
        Err(crate::transport::LinkError::Io(err))
            if err.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            return Err(Status::unauthenticated(format!("handshake failed: {err}")));
        }
        Err(crate::transport::LinkError::Io(err)) => {
            return Err(Status::unavailable(format!("handshake failed: {err}")));
        }
        Err(err) => {
            return Err(Status::invalid_argument(format!(
                "handshake failed: {err}; is the peer a switchyard endpoint of a compatible version?"
            )));
        }
    }
    check_hello(rest.remove(0), expect)
}

/// Where a connection's frames go: straight into the link when it can
/// take whole frames without waiting ([`LinkTx::direct`]) and nothing is
/// queued ahead of them, else the queue of the link's writer task. Frames
/// keep their order either way. The link's capabilities are asked once,
/// here; the bulk path's threshold and counters are kept.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    queue: mpsc::Sender<Outgoing>,
    direct: Option<Arc<dyn DirectWrite>>,
    /// Frames handed to the writer task and not yet written.
    queued: Arc<AtomicUsize>,
    /// Bytes that may still be queued ([`OUTGOING_BYTES`] in all).
    budget: Arc<Semaphore>,
    /// The link's bulk path ([`LinkTx::bulk`]), if it has one: bodies
    /// above the threshold are encoded into bulk regions; the counters say
    /// what it moved.
    bulk: Option<(SpillTo, Arc<BulkCounters>)>,
    /// Set to why the writer task stopped, if it failed.
    failure: watch::Receiver<Option<WriterFailure>>,
    /// Compresses the payloads that pay, once the connection decided to
    /// ([`compress_with`](Self::compress_with)); shared by every clone.
    compressor: Arc<OnceLock<FrameCompressor>>,
    /// What the peer's hello said it reads (a bit set of
    /// [`FEATURES`](crate::protocol::hello::FEATURES)); shared by every
    /// clone, set once the hellos are exchanged.
    peer_features: Arc<AtomicU8>,
}

/// Why a connection's writer task stopped.
#[derive(Clone, Debug)]
pub(crate) struct WriterFailure {
    /// The peer went away (broken pipe, reset): an ordinary disconnect
    /// seen from the writing side first.
    pub(crate) peer_left: bool,
    /// The error, as text.
    pub(crate) reason: String,
}

impl Outbound {
    /// An outbound path to `tx`, and the writer task to spawn for it
    /// (it half-closes the link once every `Outbound` is dropped).
    pub(crate) fn new<T: LinkTx>(
        mut tx: T,
    ) -> (
        Self,
        impl Future<Output = std::io::Result<()>> + Send + 'static,
    ) {
        let (queue, receiver) = mpsc::channel(OUTGOING_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let (failed, failure) = watch::channel(None);
        let outbound = Self {
            queue,
            direct: tx.direct(),
            queued: Arc::clone(&queued),
            budget: Arc::new(Semaphore::new(OUTGOING_BYTES)),
            bulk: tx.bulk().map(|bulk| {
                let to = SpillTo {
                    threshold: bulk.threshold(),
                    #[cfg(target_os = "linux")]
                    pool: bulk.pool(),
                };
                (to, bulk.counters())
            }),
            failure,
            compressor: Arc::default(),
            peer_features: Arc::default(),
        };
        let writer = async move {
            let written = write_loop(tx, receiver, queued).await;
            if let Err(err) = &written {
                // Frames handed over after this are not written: whoever
                // reads the link must end the connection rather than let
                // its calls wait for answers that cannot come.
                failed.send_replace(Some(WriterFailure {
                    peer_left: matches!(
                        err.kind(),
                        std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::NotConnected
                    ),
                    reason: err.to_string(),
                }));
            }
            written
        };
        (outbound, writer)
    }

    /// Resolves with the error that stopped the writer task, if it fails;
    /// never resolves while it works or after it ended cleanly.
    pub(crate) fn writer_failed(&self) -> impl Future<Output = WriterFailure> + Send + 'static {
        let mut failure = self.failure.clone();
        async move {
            let reason = match failure.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone(),
                Err(_) => None,
            };
            match reason {
                Some(reason) => reason,
                None => std::future::pending().await,
            }
        }
    }

    /// An outbound path that takes nothing (its writer is gone).
    pub(crate) fn closed() -> Self {
        let (queue, _) = mpsc::channel(1);
        Self {
            queue,
            direct: None,
            queued: Arc::new(AtomicUsize::new(0)),
            budget: Arc::new(Semaphore::new(OUTGOING_BYTES)),
            bulk: None,
            failure: watch::channel(None).1,
            compressor: Arc::default(),
            peer_features: Arc::default(),
        }
    }

    /// The peer's hello listed `features` (every clone learns it).
    pub(crate) fn peer_reads(&self, features: u8) {
        self.peer_features.store(features, Ordering::Relaxed);
    }

    /// Whether the peer reads several stream messages in one Data frame
    /// ([`FLAG_BATCH`](crate::protocol::frame::FLAG_BATCH)).
    pub(crate) fn peer_reads_batches(&self) -> bool {
        self.peer_features.load(Ordering::Relaxed) & crate::protocol::hello::FEATURE_BATCHES != 0
    }

    /// From now on, compresses frames with `compressor` (every clone; the
    /// first one set stays).
    pub(crate) fn compress_with(&self, compressor: FrameCompressor) {
        let _ = self.compressor.set(compressor);
    }

    /// `outgoing` with the payloads that pay compressed, where the
    /// connection compresses (never a frame whose body is a bulk region).
    fn compressed(&self, mut outgoing: Outgoing) -> Outgoing {
        if let Some(compressor) = self.compressor.get()
            && outgoing.bulk.is_none()
            && let Some(bytes) = compressor.compress(&outgoing.bytes)
        {
            outgoing.bytes = bytes;
        }
        outgoing
    }

    /// Frame bodies above this size should be encoded into a bulk region
    /// ([`SpillWriter`](crate::transport::bulk::SpillWriter)); `None`: the
    /// link has no bulk path.
    pub(crate) fn spill_to(&self) -> Option<SpillTo> {
        self.bulk.as_ref().map(|(to, _)| to.clone())
    }

    /// What the link moved as bulk regions, where it has them.
    pub(crate) fn bulk_counters(&self) -> Option<Arc<BulkCounters>> {
        self.bulk.as_ref().map(|(_, counters)| Arc::clone(counters))
    }

    /// Writes directly if possible (a frame shorter than `min_len` never);
    /// gives the frame back otherwise.
    fn try_direct(&self, mut outgoing: Outgoing, min_len: Option<usize>) -> Result<(), Outgoing> {
        // A bulk body the link can send without its writer (a shared-memory
        // pool's, whose segment the peer has).
        if let (Some(direct), Some(body)) = (&self.direct, outgoing.bulk.take()) {
            if self.queued.load(Ordering::Acquire) != 0 {
                outgoing.bulk = Some(body);
                return Err(outgoing);
            }
            return match direct.try_write_bulk(&outgoing.bytes, body) {
                Ok(()) => {
                    if let Some(written) = outgoing.written {
                        let _ = written.send(());
                    }
                    Ok(())
                }
                Err(body) => {
                    outgoing.bulk = Some(body);
                    Err(outgoing)
                }
            };
        }
        let Some(direct) = &self.direct else {
            return Err(outgoing);
        };
        if outgoing.bulk.is_some()
            || outgoing.bytes.len() < min_len.unwrap_or_else(|| direct.min_len())
            || self.queued.load(Ordering::Acquire) != 0
        {
            return Err(outgoing);
        }
        match direct.try_write(&outgoing.bytes) {
            Written::Nothing => return Err(outgoing),
            Written::All => {}
            // The link keeps the rest for the writer task: wake it with
            // nothing of its own to write (a full queue has frames the
            // writer is about to write, the rest first).
            Written::Started => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                if self.queue.try_send(Outgoing::from(Vec::new())).is_err() {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        if let Some(written) = outgoing.written {
            let _ = written.send(());
        }
        Ok(())
    }

    /// Sends a frame, waiting for room in the writer's queue (frames and
    /// bytes) if need be.
    pub(crate) async fn send(&self, outgoing: Outgoing) -> Result<(), SendError<Outgoing>> {
        self.send_with(outgoing, None).await
    }

    /// [`send`](Self::send) of a control frame (a grant, a Pong, a status):
    /// written directly whatever its size when nothing is queued, so that
    /// no wake-up of the writer task delays it.
    pub(crate) async fn send_control(&self, outgoing: Outgoing) -> Result<(), SendError<Outgoing>> {
        self.send_with(outgoing, Some(0)).await
    }

    async fn send_with(
        &self,
        outgoing: Outgoing,
        min_len: Option<usize>,
    ) -> Result<(), SendError<Outgoing>> {
        let outgoing = self.compressed(outgoing);
        let Err(mut outgoing) = self.try_direct(outgoing, min_len) else {
            return Ok(());
        };
        // Counted as queued first, so no direct write overtakes it while
        // it waits for room; uncounted again if it never reaches the queue
        // (this future dropped while waiting, say by a caller's deadline).
        let mut counted = QueuedCount::new(&self.queued);
        match Arc::clone(&self.budget)
            .acquire_many_owned(outgoing.cost())
            .await
        {
            Ok(permit) => outgoing.budget = Some(permit),
            Err(_) => return Err(SendError(outgoing)),
        }
        self.queue.send(outgoing).await?;
        // The writer task uncounts it once written.
        counted.handed_over();
        Ok(())
    }

    /// Sends a frame if that needs no wait.
    pub(crate) fn try_send(&self, outgoing: Outgoing) -> Result<(), TrySendError<Outgoing>> {
        self.try_send_with(outgoing, None)
    }

    /// [`try_send`](Self::try_send) of a control frame, written directly
    /// whatever its size when nothing is queued (see
    /// [`send_control`](Self::send_control)).
    pub(crate) fn try_send_control(
        &self,
        outgoing: Outgoing,
    ) -> Result<(), TrySendError<Outgoing>> {
        self.try_send_with(outgoing, Some(0))
    }

    fn try_send_with(
        &self,
        outgoing: Outgoing,
        min_len: Option<usize>,
    ) -> Result<(), TrySendError<Outgoing>> {
        let outgoing = self.compressed(outgoing);
        let Err(mut outgoing) = self.try_direct(outgoing, min_len) else {
            return Ok(());
        };
        match Arc::clone(&self.budget).try_acquire_many_owned(outgoing.cost()) {
            Ok(permit) => outgoing.budget = Some(permit),
            Err(_) => return Err(TrySendError::Full(outgoing)),
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.queue.try_send(outgoing).inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        })
    }
}

/// One frame counted in [`Outbound`]'s `queued` until it is handed to the
/// writer task (which uncounts it once written); uncounted on drop if it
/// never was.
struct QueuedCount<'a> {
    queued: &'a AtomicUsize,
    handed_over: bool,
}

impl<'a> QueuedCount<'a> {
    fn new(queued: &'a AtomicUsize) -> Self {
        queued.fetch_add(1, Ordering::AcqRel);
        Self {
            queued,
            handed_over: false,
        }
    }

    fn handed_over(&mut self) {
        self.handed_over = true;
    }
}

impl Drop for QueuedCount<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Writes queued frames to `tx` in batches until every sender is dropped,
/// then half-closes the link. Returns the error that stopped it, if any.
async fn write_loop<T: LinkTx>(
    mut tx: T,
    mut queue: mpsc::Receiver<Outgoing>,
    queued: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut batch = Vec::new();
    let mut notify = Vec::new();
    let mut held = None;
    while let Some(first) = match held.take() {
        Some(next) => Some(next),
        None => queue.recv().await,
    } {
        let mut frames = 1;
        notify.extend(first.written);
        if let Some(body) = first.bulk {
            // Only a link with a bulk path has a threshold to spill bodies at.
            let Some(bulk) = tx.bulk() else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "this link has no bulk path; encode the body into the frame",
                ));
            };
            bulk.send_bulk(&first.bytes, body).await?;
        } else {
            match queue.try_recv() {
                Err(_) => tx.send(&first.bytes).await?,
                Ok(second) if second.bulk.is_some() => {
                    // A bulk frame goes on its own, after this one.
                    tx.send(&first.bytes).await?;
                    held = Some(second);
                }
                Ok(second) => {
                    batch.clear();
                    batch.extend_from_slice(&first.bytes);
                    batch.extend_from_slice(&second.bytes);
                    notify.extend(second.written);
                    frames += 1;
                    while batch.len() < BATCH_BYTES {
                        match queue.try_recv() {
                            Ok(more) if more.bulk.is_some() => {
                                held = Some(more);
                                break;
                            }
                            Ok(more) => {
                                batch.extend_from_slice(&more.bytes);
                                notify.extend(more.written);
                                frames += 1;
                            }
                            Err(_) => break,
                        }
                    }
                    tx.send(&batch).await?;
                    if batch.capacity() > 4 * BATCH_BYTES {
                        batch = Vec::new();
                    }
                }
            }
        }
        queued.fetch_sub(frames, Ordering::AcqRel);
        for written in notify.drain(..) {
            let _ = written.send(());
        }
    }
    tx.close().await
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::sync::mpsc::error::TrySendError;

    use super::{OUTGOING_BYTES, Outbound};
    use crate::transport::LinkTx;

    /// A link whose peer never reads: every write waits forever.
    struct Deaf;

    impl LinkTx for Deaf {
        async fn send(&mut self, _frames: &[u8]) -> io::Result<()> {
            std::future::pending().await
        }

        async fn close(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_holds_at_most_the_byte_budget() {
        let (outbound, writer) = Outbound::new(Deaf);
        let writer = tokio::spawn(writer);
        // A frame as large as the budget: the writer holds it, stuck.
        outbound
            .send(vec![0; OUTGOING_BYTES + 1].into())
            .await
            .unwrap();
        // The next one waits for room; a caller that gives up (its deadline)
        // leaves nothing counted, so direct writes are not held off forever.
        let waited =
            tokio::time::timeout(Duration::from_millis(50), outbound.send(vec![1; 10].into()));
        assert!(waited.await.is_err(), "a send past the budget waits");
        assert_eq!(
            outbound.queued.load(Ordering::Acquire),
            1,
            "only the stuck frame"
        );
        assert!(matches!(
            outbound.try_send(vec![2; 10].into()),
            Err(TrySendError::Full(_))
        ));
        writer.abort();
    }
}
