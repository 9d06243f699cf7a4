//! The one encoder of the frames a session sends: hello, request and reply
//! headers, status frames (Response with an error, GoAway, Cancel), Ping
//! and Pong. Everything that puts a frame on a link encodes it here.

use super::super::frame::Frame;
use super::super::frame::{
    FrameError, HEADER_LEN, Header, Kind, finish_frame, len_u32, start_frame,
};
use super::super::hello::Hello;
use super::super::metadata::Metadata;
use super::super::status::{Code, Status};

/// Encodes a hello frame.
pub fn hello_frame(hello: &Hello) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    let start = start_frame(&mut buf);
    hello.encode_into(&mut buf);
    // A hello is far below any limit.
    let _ = finish_frame(&mut buf, start, Header::new(Kind::Hello, 0), 0, u32::MAX);
    buf
}

/// Encodes a frame of `kind` carrying `status` (Response, GoAway, Cancel).
pub fn status_frame(kind: Kind, call_id: u64, status: &Status) -> Vec<u8> {
    status_frame_with(kind, call_id, status, &Metadata::new())
}

/// Encodes a frame carrying `status`, with `metadata` in front of the
/// message (a failed call's response metadata).
pub fn status_frame_with(
    kind: Kind,
    call_id: u64,
    status: &Status,
    metadata: &Metadata,
) -> Vec<u8> {
    let mut header = Header::new(kind, call_id);
    header.status = status.code().as_u16();
    let metadata_len = metadata.encoded_len();
    let mut buf = Vec::with_capacity(64 + metadata_len + status.message().len());
    let start = start_frame(&mut buf);
    metadata.encode_into(&mut buf);
    buf.extend_from_slice(status.message().as_bytes());
    let _ = finish_frame(&mut buf, start, header, metadata_len, u32::MAX);
    buf
}

/// Encodes a Ping (`kind` Ping) or its answer (`kind` Pong): a bare header.
pub fn bare_frame(kind: Kind, call_id: u64) -> Vec<u8> {
    let mut buf = vec![0; HEADER_LEN];
    Header::new(kind, call_id).write_to(&mut buf);
    buf
}

/// The status a Response or GoAway frame carries.
pub fn frame_status(frame: &Frame) -> Status {
    Status::new(
        Code::from_u16(frame.header.status),
        String::from_utf8_lossy(&frame.payload).into_owned(),
    )
}

/// What identifies a call in the header of its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Request (a response is expected) or OneWay.
    pub kind: Kind,
    /// The call id ([`StartedCall::call_id`](super::super::call::StartedCall)).
    pub call_id: u64,
    /// The method called.
    pub method_id: u32,
    /// The deadline budget in microseconds (0: none).
    pub deadline_us: u64,
}

impl RequestHead {
    fn header(&self) -> Header {
        let mut header = Header::new(self.kind, self.call_id);
        header.method_id = self.method_id;
        header.deadline_us = self.deadline_us;
        header
    }
}

/// Writes the header of a request whose body (`metadata_len` bytes of
/// metadata, then the arguments) follows the [`HEADER_LEN`] bytes reserved
/// at the start of `buf`, checking the body against `limit`.
pub fn seal_request(
    buf: &mut [u8],
    head: RequestHead,
    metadata_len: usize,
    limit: u32,
) -> Result<(), FrameError> {
    finish_frame(buf, 0, head.header(), metadata_len, limit)
}

/// Writes the header of a request whose body of `body_len` bytes went into
/// a bulk region (its limit was checked while it was written) into the
/// first [`HEADER_LEN`] bytes of `buf`.
pub fn seal_bulk_request(buf: &mut [u8], head: RequestHead, metadata_len: usize, body_len: usize) {
    let mut header = head.header();
    header.metadata_len = len_u32(metadata_len);
    header.payload_len = len_u32(body_len - metadata_len);
    header.write_to(buf);
}

/// Writes the header of a successful reply to `call_id` whose body is
/// `body_len` bytes (`metadata_len` of them response metadata), in `buf`
/// or in a bulk region, into the first [`HEADER_LEN`] bytes of `buf`.
pub fn seal_reply(buf: &mut [u8], call_id: u64, metadata_len: usize, body_len: usize) {
    let mut header = Header::new(Kind::Response, call_id);
    header.metadata_len = len_u32(metadata_len);
    header.payload_len = len_u32(body_len - metadata_len);
    header.write_to(buf);
}
