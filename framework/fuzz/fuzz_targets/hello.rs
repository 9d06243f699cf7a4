//! `Hello::decode` on arbitrary bytes: no panic, bounded allocation, and a
//! decoded hello round-trips through `encode_into`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: switchyard_fuzz::CountingAlloc = switchyard_fuzz::CountingAlloc;

fuzz_target!(|data: &[u8]| switchyard_fuzz::hello(data));
