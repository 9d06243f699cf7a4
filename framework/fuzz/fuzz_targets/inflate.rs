//! `compress::inflate` on an arbitrary payload flagged compressed: no
//! panic, nothing reserved for a payload over the limit, and a compressed
//! payload inflates back to what was compressed.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: switchyard_fuzz::CountingAlloc = switchyard_fuzz::CountingAlloc;

fuzz_target!(|data: &[u8]| switchyard_fuzz::inflate(data));
