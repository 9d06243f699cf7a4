//! Sending a stream's messages: takes credit, then messages from the
//! source, encodes as many as are ready (and the credit allows) into one
//! buffer, and hands it to the connection's writer as one piece. To a peer
//! that reads them, the messages go as batches ([`FLAG_BATCH`] Data
//! frames: one header for many messages, each behind its length, at most
//! [`BATCH_FRAME_BYTES`] of them), else a Data frame each. A message over
//! the link's bulk threshold (shared memory) goes as a bulk region of its
//! own. Every frame spends one credit, a batch too.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{FutureExt, Stream, StreamExt};
use serde::Serialize;

use super::SendGate;
use crate::codec::Codec;
use crate::protocol::frame::{BATCH_LEN_BYTES, HEADER_LEN, start_frame};
use crate::protocol::session::encode::{seal_batch, seal_data};
use crate::protocol::status::Status;
use crate::session::{Outbound, Outgoing};
use crate::transport::bulk::SpillWriter;

/// Bytes gathered before they are handed to the writer.
const BATCH_BYTES: usize = 256 * 1024;
/// The messages of one batch frame, in bytes, at most (a message larger
/// than this still goes, in a batch of its own). A frame spends one
/// credit whatever it holds, so this bounds what a window of batches
/// makes a reader that stops hold: 64 frames, 1 MiB. HTTP/2's frames are
/// 16 KiB by default too.
pub(crate) const BATCH_FRAME_BYTES: usize = 16 * 1024;
/// Credit taken at once (frames per buffer at most).
const CREDIT_TAKEN: u32 = 1024;

/// Where one stream's messages go.
#[derive(Clone, Debug)]
pub(crate) struct StreamSink {
    pub(crate) outbound: Outbound,
    pub(crate) gate: Arc<SendGate>,
    pub(crate) call_id: u64,
    /// The callee sends (server streaming), else the caller.
    pub(crate) from_callee: bool,
    /// The largest message body the peer takes.
    pub(crate) limit: u32,
    /// Bodies above this go as bulk regions, on links that have them.
    pub(crate) spill_to: Option<crate::transport::bulk::SpillTo>,
    /// The method, for messages.
    pub(crate) what: &'static str,
    /// Header flags of every message ([`MethodDescriptor::frame_flags`](crate::MethodDescriptor::frame_flags)).
    pub(crate) flags: u16,
    /// The peer reads batches of messages ([`FLAG_BATCH`]).
    pub(crate) batches: bool,
}

/// The buffer a pump encodes into, and the batch frame open at its end.
#[derive(Debug, Default)]
struct Framed {
    buf: Vec<u8>,
    /// Where the open batch frame starts, and its messages so far.
    open: Option<(usize, u32)>,
    /// How long the last buffer handed over was: the next starts that big.
    last_len: usize,
}

impl Framed {
    /// Seals the open batch frame, if any.
    fn close(&mut self, sink: &StreamSink, sent: &mut Sent) {
        if let Some((start, count)) = self.open.take() {
            seal_batch(
                &mut self.buf[start..],
                sink.call_id,
                sink.from_callee,
                sink.flags,
                count,
            );
            sent.frames += 1;
        }
    }

    /// Seals what is open and takes the buffer.
    fn take(&mut self, sink: &StreamSink, sent: &mut Sent) -> Vec<u8> {
        self.close(sink, sent);
        self.last_len = self.buf.len();
        std::mem::take(&mut self.buf)
    }

    /// Room for a buffer as big as the last one (a stream fills its
    /// buffers alike: no growing and copying each time). The last one is
    /// at most [`BATCH_BYTES`] plus one message, which the peer's frame
    /// limit bounds.
    fn reserve(&mut self) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.last_len);
        }
    }
}

/// What a pump sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Messages.
    pub(crate) messages: u64,
    /// Bytes, headers included.
    pub(crate) bytes: u64,
    /// Data frames sealed: the credit spent.
    pub(crate) frames: u64,
}

/// Sends every message of `items` on `sink`, as the peer grants credit.
/// Ends with the stream (`Ok`), or with the status an item carried, a
/// message failed to encode with, or the call ended with (the gate
/// closed).
pub(crate) async fn pump<C: Codec, T: Serialize>(
    sink: &StreamSink,
    items: &mut Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
    sent: &mut Sent,
) -> Result<(), Status> {
    let mut framed = Framed::default();
    loop {
        let mut credit = poll_fn(|cx| sink.gate.poll_take(cx, CREDIT_TAKEN)).await?;
        let frames_before = sent.frames;
        // Frames begun this round: sealed, and the batch still open.
        let used = |framed: &Framed, sent: &Sent| {
            sent.frames - frames_before + u64::from(framed.open.is_some())
        };
        let mut ended = false;
        let mut failed = None;
        // The first message is waited for; more only while they are ready.
        let mut next = Some(items.next().await);
        while let Some(item) = next.take() {
            match item {
                None => ended = true,
                Some(Err(status)) => failed = Some(status),
                Some(Ok(item)) => {
                    framed.reserve();
                    match encode::<C, T>(sink, item, &mut framed, sent) {
                        Ok(None) => {}
                        Ok(Some(bulk)) => {
                            if let Err(status) = send_bulk(sink, bulk).await {
                                failed = Some(status);
                            }
                        }
                        Err(status) => failed = Some(status),
                    }
                }
            }
            if ended || failed.is_some() || framed.buf.len() >= BATCH_BYTES {
                break;
            }
            // A message begins at most one frame: the next one needs a
            // credit in hand, taken now if there is more, else the round
            // ends (and waits for a grant).
            if used(&framed, sent) >= u64::from(credit) {
                match sink.gate.try_take(CREDIT_TAKEN) {
                    0 => break,
                    more => credit = credit.saturating_add(more),
                }
            }
            next = items.next().now_or_never();
        }
        let batch = framed.take(sink, sent);
        let spent = u32::try_from(sent.frames - frames_before).unwrap_or(credit);
        sink.gate.give_back(credit.saturating_sub(spent));
        if !batch.is_empty() {
            send(sink, Outgoing::from(batch)).await?;
        }
        if let Some(status) = failed {
            return Err(status);
        }
        if ended {
            return Ok(());
        }
    }
}

/// A message that went into a bulk region: to be sent at once, after what
/// the buffer held before it.
struct BulkSend {
    /// The buffer's frames before the message, if any.
    before: Option<Vec<u8>>,
    /// The message's own frame.
    frame: Outgoing,
}

/// Encodes one message at the end of `framed`: into its open batch frame
/// (opened if need be) where the peer reads batches, else as a Data frame
/// of its own. A message that went into a bulk region comes back, with
/// what `framed` held before it, for the caller to send at once. (Not an
/// `async fn`: the pump calls this per message, and a future per message
/// costs more than a small message does.)
fn encode<C: Codec, T: Serialize>(
    sink: &StreamSink,
    item: T,
    framed: &mut Framed,
    sent: &mut Sent,
) -> Result<Option<BulkSend>, Status> {
    let limit = sink.limit as usize;
    let start = if sink.batches {
        let frame = match framed.open {
            Some((frame, _)) => frame,
            None => {
                let frame = start_frame(&mut framed.buf);
                framed.open = Some((frame, 0));
                sent.bytes += HEADER_LEN as u64;
                frame
            }
        };
        framed.buf.extend_from_slice(&[0; BATCH_LEN_BYTES]);
        frame
    } else {
        start_frame(&mut framed.buf)
    };
    // Where this message's own bytes (its length, in a batch) begin.
    let own = if sink.batches {
        framed.buf.len() - BATCH_LEN_BYTES
    } else {
        start
    };
    let body = framed.buf.len();
    let mut writer =
        SpillWriter::new(&mut framed.buf, body, sink.spill_to.as_ref()).with_limit(Some(limit));
    let encoded = C::encode_to(&item, &mut writer);
    drop(item);
    let over = writer.over_limit();
    let bulk = writer.finish();
    let failed = if let Some(len) = over {
        Some(Status::resource_exhausted(format!(
            "a message of {} is {len} bytes or more, over the peer's limit of {limit} bytes; \
             send smaller messages (split them), or raise the peer's max_frame",
            sink.what
        )))
    } else if let Err(err) = encoded {
        Some(Status::internal(format!(
            "a message of {} could not be encoded: {err}",
            sink.what
        )))
    } else {
        None
    };
    if let Some(status) = failed {
        framed.buf.truncate(own);
        drop_empty_batch(framed, sent);
        return Err(status);
    }
    let bulk = match bulk {
        Ok(bulk) => bulk,
        Err(err) => {
            framed.buf.truncate(own);
            drop_empty_batch(framed, sent);
            return Err(Status::resource_exhausted(format!(
                "a message of {} could not be written to shared memory: {err}",
                sink.what
            )));
        }
    };
    sent.messages += 1;
    match bulk {
        None if sink.batches => {
            let len = framed.buf.len() - body;
            // The limit was checked while the message was written.
            let len32 = u32::try_from(len).unwrap_or(u32::MAX);
            framed.buf[own..body].copy_from_slice(&len32.to_le_bytes());
            sent.bytes += (BATCH_LEN_BYTES + len) as u64;
            // In a batch, `start` is where its frame begins.
            let (frame, count) = framed.open.unwrap_or((start, 0));
            // A batch's first message may fill it up to the peer's limit;
            // more join while it stays within BATCH_FRAME_BYTES.
            let within = if count == 0 {
                limit
            } else {
                limit.min(BATCH_FRAME_BYTES)
            };
            if framed.buf.len() - frame - HEADER_LEN <= within {
                framed.open = Some((frame, count + 1));
                return Ok(None);
            }
            // Past the batch's bound with this message: the batch ends
            // before it, and it begins the next (or, alone over the peer's
            // limit by its length's bytes, goes as a Data frame of its own).
            let message = framed.buf.split_off(own);
            if count > 0 {
                framed.close(sink, sent);
            } else {
                framed.buf.truncate(frame);
                framed.open = None;
                sent.bytes -= HEADER_LEN as u64;
            }
            if BATCH_LEN_BYTES + len <= limit {
                let next = start_frame(&mut framed.buf);
                framed.buf.extend_from_slice(&message);
                framed.open = Some((next, 1));
                sent.bytes += HEADER_LEN as u64;
            } else {
                let alone = start_frame(&mut framed.buf);
                framed.buf.extend_from_slice(&message[BATCH_LEN_BYTES..]);
                sent.bytes += (HEADER_LEN - BATCH_LEN_BYTES) as u64;
                let _ = seal_data(
                    &mut framed.buf[alone..],
                    sink.call_id,
                    sink.from_callee,
                    sink.flags,
                    None,
                    u32::MAX,
                );
                sent.frames += 1;
            }
            Ok(None)
        }
        None => {
            let frame = &mut framed.buf[start..];
            // The limit was checked while the message was written.
            let _ = seal_data(
                frame,
                sink.call_id,
                sink.from_callee,
                sink.flags,
                None,
                u32::MAX,
            );
            sent.bytes += frame.len() as u64;
            sent.frames += 1;
            Ok(None)
        }
        Some(body) => {
            // Its own frame: no length in front, and the batch before it
            // ends.
            framed.buf.truncate(own);
            drop_empty_batch(framed, sent);
            framed.close(sink, sent);
            let mut header = Vec::with_capacity(HEADER_LEN);
            start_frame(&mut header);
            let _ = seal_data(
                &mut header,
                sink.call_id,
                sink.from_callee,
                sink.flags,
                Some(body.len()),
                u32::MAX,
            );
            sent.bytes += (HEADER_LEN + body.len()) as u64;
            sent.frames += 1;
            let before = (!framed.buf.is_empty()).then(|| framed.take(sink, sent));
            Ok(Some(BulkSend {
                before,
                frame: Outgoing {
                    bytes: header,
                    written: None,
                    bulk: Some(body),
                    budget: None,
                },
            }))
        }
    }
}

/// Drops the open batch frame if it holds no message (its header only),
/// and uncounts its header.
fn drop_empty_batch(framed: &mut Framed, sent: &mut Sent) {
    if let Some((frame, 0)) = framed.open {
        framed.buf.truncate(frame);
        framed.open = None;
        sent.bytes -= HEADER_LEN as u64;
    }
}

/// Sends a message that went into a bulk region, after what came before it.
async fn send_bulk(sink: &StreamSink, bulk: BulkSend) -> Result<(), Status> {
    if let Some(before) = bulk.before {
        send(sink, Outgoing::from(before)).await?;
    }
    send(sink, bulk.frame).await
}

async fn send(sink: &StreamSink, outgoing: Outgoing) -> Result<(), Status> {
    sink.outbound.send(outgoing).await.map_err(|_| {
        Status::unavailable(format!(
            "{}: the connection's writer stopped while the stream was sent",
            sink.what
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::BytesMut;

    use super::*;
    use crate::codec::Bincode;
    use crate::protocol::frame::{BatchMessages, Decoded, FLAG_BATCH, FrameDecoder, Kind};
    use crate::transport::LinkTx;

    /// A sending half that keeps what it is given.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl LinkTx for Kept {
        async fn send(&mut self, frames: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().extend_from_slice(frames);
            Ok(())
        }

        async fn close(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The sink of call 7's server stream, to a peer whose frame limit is
    /// `limit`.
    fn test_sink(outbound: Outbound, gate: Arc<SendGate>, limit: u32, batches: bool) -> StreamSink {
        StreamSink {
            outbound,
            gate,
            call_id: 7,
            from_callee: true,
            limit,
            spill_to: None,
            what: "Test.stream",
            flags: 0,
            batches,
        }
    }

    /// Pumps messages of `sizes` bytes to a peer whose frame limit is
    /// `limit`: what was sent, and the wire.
    async fn pumped(sizes: &[usize], batches: bool, limit: u32) -> (Sent, Vec<u8>) {
        let kept = Kept::default();
        let (outbound, writer) = Outbound::new(kept.clone());
        let writer = tokio::spawn(writer);
        let sink = test_sink(
            outbound,
            Arc::new(SendGate::unwatched(u32::MAX)),
            limit,
            batches,
        );
        let messages: Vec<Result<Vec<u8>, Status>> =
            sizes.iter().map(|&n| Ok(vec![n as u8; n])).collect();
        let mut items: Pin<Box<dyn Stream<Item = Result<Vec<u8>, Status>> + Send>> =
            Box::pin(futures_util::stream::iter(messages));
        let mut sent = Sent::default();
        pump::<Bincode, Vec<u8>>(&sink, &mut items, &mut sent)
            .await
            .unwrap();
        drop(sink);
        writer.await.unwrap().unwrap();
        let wire = kept.0.lock().unwrap().clone();
        (sent, wire)
    }

    /// The messages on `wire` and how many frames and batches carried them;
    /// every frame within `limit`.
    fn read(wire: &[u8], limit: u32) -> (Vec<Vec<u8>>, usize, usize) {
        let mut decoder = FrameDecoder::new(limit);
        let mut buf = BytesMut::from(wire);
        let (mut messages, mut frames, mut batches) = (Vec::new(), 0, 0);
        while let Some(decoded) = decoder.decode(&mut buf).unwrap() {
            let Decoded::Frame(frame) = decoded else {
                panic!("a frame over the limit");
            };
            assert_eq!(frame.header.kind, Kind::Data);
            assert!(frame.header.body_len() <= u64::from(limit));
            frames += 1;
            if frame.header.flags & FLAG_BATCH != 0 {
                batches += 1;
                BatchMessages::check(&frame.payload, frame.header.credit).unwrap();
                for range in BatchMessages::new(&frame.payload, 0) {
                    messages.push(Bincode::decode(&frame.payload[range]).unwrap());
                }
            } else {
                messages.push(Bincode::decode(&frame.payload).unwrap());
            }
        }
        assert!(buf.is_empty());
        (messages, frames, batches)
    }

    #[tokio::test]
    async fn a_batch_spends_one_credit_and_holds_at_most_batch_frame_bytes() {
        let kept = Kept::default();
        let (outbound, writer) = Outbound::new(kept.clone());
        let writer = tokio::spawn(writer);
        let gate = Arc::new(SendGate::unwatched(2));
        let sink = test_sink(outbound, Arc::clone(&gate), 1 << 20, true);
        // More small messages than two batches hold.
        let total = 1_000;
        let messages: Vec<Result<Vec<u8>, Status>> = (0..total).map(|_| Ok(vec![7; 60])).collect();
        let pumping = tokio::spawn(async move {
            let mut items: Pin<Box<dyn Stream<Item = Result<Vec<u8>, Status>> + Send>> =
                Box::pin(futures_util::stream::iter(messages));
            let mut sent = Sent::default();
            pump::<Bincode, Vec<u8>>(&sink, &mut items, &mut sent)
                .await
                .map(|()| sent)
        });
        // On this current-thread runtime the pump and the writer run until
        // they wait: the pump for credit.
        let settle = || async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        let wire = kept.0.lock().unwrap().clone();
        let (first, frames, batches) = read(&wire, 1 << 20);
        assert_eq!((frames, batches), (2, 2), "two credits, two frames");
        assert!(first.len() > 100 && first.len() < total, "{}", first.len());
        assert!(!pumping.is_finished(), "the pump waits for credit");
        assert!(
            wire.len() <= 2 * (HEADER_LEN + BATCH_FRAME_BYTES),
            "{} bytes",
            wire.len()
        );
        // Credit for the rest: each batch spends one.
        gate.grant(100);
        let sent = pumping.await.unwrap().unwrap();
        writer.await.unwrap().unwrap();
        let wire = kept.0.lock().unwrap().clone();
        let (all, frames, batches) = read(&wire, 1 << 20);
        assert_eq!(all, vec![vec![7u8; 60]; total]);
        assert_eq!(frames, batches);
        assert_eq!(sent.frames, frames as u64);
        assert_eq!(sent.bytes, wire.len() as u64);
        assert_eq!(
            gate.try_take(u32::MAX),
            102 - frames as u32,
            "the rest given back"
        );
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        while let Some(Decoded::Frame(frame)) = decoder.decode(&mut buf).unwrap() {
            assert!(
                frame.payload.len() <= BATCH_FRAME_BYTES,
                "{}",
                frame.payload.len()
            );
        }
    }

    #[tokio::test]
    async fn batches_stay_within_the_peers_limit_and_every_byte_sent_is_counted() {
        // Under a limit of 100: 97 bytes encode to 98, alone within it but
        // over it with a length in front (a Data frame of its own); 95 fit
        // a batch alone; the rest share batches.
        let sizes = [0, 10, 50, 95, 97, 30, 30, 30, 1, 2, 3];
        for batches in [true, false] {
            let (sent, wire) = pumped(&sizes, batches, 100).await;
            let (messages, frames, batch_frames) = read(&wire, 100);
            let want: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![n as u8; n]).collect();
            assert_eq!(messages, want, "batches: {batches}");
            assert_eq!(sent.messages, sizes.len() as u64);
            assert_eq!(sent.bytes, wire.len() as u64, "batches: {batches}");
            assert_eq!(sent.frames, frames as u64, "batches: {batches}");
            if batches {
                assert!(frames < sizes.len(), "{frames} frames");
                assert_eq!(frames, batch_frames + 1, "97 bytes went alone");
            } else {
                assert_eq!((frames, batch_frames), (sizes.len(), 0));
            }
        }
    }
}
