//! Credit a server's handlers give back for the messages they read: queued
//! here and handed to the connection's driver, which owns the session and
//! sends the Credit frames. The handlers run in the driver's own task, so
//! the wake-up this costs never crosses threads.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::Granter;

/// A connection's grants waiting for its driver.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    pending: Mutex<Vec<(u64, u32)>>,
    notify: Notify,
}

impl Grants {
    /// Queues `credit` for call `call_id` and wakes the driver.
    fn push(&self, call_id: u64, credit: u32) {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((call_id, credit));
        self.notify.notify_one();
    }

    /// Resolves when grants were queued since the last [`take`](Self::take).
    pub(crate) async fn queued(&self) {
        self.notify.notified().await;
    }

    /// The grants queued, oldest first.
    pub(crate) fn take(&self) -> Vec<(u64, u32)> {
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The granter of call `call_id`'s stream.
    pub(crate) fn granter(self: &Arc<Self>, call_id: u64) -> Arc<dyn Granter> {
        Arc::new(CallGrants {
            grants: Arc::clone(self),
            call_id,
        })
    }
}

struct CallGrants {
    grants: Arc<Grants>,
    call_id: u64,
}

impl Granter for CallGrants {
    fn grant(&self, credit: u32) {
        self.grants.push(self.call_id, credit);
    }
}
