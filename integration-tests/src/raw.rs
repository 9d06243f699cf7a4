//! Frames written by hand, for tests that play a client the framework
//! would never be: one that stops half-way, floods, or lies.

use switchyard::protocol::frame::{Header, Kind, finish_frame, start_frame};
use switchyard::protocol::hello::{Hello, Role};

/// A client's Hello frame from this process, named `process_name`, taking
/// responses of up to 1 MiB.
pub fn client_hello(process_name: &str) -> Vec<u8> {
    let hello = Hello {
        role: Role::Client,
        host: Default::default(),
        pid: std::process::id(),
        uid: 0,
        process_name: process_name.into(),
        max_frame: 1 << 20,
        max_in_flight: 0,
        services: Vec::new(),
        queues: Vec::new(),
        endpoints: Vec::new(),
        codecs: 0,
        features: 0,
    };
    let mut buf = Vec::new();
    let start = start_frame(&mut buf);
    hello.encode_into(&mut buf);
    finish_frame(&mut buf, start, Header::new(Kind::Hello, 0), 0, u32::MAX)
        .expect("a hello fits a frame");
    buf
}
