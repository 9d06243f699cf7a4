//! The sending half of a socket or pipe link (Unix, TCP, pipes), which any
//! task may also write directly ([`LinkTx::direct`]): a caller's frames go
//! into the kernel from the caller's own thread when nothing is queued
//! before them, instead of waking the connection's writer task (a wake-up
//! on another thread costs tens of µs on a small machine; the write itself,
//! a few).
//!
//! Frames never interleave: the writer task marks the link busy while a
//! frame of its own is partly written, and a direct write that the kernel
//! took only part of leaves the rest here (the *tail*), which the writer
//! task writes before anything else; until then no other direct write is
//! tried.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::net::{tcp, unix};

use super::{DirectWrite, LinkTx, Written};

/// A write half that can be written through a shared reference, without
/// waiting: tokio's socket halves and pipe senders.
pub trait SharedWrite: tokio::io::AsyncWrite + Unpin + Send + Sync + 'static {
    /// Writes what the kernel takes now (`WouldBlock`: nothing).
    fn try_write_now(&self, buf: &[u8]) -> io::Result<usize>;

    /// Waits until the kernel may take more.
    fn writable_now(&self) -> impl Future<Output = io::Result<()>> + Send;
}

macro_rules! shared_write {
    ($($ty:ty),*) => {$(
        impl SharedWrite for $ty {
            fn try_write_now(&self, buf: &[u8]) -> io::Result<usize> {
                self.try_write(buf)
            }

            fn writable_now(&self) -> impl Future<Output = io::Result<()>> + Send {
                self.writable()
            }
        }
    )*};
}

shared_write!(unix::OwnedWriteHalf, tcp::OwnedWriteHalf, pipe::Sender);

/// Who is writing, and what a direct write left unwritten.
#[derive(Debug, Default)]
struct State {
    /// The writer task is in the middle of its frames.
    busy: bool,
    /// The rest of frames a direct write began.
    tail: Vec<u8>,
}

/// The write half and its state, shared with the direct path.
#[derive(Debug)]
struct Shared<W> {
    writer: W,
    state: Mutex<State>,
}

impl<W> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is a flag or a buffer swap: consistent whatever panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<W: SharedWrite> Shared<W> {
    /// Writes all of `bytes`, waiting for room as the kernel asks.
    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.writer.try_write_now(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.writer.writable_now().await?;
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// The sending half of a socket or pipe link.
#[derive(Debug)]
pub struct SocketTx<W> {
    /// `None` once closed.
    shared: Option<Arc<Shared<W>>>,
}

impl<W> SocketTx<W> {
    /// Wraps a write half.
    pub fn new(writer: W) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                writer,
                state: Mutex::new(State::default()),
            })),
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "this side closed the link")
}

impl<W: SharedWrite + std::fmt::Debug> LinkTx for SocketTx<W> {
    /// Writes the tail a direct write left (if any), then `frames`; a send
    /// of no frames writes the tail alone.
    async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        let tail = {
            let mut state = shared.lock();
            state.busy = true;
            std::mem::take(&mut state.tail)
        };
        shared.write_all(&tail).await?;
        shared.write_all(frames).await?;
        // Only a send that wrote everything lets direct writes in again: a
        // failed one broke the link, and one dropped halfway (its task
        // aborted) left a frame torn.
        shared.lock().busy = false;
        Ok(())
    }

    async fn close(&mut self) -> io::Result<()> {
        let Some(shared) = self.shared.take() else {
            return Ok(());
        };
        let tail = std::mem::take(&mut shared.lock().tail);
        shared.write_all(&tail).await?;
        match Arc::try_unwrap(shared) {
            Ok(mut shared) => shared.writer.shutdown().await,
            // A direct write holds it this instant: the half shuts down
            // when that write lets go of it.
            Err(_) => Ok(()),
        }
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        let shared = Arc::downgrade(self.shared.as_ref()?);
        Some(Arc::new(SocketDirect(shared)))
    }
}

/// Writes frames into the socket from any task, when nothing else is
/// being written. It does not keep the socket open: once the sending half
/// is gone (closed, or its writer task dropped), the socket closes at once
/// and direct writes write nothing.
#[derive(Debug)]
struct SocketDirect<W>(Weak<Shared<W>>);

/// Frames shorter than this go through the writer task
/// ([`DirectWrite::min_len`]): a unary call's request is one system call of
/// its own when written directly, where the writer task gathers the
/// requests of many callers into one write; a stream's batch of messages,
/// or a large body, is one write either way, and written directly it
/// spares a wake-up of the writer's thread.
pub const DIRECT_MIN: usize = 1024;

impl<W: SharedWrite + std::fmt::Debug> DirectWrite for SocketDirect<W> {
    fn min_len(&self) -> usize {
        DIRECT_MIN
    }

    fn try_write(&self, frames: &[u8]) -> Written {
        let Some(shared) = self.0.upgrade() else {
            return Written::Nothing;
        };
        let Ok(mut state) = shared.state.try_lock() else {
            return Written::Nothing;
        };
        if state.busy || !state.tail.is_empty() {
            return Written::Nothing;
        }
        match shared.writer.try_write_now(frames) {
            Ok(n) if n == frames.len() => Written::All,
            Ok(0) => Written::Nothing,
            Ok(n) => {
                state.tail.extend_from_slice(&frames[n..]);
                Written::Started
            }
            // Full (`WouldBlock`), or broken: the writer task meets the
            // error with the frames it is given, and says it.
            Err(_) => Written::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Frames written directly and by the writer, with the kernel taking
    /// only part of a direct write, arrive whole and in order.
    #[tokio::test]
    async fn a_direct_write_the_kernel_took_part_of_is_finished_first() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = a.into_split();
        let (mut read, _write) = b.into_split();
        let mut tx = SocketTx::new(write);
        let direct = tx.direct().unwrap();
        assert_eq!(direct.try_write(b"one "), Written::All);
        // More than the socket buffer takes at once: the rest is kept.
        let big = vec![7u8; 8 << 20];
        assert_eq!(direct.try_write(&big), Written::Started);
        // Nothing else goes directly until the writer wrote the rest.
        assert_eq!(direct.try_write(b"x"), Written::Nothing);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            read.read_to_end(&mut got).await.unwrap();
            got
        });
        tx.send(b" two").await.unwrap();
        assert_eq!(direct.try_write(b" three"), Written::All);
        drop(direct);
        tx.close().await.unwrap();
        let got = reader.await.unwrap();
        let mut want = b"one ".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b" two three");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "out of order or torn");
    }

    /// While the writer task is in the middle of its frames, direct writes
    /// are refused (they would tear them); once it is done, they go again.
    #[tokio::test]
    async fn no_direct_write_while_the_writer_is_halfway() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = a.into_split();
        let (mut read, _write) = b.into_split();
        let mut tx = SocketTx::new(write);
        let direct = tx.direct().unwrap();
        let big = vec![9u8; 8 << 20];
        let sent = big.clone();
        let shared = Arc::clone(tx.shared.as_ref().unwrap());
        let writer = tokio::spawn(async move {
            tx.send(&sent).await.unwrap();
            tx
        });
        // It cannot finish before someone reads.
        for _ in 0..100_000 {
            if shared.lock().busy {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(shared.lock().busy, "the writer began");
        drop(shared);
        assert_eq!(direct.try_write(b"x"), Written::Nothing);
        let mut got = vec![0u8; big.len()];
        read.read_exact(&mut got).await.unwrap();
        assert!(got == big);
        let mut tx = writer.await.unwrap();
        assert_eq!(direct.try_write(b"after"), Written::All);
        drop(direct);
        tx.close().await.unwrap();
        let mut rest = Vec::new();
        read.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"after");
    }

    /// The direct handle does not keep the socket open: dropping the
    /// sending half (a writer task aborted) closes it at once, as a peer
    /// link's end must (its child exits on the end of its pipe).
    #[tokio::test]
    async fn dropping_the_sending_half_closes_the_socket_while_a_direct_handle_lives() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = a.into_split();
        let (mut read, _write) = b.into_split();
        let tx = SocketTx::new(write);
        let direct = tx.direct().unwrap();
        assert_eq!(direct.try_write(b"last"), Written::All);
        drop(tx);
        let mut rest = Vec::new();
        read.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"last");
        assert_eq!(direct.try_write(b"more"), Written::Nothing);
    }
}
