//! The hello exchange: each side sends its [`Hello`] first, and the first
//! frame it reads must be the peer's, in the role it expects.

use super::super::frame::{Decoded, Kind};
use super::super::hello::{Hello, Role};
use super::super::status::Status;
use super::encode::frame_status;

/// Checks the first frame a side read: the peer's hello, from a peer in
/// the `expect`ed role. A GoAway instead (the peer refused this side) is
/// its status; anything else is InvalidArgument saying what came.
pub fn check_hello(first: Decoded, expect: Role) -> Result<Hello, Status> {
    let Decoded::Frame(frame) = first else {
        return Err(Status::invalid_argument(
            "the peer's first frame is oversized",
        ));
    };
    if frame.header.kind == Kind::GoAway {
        return Err(frame_status(&frame));
    }
    if frame.header.kind != Kind::Hello {
        return Err(Status::invalid_argument(format!(
            "the peer's first frame is {:?}, not Hello",
            frame.header.kind
        )));
    }
    let hello = Hello::decode(&frame.payload)
        .map_err(|err| Status::invalid_argument(format!("the peer's hello is malformed: {err}")))?;
    if hello.role != expect {
        return Err(Status::invalid_argument(format!(
            "the peer introduced itself as {:?} but {expect:?} was expected",
            hello.role
        )));
    }
    Ok(hello)
}

/// The role a side in `role` expects its peer to introduce itself in.
pub fn expected_peer_role(role: Role) -> Role {
    match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
        Role::Peer => Role::Peer,
    }
}
