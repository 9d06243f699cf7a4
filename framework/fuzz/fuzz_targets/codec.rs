//! `Bincode` decoding of arbitrary bytes into argument and result types
//! like the ones `#[switchyard::service]` generates: no panic, bounded
//! allocation, `decode_shared` agrees with `decode`, and decoded values
//! round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: switchyard_fuzz::CountingAlloc = switchyard_fuzz::CountingAlloc;

fuzz_target!(|data: &[u8]| switchyard_fuzz::codec(data));
