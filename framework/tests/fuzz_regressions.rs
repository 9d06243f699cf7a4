//! The fuzz targets' checks (framework/fuzz/src/checks.rs, compiled in
//! here as a module) run over the committed seed corpus and over every
//! input that once failed a check, so CI keeps them passing without
//! libFuzzer. See docs/fuzzing.md.
//!
//! The seed files are generated: `SWITCHYARD_WRITE_FUZZ_SEEDS=1 cargo test
//! -p switchyard --test fuzz_regressions` rewrites
//! framework/fuzz/corpus/<target>/ after a wire-format change.

#![cfg(all(target_os = "linux", feature = "rt"))]

use std::path::{Path, PathBuf};

use switchyard::Codec;

#[allow(unreachable_pub, dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

#[global_allocator]
static ALLOC: checks::CountingAlloc = checks::CountingAlloc;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn check_for(target: &str) -> fn(&[u8]) {
    match target {
        "frame_decoder" => checks::frame_decoder,
        "hello" => checks::hello,
        "inflate" => checks::inflate,
        "codec" => checks::codec,
        "shm_ring" => checks::shm_ring,
        "shm_pool" => checks::shm_pool,
        other => panic!("no fuzz target {other}"),
    }
}

#[test]
fn the_allocation_counter_counts() {
    let (kept, peak) = checks::peak_during(|| vec![0u8; 100_000]);
    assert!(peak >= 100_000, "peak {peak}");
    drop(kept);
}

#[test]
fn seed_corpus_is_current_and_passes() {
    let write = std::env::var_os("SWITCHYARD_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in checks::seeds() {
        let path = fuzz_dir().join("corpus").join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == bytes,
                "{} is stale or missing: rerun with SWITCHYARD_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
        }
        check_for(target)(&bytes);
    }
}

/// Every file under framework/fuzz/regressions/<target>/ (minimised
/// inputs that once failed) passes its target's check.
#[test]
fn past_failures_pass() {
    let dir = fuzz_dir().join("regressions");
    let Ok(targets) = std::fs::read_dir(&dir) else {
        return;
    };
    for target in targets {
        let target = target.unwrap().path();
        let check = check_for(target.file_name().unwrap().to_str().unwrap());
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            let bytes = std::fs::read(&input).unwrap();
            eprintln!("{}", input.display());
            check(&bytes);
        }
    }
}

// ---------------------------------------------------------------- findings

/// The codec fuzzer's first finding, minimised to 12 bytes: arguments
/// `(u32, Order, Vec<Bytes>)` whose `Order::customer` string claims
/// 50 473 734 bytes. bincode 2.0.1 decodes an owned `String` with
/// `vec![0u8; claimed_len]` before it reads (src/features/impl_alloc.rs,
/// `Vec<u8>` decode, reached from `deserialize_string` in
/// features/serde/de_borrowed.rs), and the only cap on the claim is the
/// codec's byte limit, `codec::DECODE_LIMIT` = 1 GiB (framework/src/codec.rs,
/// `bincode_config`). So a payload of a few bytes makes the receiver
/// allocate up to 1 GiB per string field; with strict overcommit or an
/// address-space limit that allocation fails and the process aborts.
/// Fixed: `Bincode::decode` bounds the memory a decode may claim by the
/// input's size (see `codec::MEMORY_LIMITS`).
#[test]
fn codec_string_claim_allocates_at_most_the_input() {
    let minimised = std::fs::read(fuzz_dir().join("regressions/codec/string-claim-50mb")).unwrap();
    // The same with the largest claim the limit lets through: (String, Vec<u8>).
    let mut largest = vec![0xfd_u8];
    largest.extend_from_slice(&((switchyard::codec::DECODE_LIMIT as u64) - 64).to_le_bytes());
    for (what, usage) in [
        (
            "1 GiB claim",
            checks::usage_during(|| {
                switchyard::Bincode::decode::<(String, Vec<u8>)>(&largest).unwrap_err()
            })
            .1,
        ),
        (
            "minimised fuzz input",
            checks::usage_during(|| {
                switchyard::Bincode::decode::<checks::Mixed>(&minimised[1..]).unwrap_err()
            })
            .1,
        ),
    ] {
        let bound = checks::codec_alloc_bound(minimised.len().max(largest.len()));
        assert!(
            usage.peak <= bound,
            "{what}: decoding allocated {usage:?}, bound {bound}"
        );
    }
}

/// What holds today despite the finding above: a claim beyond the codec's
/// byte limit fails before anything is allocated for it, for strings,
/// byte vectors and `Bytes`.
#[test]
fn codec_claims_beyond_the_limit_allocate_nothing() {
    let mut claim = vec![0xfd_u8];
    claim.extend_from_slice(&(switchyard::codec::DECODE_LIMIT as u64 + 1).to_le_bytes());
    let bound = checks::codec_alloc_bound(claim.len());
    let (result, usage) = checks::usage_during(|| switchyard::Bincode::decode::<String>(&claim));
    assert!(result.is_err() && usage.peak <= bound, "String: {usage:?}");
    let (result, usage) = checks::usage_during(|| switchyard::Bincode::decode::<Vec<u8>>(&claim));
    assert!(result.is_err() && usage.peak <= bound, "Vec<u8>: {usage:?}");
    let (result, usage) =
        checks::usage_during(|| switchyard::Bincode::decode::<switchyard::Bytes>(&claim));
    assert!(result.is_err() && usage.peak <= bound, "Bytes: {usage:?}");
}
