//! The std↔loom facade for atomics and cells (tokio's `loom/mod.rs`).
//!
//! Code that shares memory between threads or processes (the shm ring)
//! names its atomics, fences and `UnsafeCell` through this module only. A
//! normal build gets `std`'s; a build with `RUSTFLAGS="--cfg loom"` gets
//! loom's, so the same code runs under the model checker:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p switchyard --lib --release transport::shm::ring::loom
//! ```
//!
//! loom's atomics are ordinary heap objects, so they cannot live in memory
//! mapped from another process: under `cfg(loom)` the ring keeps its header
//! as a struct of these atomics beside a heap data buffer (see
//! `transport::shm::ring`).

// Not every build uses every item (without the `rt` feature there is no
// ring), so the re-exports are allowed to go unused.
#![allow(unused_imports)]

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::*;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::*;

/// `std::cell::UnsafeCell` with loom's closure API (`with`, `with_mut`), so
/// code written against loom's cell compiles unchanged without it.
#[cfg(not(loom))]
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
#[allow(dead_code)]
impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a shared raw pointer to the contents.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a unique raw pointer to the contents.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
