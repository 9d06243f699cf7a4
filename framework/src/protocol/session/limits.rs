//! Frame limits of both ends of a session, and the statuses that say which
//! limit a frame passed and which setting raises it.

use super::super::frame::HEADER_LEN;
use super::super::status::Status;
use super::encode::{self, RequestHead};

/// Where each side of a connection sets its frame limit, for messages that
/// tell the user which knob to turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitKnobs {
    /// This side's frame limit setting.
    pub own: &'static str,
    /// The peer's frame limit setting.
    pub peer: &'static str,
    /// This side's limit on calls in flight, where it serves.
    pub in_flight: &'static str,
    /// This side's limit on request metadata, where it serves.
    pub metadata: &'static str,
}

impl LimitKnobs {
    /// A client of a server.
    pub const CLIENT: Self = Self {
        own: "ChannelBuilder::max_frame",
        peer: "the server's ServerBuilder::max_frame",
        in_flight: "ServerBuilder::max_in_flight",
        metadata: "ChannelBuilder::max_metadata",
    };
    /// A server of clients.
    pub const SERVER: Self = Self {
        own: "ServerBuilder::max_frame",
        peer: "the client's ChannelBuilder::max_frame",
        in_flight: "ServerBuilder::max_in_flight",
        metadata: "ServerBuilder::max_metadata",
    };
    /// A parent on the pipes to the child it spawned.
    pub const PARENT: Self = Self {
        own: "Spawner::channel_settings(ChannelBuilder::max_frame) or Services::max_frame",
        peer: "the child's process::Services::max_frame",
        in_flight: "the parent's process::Services::max_in_flight",
        metadata: "the parent's process::Services::max_metadata",
    };
    /// A child on the pipes to its parent.
    pub const CHILD: Self = Self {
        own: "process::Services::max_frame",
        peer: "the parent's Spawner::channel_settings(ChannelBuilder::max_frame)",
        in_flight: "process::Services::max_in_flight",
        metadata: "process::Services::max_metadata",
    };
}

/// The largest frame body each end takes, and where each is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// The largest body this side accepts.
    pub own: u32,
    /// The largest body the peer accepts (from its hello).
    pub peer: u32,
    /// Which settings set them.
    pub knobs: LimitKnobs,
}

impl FrameLimits {
    /// Writes the header of a request to `what` whose body follows the
    /// [`HEADER_LEN`] bytes reserved at the start of `buf`; a body over the
    /// peer's limit is ResourceExhausted (send nothing).
    pub fn seal_request(
        &self,
        buf: &mut [u8],
        head: RequestHead,
        metadata_len: usize,
        what: &str,
    ) -> Result<(), Status> {
        encode::seal_request(buf, head, metadata_len, self.peer)
            .map_err(|_| self.request_too_large(what, buf.len().saturating_sub(HEADER_LEN)))
    }

    /// A request of `len` bytes arrived over this (serving) side's limit.
    pub fn request_received_too_large(&self, len: u64) -> Status {
        Status::resource_exhausted(format!(
            "the request of {len} bytes exceeds this server's limit of {} bytes (the client \
             takes responses up to {} bytes); send less per call or raise {}",
            self.own, self.peer, self.knobs.own
        ))
    }

    /// A response of `len` bytes arrived over this (calling) side's limit.
    pub fn response_received_too_large(&self, len: u64) -> Status {
        Status::resource_exhausted(format!(
            "the response of {len} bytes exceeds this client's limit of {} bytes (the server \
             takes requests up to {} bytes); raise this side's limit with {} or ask for less \
             per call",
            self.own, self.peer, self.knobs.own
        ))
    }

    /// A request to `what` of at least `len` bytes is over the peer's limit:
    /// it is not sent.
    pub fn request_too_large(&self, what: &str, len: usize) -> Status {
        Status::resource_exhausted(format!(
            "the request to {what} is {len} bytes or more, over the server's limit of {} bytes \
             (this client takes responses up to {} bytes); nothing was sent — send less per \
             call or raise {}",
            self.peer, self.own, self.knobs.peer
        ))
    }

    /// A reply of `len` bytes is over the peer's limit: the caller gets this
    /// status instead.
    pub fn reply_too_large(&self, len: usize) -> Status {
        Status::resource_exhausted(format!(
            "the response is {len} bytes, over the client's limit of {} bytes (this server \
             takes requests up to {} bytes); ask for less per call or raise {}",
            self.peer, self.own, self.knobs.peer
        ))
    }
}
