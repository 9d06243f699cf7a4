//! Buffers a receiver copies pooled bodies into, kept for the next body
//! when their last user drops them: a large body copied into fresh memory
//! would have the kernel allocate and zero its pages every time (the cost
//! the pool saves the sender).

use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Spare buffers kept at most.
const KEEP: usize = 2;
/// Buffers smaller than this are left to the allocator, which reuses them
/// well; larger ones are not kept past [`MAX_KEPT`] bytes in all.
const MIN_KEPT: usize = 1 << 20;
/// The most bytes the spares of one connection hold.
const MAX_KEPT: usize = 128 << 20;

/// One receiver's spare buffers.
#[derive(Debug, Default)]
pub(crate) struct Spares {
    kept: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Spares {
    /// An empty buffer with room for `len` bytes where a spare has it, else
    /// a new one.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if len < MIN_KEPT {
            return Vec::new();
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        match kept.iter().position(|b| b.capacity() >= len) {
            Some(at) => kept.swap_remove(at),
            None => Vec::new(),
        }
    }

    /// `body`, to be handed out as bytes; its buffer comes back here when
    /// the last user drops it.
    pub(crate) fn lend(&self, body: Vec<u8>) -> Lent {
        Lent {
            body,
            home: Arc::downgrade(&self.kept),
        }
    }
}

/// A body whose buffer goes back to its receiver's spares when dropped.
#[derive(Debug)]
pub(crate) struct Lent {
    body: Vec<u8>,
    home: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if self.body.capacity() < MIN_KEPT {
            return;
        }
        let Some(home) = self.home.upgrade() else {
            return;
        };
        let mut kept = home.lock().unwrap_or_else(PoisonError::into_inner);
        let held: usize = kept.iter().map(Vec::capacity).sum();
        if kept.len() < KEEP && held + self.body.capacity() <= MAX_KEPT {
            kept.push(std::mem::take(&mut self.body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_body_lends_its_buffer_to_the_next() {
        let spares = Spares::default();
        let mut first = spares.take(2 << 20);
        first.resize(2 << 20, 1);
        let ptr = first.as_ptr();
        let lent = bytes::Bytes::from_owner(spares.lend(first));
        let slice = lent.slice(10..20);
        drop(lent);
        assert!(
            spares.take(2 << 20).capacity() == 0,
            "still in use by a slice"
        );
        drop(slice);
        let again = spares.take(1 << 20);
        assert_eq!(again.as_ptr(), ptr, "the same buffer");
        assert!(spares.take(1 << 20).capacity() == 0, "taken once");
    }

    #[test]
    fn small_bodies_and_too_many_buffers_are_not_kept() {
        let spares = Spares::default();
        drop(spares.lend(vec![0u8; 1000]));
        assert_eq!(spares.take(1 << 20).capacity(), 0);
        for _ in 0..5 {
            drop(spares.lend(Vec::with_capacity(1 << 20)));
        }
        assert_eq!(spares.kept.lock().unwrap().len(), KEEP);
    }
}
