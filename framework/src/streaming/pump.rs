//! Sending a stream's messages: takes credit, then messages from the
//! source, encodes as many as are ready (and the credit allows) into one
//! buffer, and hands it to the connection's writer as one piece. A message
//! over the link's bulk threshold (shared memory) goes as a bulk region of
//! its own.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{FutureExt, Stream, StreamExt};
use serde::Serialize;

use super::SendGate;
use crate::codec::Codec;
use crate::protocol::frame::{HEADER_LEN, start_frame};
use crate::protocol::session::encode::seal_data;
use crate::protocol::status::Status;
use crate::session::{Outbound, Outgoing};
use crate::transport::bulk::SpillWriter;

/// Bytes gathered before they are handed to the writer.
const BATCH_BYTES: usize = 256 * 1024;
/// Credit taken at once (messages per batch at most).
const BATCH_MESSAGES: u32 = 1024;

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
}

/// What a pump sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Messages.
    pub(crate) messages: u64,
    /// Bytes, headers included.
    pub(crate) bytes: u64,
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
    let mut batch = Vec::new();
    loop {
        let credit = poll_fn(|cx| sink.gate.poll_take(cx, BATCH_MESSAGES)).await?;
        let mut used = 0;
        let mut ended = false;
        let mut failed = None;
        // The first message is waited for; more only while they are ready.
        let mut next = Some(items.next().await);
        while let Some(item) = next.take() {
            match item {
                None => ended = true,
                Some(Err(status)) => failed = Some(status),
                Some(Ok(item)) => {
                    used += 1;
                    if let Err(status) = encode::<C, T>(sink, item, &mut batch, sent).await {
                        failed = Some(status);
                    }
                }
            }
            if ended || failed.is_some() || used == credit || batch.len() >= BATCH_BYTES {
                break;
            }
            next = items.next().now_or_never();
        }
        sink.gate.give_back(credit - used);
        if !batch.is_empty() {
            send(sink, Outgoing::from(std::mem::take(&mut batch))).await?;
        }
        if let Some(status) = failed {
            return Err(status);
        }
        if ended {
            return Ok(());
        }
    }
}

/// Encodes one message at the end of `batch`; a message that went into a
/// bulk region is sent at once, after what `batch` held.
async fn encode<C: Codec, T: Serialize>(
    sink: &StreamSink,
    item: T,
    batch: &mut Vec<u8>,
    sent: &mut Sent,
) -> Result<(), Status> {
    let start = start_frame(batch);
    let limit = sink.limit as usize;
    let mut writer =
        SpillWriter::new(batch, start + HEADER_LEN, sink.spill_to.clone()).with_limit(Some(limit));
    let encoded = C::encode_to(&item, &mut writer);
    drop(item);
    let over = writer.over_limit();
    let bulk = writer.finish();
    if let Some(len) = over {
        batch.truncate(start);
        return Err(Status::resource_exhausted(format!(
            "a message of {} is {len} bytes or more, over the peer's limit of {limit} bytes; \
             send smaller messages (split them), or raise the peer's max_frame",
            sink.what
        )));
    }
    if let Err(err) = encoded {
        batch.truncate(start);
        return Err(Status::internal(format!(
            "a message of {} could not be encoded: {err}",
            sink.what
        )));
    }
    let bulk = bulk.map_err(|err| {
        Status::resource_exhausted(format!(
            "a message of {} could not be written to shared memory: {err}",
            sink.what
        ))
    })?;
    sent.messages += 1;
    match bulk {
        None => {
            let frame = &mut batch[start..];
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
            Ok(())
        }
        Some(body) => {
            let mut header = batch.split_off(start);
            header.truncate(HEADER_LEN);
            let _ = seal_data(
                &mut header,
                sink.call_id,
                sink.from_callee,
                sink.flags,
                Some(body.len()),
                u32::MAX,
            );
            sent.bytes += (HEADER_LEN + body.len()) as u64;
            if !batch.is_empty() {
                send(sink, Outgoing::from(std::mem::take(batch))).await?;
            }
            send(
                sink,
                Outgoing {
                    bytes: header,
                    written: None,
                    bulk: Some(body),
                    budget: None,
                },
            )
            .await
        }
    }
}

async fn send(sink: &StreamSink, outgoing: Outgoing) -> Result<(), Status> {
    sink.outbound.send(outgoing).await.map_err(|_| {
        Status::unavailable(format!(
            "{}: the connection's writer stopped while the stream was sent",
            sink.what
        ))
    })
}
