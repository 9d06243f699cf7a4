//! The server side of a generated service: the [`Service`] trait that
//! `#[switchyard::service]` implements for its `FooServer<T>` adapter.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::metadata::Metadata;
use crate::protocol::status::Status;
use crate::streaming::pump::{Sent, StreamSink, pump};
use crate::streaming::{GrantBatch, Granter, Inbox, Received, Streaming};
use crate::transport::bulk::{BulkBody, SpillWriter};
use std::sync::Arc;

/// The future a handler returns: the encoded reply, or a status.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, Status>> + Send + 'static>>;

/// A service the server can dispatch calls to. Implemented by the
/// `FooServer<T>` adapters that `#[switchyard::service]` generates; you rarely
/// implement it by hand.
pub trait Service: Send + Sync + 'static {
    /// The service's static description.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Starts the handler for `method_id` with the encoded arguments, or
    /// returns `None` if this service has no such method.
    fn call(&self, method_id: u32, request: Request) -> Option<HandlerFuture>;
}

/// The encoded arguments of one call, as received, and the stream of
/// messages that follows them in a client-streaming call.
pub struct Request {
    payload: Bytes,
    stream: Option<RequestStream>,
}

/// The receiving end of a call's stream argument, until the handler takes it.
pub(crate) struct RequestStream {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) granter: Arc<dyn Granter>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("payload", &self.payload.len())
            .field("stream", &self.stream.is_some())
            .finish()
    }
}

impl Request {
    /// Wraps received payload bytes.
    pub fn new(payload: Bytes) -> Self {
        Self {
            payload,
            stream: None,
        }
    }

    /// A request whose messages follow in `stream`.
    pub(crate) fn with_stream(payload: Bytes, stream: RequestStream) -> Self {
        Self {
            payload,
            stream: Some(stream),
        }
    }

    /// Takes the call's stream argument, decoding its messages as `T`.
    /// INVALID_ARGUMENT when the call carries no stream (the caller does
    /// not stream: client and server disagree on the method).
    pub fn take_stream<C: Codec, T: DeserializeOwned + Send + 'static>(
        &mut self,
        method: &'static MethodDescriptor,
    ) -> Result<Streaming<T>, Status> {
        let Some(stream) = self.stream.take() else {
            return Err(Status::invalid_argument(format!(
                "{} takes a stream, but the call carries none; do client and server use the \
                 same version of the trait?",
                method.full_name
            )));
        };
        let window = stream.inbox.window();
        Ok(Streaming::received(Received {
            inbox: stream.inbox,
            granter: stream.granter,
            decode: |bytes, range| {
                C::decode_shared_part(bytes, range).map_err(|err| err.to_string())
            },
            what: method.full_name,
            deadline: None,
            call: None,
            received: 0,
            trailers: None,
            unchecked: 0,
            local: std::collections::VecDeque::new(),
            batch: None,
            grants: GrantBatch::new(window),
        }))
    }

    /// The encoded arguments.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Decodes the arguments as a `T` (a tuple of the method's arguments).
    ///
    /// A failure is [`Code::InvalidArgument`](crate::Code::InvalidArgument)
    /// naming the method.
    pub fn decode<C: Codec, T: DeserializeOwned>(
        &self,
        method: &'static MethodDescriptor,
    ) -> Result<T, Status> {
        C::decode_shared(&self.payload).map_err(|err| {
            Status::invalid_argument(format!(
                "the arguments of {} could not be decoded ({err}); \
                 do client and server use the same version of the trait?",
                method.full_name
            ))
        })
    }
}

/// An encoded reply, with room reserved in front for the frame header so the
/// runtime writes the header in place instead of copying the payload. On a
/// link with a bulk path (shared memory) a large result is encoded straight
/// into a bulk region instead.
pub struct Reply {
    buf: Vec<u8>,
    bulk: Option<BulkBody>,
    /// Bytes of response metadata at the start of the body.
    metadata_len: usize,
    /// A stream result: sends its messages; the reply proper (the
    /// trailers) is made once it ended.
    stream: Option<StreamOut>,
    /// Header flags of the reply frame ([`MethodDescriptor::frame_flags`]).
    flags: u16,
}

/// Sends a stream result's messages on a sink: how it ended, and what it
/// sent.
pub(crate) type StreamOut = Box<
    dyn FnOnce(StreamSink) -> Pin<Box<dyn Future<Output = (Result<(), Status>, Sent)> + Send>>
        + Send,
>;

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("len", &self.buf.len())
            .field("bulk", &self.bulk.as_ref().map(BulkBody::len))
            .field("stream", &self.stream.is_some())
            .finish()
    }
}

impl Reply {
    /// The reply of a method whose result is a stream: its messages are
    /// sent as the caller grants credit; an `Err` item ends the call with
    /// that status.
    pub fn stream<C: Codec, T: Serialize + Send + 'static>(
        out: Streaming<T>,
        method: &'static MethodDescriptor,
    ) -> Result<Self, Status> {
        let _ = method;
        let mut items = out.into_local();
        let run: StreamOut = Box::new(move |sink: StreamSink| {
            Box::pin(async move {
                let mut sent = Sent::default();
                let ended = pump::<C, T>(&sink, &mut items, &mut sent).await;
                (ended, sent)
            })
        });
        Ok(Self {
            buf: Vec::new(),
            bulk: None,
            metadata_len: 0,
            stream: Some(run),
            flags: 0,
        })
    }

    /// The stream of a stream result, to be sent before the reply.
    pub(crate) fn take_stream(&mut self) -> Option<StreamOut> {
        self.stream.take()
    }

    /// The final reply of a stream result: no payload, the handler's
    /// response metadata as trailers.
    pub(crate) fn end_of_stream() -> Self {
        let metadata = crate::context::Context::take_response_metadata();
        let mut buf = Vec::with_capacity(HEADER_LEN + metadata.encoded_len());
        buf.resize(HEADER_LEN, 0);
        metadata.encode_into(&mut buf);
        Self {
            metadata_len: metadata.encoded_len(),
            buf,
            bulk: None,
            stream: None,
            flags: 0,
        }
    }
    /// Encodes `value` as the reply of `method`. Inside a handler, a result
    /// over the client's frame limit is refused (ResourceExhausted) before
    /// its bytes are copied.
    pub fn encode<C: Codec, T: Serialize + ?Sized>(
        value: &T,
        method: &'static MethodDescriptor,
    ) -> Result<Self, Status> {
        // The handler's response metadata goes first, as in a request; if
        // the result cannot be encoded, the error status carries it.
        let metadata = crate::context::Context::take_response_metadata();
        let encoded = Self::encode_after::<C, T>(value, method, &metadata);
        if encoded.is_err() {
            crate::context::Context::restore_response_metadata(metadata);
        }
        encoded
    }

    /// [`encode`](Self::encode) with `metadata` in front of the result.
    fn encode_after<C: Codec, T: Serialize + ?Sized>(
        value: &T,
        method: &'static MethodDescriptor,
        metadata: &Metadata,
    ) -> Result<Self, Status> {
        let (threshold, limit) = crate::context::Context::reply_limits();
        let mut buf = Vec::with_capacity(HEADER_LEN + 64 + metadata.encoded_len());
        buf.resize(HEADER_LEN, 0);
        metadata.encode_into(&mut buf);
        let metadata_len = metadata.encoded_len();
        let mut writer =
            SpillWriter::new(&mut buf, HEADER_LEN, threshold.as_ref()).with_limit(limit);
        let encoded = C::encode_to(value, &mut writer);
        let over_limit = writer.over_limit();
        let bulk = writer.finish();
        if let (Some(len), Some(limit)) = (over_limit, limit) {
            let (own, knob) = crate::context::Context::reply_limit_context()
                .unwrap_or((0, "the client's ChannelBuilder::max_frame"));
            return Err(Status::resource_exhausted(format!(
                "the response of {} is {len} bytes or more, over the client's limit of {limit} \
                 bytes (this server takes requests up to {own} bytes); ask for less per call or \
                 raise {knob}",
                method.full_name
            )));
        }
        encoded.map_err(|err| {
            Status::internal(format!(
                "the result of {} could not be encoded: {err}",
                method.full_name
            ))
        })?;
        let bulk = bulk.map_err(|err| {
            Status::resource_exhausted(format!(
                "the result of {} could not be written to shared memory: {err}",
                method.full_name
            ))
        })?;
        Ok(Self {
            buf,
            bulk,
            metadata_len,
            stream: None,
            flags: method.frame_flags(),
        })
    }

    /// The encoded payload, without the reserved header room and the
    /// response metadata; empty when it went into a bulk region
    /// ([`is_bulk`](Self::is_bulk)).
    pub fn payload(&self) -> &[u8] {
        self.buf
            .get(HEADER_LEN + self.metadata_len..)
            .unwrap_or(&[])
    }

    /// Whether the payload went into a bulk region.
    pub fn is_bulk(&self) -> bool {
        self.bulk.is_some()
    }

    /// The buffer ([`HEADER_LEN`] reserved bytes, then the body unless it
    /// is bulk), the bulk body, and how many bytes of the body are
    /// response metadata.
    pub(crate) fn into_parts(self) -> (Vec<u8>, Option<BulkBody>, usize) {
        (self.buf, self.bulk, self.metadata_len)
    }

    /// The encoded result, unless it went to a bulk region (or this is a
    /// stream's reply, whose messages went before it).
    pub(crate) fn encoded(&self) -> Option<&[u8]> {
        if self.bulk.is_some() {
            return None;
        }
        self.buf.get(HEADER_LEN + self.metadata_len..)
    }

    /// The encoded result's length, wherever it is.
    pub(crate) fn encoded_len(&self) -> usize {
        match &self.bulk {
            Some(bulk) => bulk.len(),
            None => self.encoded().map_or(0, <[u8]>::len),
        }
    }

    /// A reply of an already encoded result (a layer's answer), with the
    /// response metadata the handler's context holds in front of it.
    pub(crate) fn from_encoded(encoded: &[u8]) -> Self {
        let metadata = crate::context::Context::take_response_metadata();
        let mut buf = Vec::with_capacity(HEADER_LEN + metadata.encoded_len() + encoded.len());
        buf.resize(HEADER_LEN, 0);
        metadata.encode_into(&mut buf);
        buf.extend_from_slice(encoded);
        Self {
            metadata_len: metadata.encoded_len(),
            buf,
            bulk: None,
            stream: None,
            flags: crate::context::Context::current().map_or(0, |ctx| ctx.method().frame_flags()),
        }
    }

    /// Header flags of the reply frame: the method's
    /// ([`MethodDescriptor::frame_flags`]).
    pub(crate) fn frame_flags(&self) -> u16 {
        self.flags
    }
}
