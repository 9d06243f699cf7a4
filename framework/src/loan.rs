//! [`Loan`]: room for a large body that the caller fills in place, so that
//! sending it copies nothing.
//!
//! Over shared memory a body over the bulk threshold goes through the
//! connection's pool: by default the encoder copies the argument's bytes
//! into it. A loan is room in that pool handed out first: the caller writes
//! the bytes there, freezes the loan into a [`Bytes`], and passes it as an
//! argument (or returns it from a handler). When the encoder meets those
//! bytes it writes the rest of the frame around them and the body is sent
//! from where it lies. By default the receiver still copies it out before
//! decoding it (a sender that writes after sending harms nothing); a
//! receiver that asked to read a trusted peer's bodies in place
//! (`shm_read_in_place`) does not.
//!
//! A loan works everywhere: where the connection has no pool (another
//! transport, a pool turned off or full now), it is an ordinary heap
//! buffer and the bytes are copied as any are. A loaned `Bytes` sent over
//! another connection, or a second time, is copied too. Its room is given
//! back once the `Bytes` (and its clones) are dropped and the peer has
//! taken the body: hold a loan only as long as it is needed. While loans
//! hold room, a body that finds the pool full is sent as a memfd of its
//! own rather than waiting for room only this side could free.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::payload::Bytes;
use crate::transport::bulk::SpillTo;
#[cfg(target_os = "linux")]
use crate::transport::shm::pool::PoolLoan;

/// Room for a large body, in the connection's shared-memory pool where it
/// has one (see the [module docs](self)). Derefs to `[u8]`, mutably: write
/// every byte (room in the pool is not zeroed: it holds what this side sent
/// the same peer before), then [`freeze`](Self::freeze) it.
pub struct Loan {
    inner: Inner,
}

enum Inner {
    Heap(Vec<u8>),
    #[cfg(target_os = "linux")]
    Pool(PoolLoan),
}

impl Loan {
    /// `len` bytes in the pool of the connection `spill` describes, else
    /// on the heap (zeroed).
    pub(crate) fn new(spill: Option<&SpillTo>, len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if let Some(loan) = spill
            .and_then(|spill| spill.pool.as_ref())
            .and_then(|pool| pool.loan(len))
        {
            return Self {
                inner: Inner::Pool(loan),
            };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = spill;
        Self {
            inner: Inner::Heap(vec![0; len]),
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.as_ref().len()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it is in a shared-memory pool (sending it over the
    /// connection it came from copies nothing), rather than on the heap.
    pub fn in_shared_memory(&self) -> bool {
        match &self.inner {
            Inner::Heap(_) => false,
            #[cfg(target_os = "linux")]
            Inner::Pool(_) => true,
        }
    }

    /// The bytes written, to pass as an argument or return as a result.
    pub fn freeze(self) -> Bytes {
        match self.inner {
            Inner::Heap(vec) => Bytes::from(vec),
            #[cfg(target_os = "linux")]
            Inner::Pool(loan) => Bytes::from_bytes(bytes::Bytes::from_owner(loan)),
        }
    }
}

impl Deref for Loan {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            Inner::Heap(vec) => vec,
            #[cfg(target_os = "linux")]
            Inner::Pool(loan) => loan.as_ref(),
        }
    }
}

impl DerefMut for Loan {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.inner {
            Inner::Heap(vec) => vec,
            #[cfg(target_os = "linux")]
            Inner::Pool(loan) => loan.as_mut_slice(),
        }
    }
}

impl AsRef<[u8]> for Loan {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for Loan {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for Loan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan")
            .field("len", &self.len())
            .field("in_shared_memory", &self.in_shared_memory())
            .finish()
    }
}
