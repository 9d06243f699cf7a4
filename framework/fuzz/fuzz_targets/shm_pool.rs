//! The receiving side of a shm connection's pool with the fuzzer as the
//! sending peer: descriptors, the segments that come with them (real sealed
//! memfds, or ones announced wrongly), and the sender scribbling on what it
//! sent. Every verdict matches a model, and a body taken never changes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard_fuzz::shm_pool(data));
