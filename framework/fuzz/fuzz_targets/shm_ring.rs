//! The shared-memory ring over a real sealed memfd, with the fuzzer as a
//! hostile peer rewriting header words and data between operations: every
//! result matches a model of the protocol, corruption is `RingError::Corrupt`
//! (never a panic), and nothing outside the ring changes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard_fuzz::shm_ring(data));
