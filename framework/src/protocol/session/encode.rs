//! The one encoder of the frames a session sends: hello, request and reply
//! headers, status frames (Response with an error, GoAway, Cancel), Ping
//! and Pong, and the frames of streams (Data, End, Credit). Everything that puts a frame on a link encodes it here.

use super::super::frame::Frame;
#[cfg(doc)]
use super::super::frame::{FLAG_CLIENT_STREAM, FLAG_SERVER_STREAM};
use super::super::frame::{
    FLAG_FROM_CALLEE, FrameError, HEADER_LEN, Header, Kind, finish_frame, len_u32, start_frame,
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
    /// Stream flags ([`FLAG_CLIENT_STREAM`], [`FLAG_SERVER_STREAM`]); 0
    /// for a unary call.
    pub flags: u16,
    /// A server-streaming call: the caller's window, the Data frames the
    /// callee may send before it is granted more.
    pub credit: u32,
}

impl RequestHead {
    fn header(&self) -> Header {
        let mut header = Header::new(self.kind, self.call_id);
        header.method_id = self.method_id;
        header.deadline_us = self.deadline_us;
        header.flags = self.flags;
        header.credit = self.credit;
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
/// or in a bulk region, with `flags`, into the first [`HEADER_LEN`] bytes
/// of `buf`.
pub fn seal_reply(buf: &mut [u8], call_id: u64, flags: u16, metadata_len: usize, body_len: usize) {
    let mut header = Header::new(Kind::Response, call_id);
    header.flags = flags;
    header.metadata_len = len_u32(metadata_len);
    header.payload_len = len_u32(body_len - metadata_len);
    header.write_to(buf);
}

/// The header of a stream message on `call_id` whose body is `body_len`
/// bytes (all payload), sent by the callee when `from_callee`.
pub fn data_header(call_id: u64, from_callee: bool, body_len: usize) -> Header {
    let mut header = Header::new(Kind::Data, call_id);
    if from_callee {
        header.flags = FLAG_FROM_CALLEE;
    }
    header.payload_len = len_u32(body_len);
    header
}

/// Writes the header of a stream message whose payload follows the
/// [`HEADER_LEN`] bytes reserved at the start of `buf` (or, when it went
/// into a bulk region, is `bulk_len` bytes there), with `flags` added
/// (e.g. [`FLAG_INCOMPRESSIBLE`](super::super::frame::FLAG_INCOMPRESSIBLE)),
/// checking it against `limit`.
pub fn seal_data(
    buf: &mut [u8],
    call_id: u64,
    from_callee: bool,
    flags: u16,
    bulk_len: Option<usize>,
    limit: u32,
) -> Result<(), FrameError> {
    let body = bulk_len.unwrap_or(buf.len() - HEADER_LEN);
    if body > limit as usize {
        return Err(FrameError::TooLarge {
            len: body as u64,
            limit,
        });
    }
    let mut header = data_header(call_id, from_callee, body);
    header.flags |= flags;
    header.write_to(buf);
    Ok(())
}

/// Writes the header of a batch of `count` stream messages
/// ([`FLAG_BATCH`](super::super::frame::FLAG_BATCH)) whose payload (each
/// message's `u32` length, then its bytes) follows the [`HEADER_LEN`] bytes
/// reserved at the start of `buf`, with `flags` added.
pub fn seal_batch(buf: &mut [u8], call_id: u64, from_callee: bool, flags: u16, count: u32) {
    let mut header = data_header(call_id, from_callee, buf.len() - HEADER_LEN);
    header.flags |= flags | super::super::frame::FLAG_BATCH;
    header.credit = count;
    header.write_to(buf);
}

/// The caller's half-close of a streaming call.
pub fn end_frame(call_id: u64) -> Vec<u8> {
    bare_frame(Kind::End, call_id)
}

/// A grant of `credit` more stream messages on `call_id`: from the callee
/// to the caller (`from_callee`) or the other way.
pub fn credit_frame(call_id: u64, from_callee: bool, credit: u32) -> Vec<u8> {
    let mut header = Header::new(Kind::Credit, call_id);
    if from_callee {
        header.flags = FLAG_FROM_CALLEE;
    }
    header.credit = credit;
    let mut buf = vec![0; HEADER_LEN];
    header.write_to(&mut buf);
    buf
}
