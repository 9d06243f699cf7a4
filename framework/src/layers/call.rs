//! What a layer sees of a call ([`Call`]) and of its result ([`Response`]).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::context::Context;
use crate::descriptor::MethodDescriptor;
use crate::protocol::metadata::Metadata;
use crate::protocol::status::Status;
use crate::select::Transport;
use crate::service::{Reply, Request};
use crate::transport::{PeerIdentity, PeerInfo};

/// Which end of the call a layer runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A channel's layer: the call is about to be made.
    Client,
    /// A server's layer: the call arrived and its handler is about to run.
    Server,
}

impl Side {
    /// `"client"` or `"server"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// One call as a layer sees it.
#[derive(Debug)]
pub struct Call {
    method: &'static MethodDescriptor,
    end: End,
}

#[derive(Debug)]
enum End {
    /// On a server: the handler's context and the received arguments.
    Server {
        ctx: Context,
        request: Option<Request>,
    },
    /// On a channel: what the call will carry.
    Client {
        deadline: Option<Instant>,
        metadata: Metadata,
        transport: Option<Transport>,
    },
}

impl Call {
    /// A call a server received, before its handler runs.
    pub(crate) fn server(ctx: Context, request: Request) -> Self {
        Self {
            method: ctx.method(),
            end: End::Server {
                ctx,
                request: Some(request),
            },
        }
    }

    /// A call a channel is about to make.
    pub(crate) fn client(
        method: &'static MethodDescriptor,
        deadline: Option<Instant>,
        metadata: Metadata,
        transport: Option<Transport>,
    ) -> Self {
        Self {
            method,
            end: End::Client {
                deadline,
                metadata,
                transport,
            },
        }
    }

    /// Which end of the call this is.
    pub fn side(&self) -> Side {
        match self.end {
            End::Server { .. } => Side::Server,
            End::Client { .. } => Side::Client,
        }
    }

    /// The method called (its service, name, id and kind).
    pub fn method(&self) -> &'static MethodDescriptor {
        self.method
    }

    /// When the caller stops waiting, if it set a deadline. Layers cannot
    /// change it; it covers them too.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.end {
            End::Server { ctx, .. } => ctx.deadline(),
            End::Client { deadline, .. } => *deadline,
        }
    }

    /// Time left until the deadline (zero once it passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The call's metadata: on a server what the caller sent, on a channel
    /// what the call will carry.
    pub fn metadata(&self) -> &Metadata {
        match &self.end {
            End::Server { ctx, .. } => ctx.metadata(),
            End::Client { metadata, .. } => metadata,
        }
    }

    /// The metadata, to change: on a channel what is sent (a token, say),
    /// on a server what the handler will read in its
    /// [`Context`](crate::Context).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        match &mut self.end {
            End::Server { ctx, .. } => ctx.metadata_mut(),
            End::Client { metadata, .. } => metadata,
        }
    }

    /// The transport: on a server the one the call came over; on a channel
    /// the one its connection uses now (`None` before it has one).
    pub fn transport(&self) -> Option<Transport> {
        match &self.end {
            End::Server { ctx, .. } => Some(ctx.transport()),
            End::Client { transport, .. } => *transport,
        }
    }

    /// On a server, what the kernel or transport says about the caller.
    pub fn peer(&self) -> Option<&PeerInfo> {
        match &self.end {
            End::Server { ctx, .. } => Some(ctx.peer()),
            End::Client { .. } => None,
        }
    }

    /// On a server, the caller's verified certificate identity (QUIC with
    /// mutual TLS), `None` elsewhere.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        match &self.end {
            End::Server { ctx, .. } => ctx.peer_identity(),
            End::Client { .. } => None,
        }
    }

    /// On a server, the handler's context.
    pub fn context(&self) -> Option<&Context> {
        match &self.end {
            End::Server { ctx, .. } => Some(ctx),
            End::Client { .. } => None,
        }
    }

    /// On a server, the encoded arguments as received (a stream's messages
    /// follow them and pass beside the layers).
    pub fn request_payload(&self) -> Option<&Bytes> {
        match &self.end {
            End::Server { request, .. } => request.as_ref().map(Request::payload),
            End::Client { .. } => None,
        }
    }

    /// The server's context and request, for the handler.
    pub(crate) fn into_server(self) -> Option<(Context, Request)> {
        match self.end {
            End::Server { ctx, request } => request.map(|request| (ctx, request)),
            End::Client { .. } => None,
        }
    }

    /// The channel's metadata, for the call.
    pub(crate) fn into_client_metadata(self) -> Metadata {
        match self.end {
            End::Client { metadata, .. } => metadata,
            End::Server { ctx, .. } => ctx.metadata().clone(),
        }
    }
}

/// What a call gave back, as a layer sees it.
#[derive(Debug)]
pub struct Response {
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// A server's encoded reply.
    Reply(Reply),
    /// An encoded result: what a channel received, or what a layer made up.
    Encoded(Bytes),
    /// A one-way call was handed to its transport.
    Sent,
    /// A stream was opened; its messages go beside the layers.
    Stream,
}

impl Response {
    /// An answer made by a layer from an encoded result (the method's
    /// codec's encoding, as a cache would keep it).
    pub fn from_encoded(bytes: impl Into<Bytes>) -> Self {
        Self {
            body: Body::Encoded(bytes.into()),
        }
    }

    pub(crate) fn reply(reply: Reply) -> Self {
        Self {
            body: Body::Reply(reply),
        }
    }

    pub(crate) fn sent() -> Self {
        Self { body: Body::Sent }
    }

    pub(crate) fn stream() -> Self {
        Self { body: Body::Stream }
    }

    /// The encoded result, where there is one in memory (not a one-way
    /// call, a stream, or a large reply written to shared memory).
    pub fn encoded(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Reply(reply) => reply.encoded(),
            Body::Encoded(bytes) => Some(bytes),
            Body::Sent | Body::Stream => None,
        }
    }

    /// The encoded result's length in bytes (0 for a one-way call or a
    /// stream).
    pub fn encoded_len(&self) -> usize {
        match &self.body {
            Body::Reply(reply) => reply.encoded_len(),
            Body::Encoded(bytes) => bytes.len(),
            Body::Sent | Body::Stream => 0,
        }
    }

    /// Whether this is the opening of a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.body, Body::Stream)
    }

    /// The server's reply; `what` names the method for the error.
    pub(crate) fn into_reply(self, what: &str) -> Result<Reply, Status> {
        match self.body {
            Body::Reply(reply) => Ok(reply),
            Body::Encoded(bytes) => Ok(Reply::from_encoded(&bytes)),
            Body::Sent | Body::Stream => Err(Status::internal(format!(
                "a layer answered {what} with no result to send (a one-way or stream marker); \
                 a server's layer answers with Next::run's response, a Status or \
                 Response::from_encoded"
            ))),
        }
    }

    /// The encoded result a channel decodes.
    pub(crate) fn into_encoded(self, what: &str) -> Result<Bytes, Status> {
        match self.body {
            Body::Encoded(bytes) => Ok(bytes),
            Body::Reply(_) | Body::Sent | Body::Stream => Err(Status::internal(format!(
                "a layer answered {what} with no encoded result; a channel's layer answers \
                 with Next::run's response, a Status or Response::from_encoded"
            ))),
        }
    }
}
