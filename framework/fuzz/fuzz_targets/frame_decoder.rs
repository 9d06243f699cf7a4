//! `FrameDecoder` fed arbitrary bytes in arbitrary chunks under a small
//! limit: no panic, bounded allocation, the same frames however the bytes
//! are chunked, and decoded frames re-encode to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: switchyard_fuzz::CountingAlloc = switchyard_fuzz::CountingAlloc;

fuzz_target!(|data: &[u8]| switchyard_fuzz::frame_decoder(data));
