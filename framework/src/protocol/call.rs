//! Call tables: the caller's pending calls and the server's calls in flight,
//! with deadlines and cancellation. Sans-IO: time comes in as `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::frame::Header;
use super::status::Status;

/// The deadline budget to put in a frame header: microseconds left until
/// `deadline` (at least 1), or 0 for no deadline.
///
/// A deadline at or before `now` is [`Code::DeadlineExceeded`](super::status::Code)
/// and the call must not be sent.
pub fn deadline_budget(now: Instant, deadline: Option<Instant>, what: &str) -> Result<u64, Status> {
    let Some(deadline) = deadline else {
        return Ok(0);
    };
    match deadline.checked_duration_since(now) {
        Some(left) if !left.is_zero() => {
            Ok(u64::try_from(left.as_micros()).unwrap_or(u64::MAX).max(1))
        }
        _ => Err(Status::deadline_exceeded(format!(
            "the deadline of {what} had already passed before it was sent \
             ({:?} ago); nothing was sent — give the call a later deadline",
            now.saturating_duration_since(deadline)
        ))),
    }
}

/// The deadline a receiver derives from a header's budget.
pub fn deadline_from_budget(now: Instant, deadline_us: u64) -> Option<Instant> {
    (deadline_us != 0).then(|| now + Duration::from_micros(deadline_us))
}

/// What [`ClientCalls::start`] assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartedCall {
    /// The call id to put in the request header.
    pub call_id: u64,
    /// The deadline budget to put in the request header.
    pub deadline_us: u64,
}

/// The caller's side: calls sent and not yet answered, each with a waiter `W`
/// (in the runtime, the sender half of a oneshot channel).
#[derive(Debug)]
pub struct ClientCalls<W> {
    next_id: u64,
    pending: HashMap<u64, W>,
    limit: usize,
    /// Why the connection closed: no call starts after that.
    closed: Option<Status>,
}

impl<W> ClientCalls<W> {
    /// A table that holds at most `limit` pending calls.
    pub fn new(limit: usize) -> Self {
        Self {
            next_id: 1,
            pending: HashMap::new(),
            limit,
            closed: None,
        }
    }

    /// Registers a call that expects a response.
    ///
    /// Fails without registering when the table was closed (with the status
    /// it was closed with: no response could ever come), the deadline has
    /// passed (DeadlineExceeded) or the table is full (ResourceExhausted);
    /// the waiter is handed back.
    pub fn start(
        &mut self,
        now: Instant,
        deadline: Option<Instant>,
        what: &str,
        waiter: W,
    ) -> Result<StartedCall, (Status, W)> {
        if let Some(status) = &self.closed {
            return Err((status.clone(), waiter));
        }
        let deadline_us = match deadline_budget(now, deadline, what) {
            Ok(budget) => budget,
            Err(status) => return Err((status, waiter)),
        };
        if self.pending.len() >= self.limit {
            return Err((
                Status::resource_exhausted(format!(
                    "{what} not sent: {} calls are already waiting on this connection, \
                     the client's limit; wait for some to finish or raise the limit",
                    self.pending.len()
                )),
                waiter,
            ));
        }
        let call_id = self.allocate_id();
        self.pending.insert(call_id, waiter);
        Ok(StartedCall {
            call_id,
            deadline_us,
        })
    }

    /// A fresh call id for a call that expects no response (one-way).
    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Takes the waiter of an answered call; `None` if the call is unknown
    /// (already cancelled or timed out, or a confused peer).
    pub fn complete(&mut self, call_id: u64) -> Option<W> {
        self.pending.remove(&call_id)
    }

    /// Takes the waiters of the pending calls whose ids are above `last`.
    pub fn take_above(&mut self, last: u64) -> Vec<(u64, W)> {
        let ids: Vec<u64> = self
            .pending
            .keys()
            .copied()
            .filter(|&id| id > last)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.pending.remove(&id).map(|w| (id, w)))
            .collect()
    }

    /// The waiter of a pending call.
    pub fn get(&self, call_id: u64) -> Option<&W> {
        self.pending.get(&call_id)
    }

    /// Forgets a call the caller gave up on; `true` if it was pending, in
    /// which case a Cancel frame should be sent.
    pub fn abandon(&mut self, call_id: u64) -> bool {
        self.pending.remove(&call_id).is_some()
    }

    /// Takes every waiter: the connection is gone.
    pub fn drain(&mut self) -> impl Iterator<Item = W> + '_ {
        self.pending.drain().map(|(_, waiter)| waiter)
    }

    /// Closes the table: every later [`start`](Self::start) fails with
    /// `status` (the first one given is kept), and every waiter is taken.
    /// Closing and starting under one lock is what keeps a call from
    /// slipping in after the drain and waiting for a response that cannot
    /// come.
    pub fn close(&mut self, status: Status) -> impl Iterator<Item = W> + '_ {
        self.closed.get_or_insert(status);
        self.drain()
    }

    /// Why the table was closed, if it was.
    pub fn closed(&self) -> Option<&Status> {
        self.closed.as_ref()
    }

    /// Calls waiting for a response.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no call is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// A call admitted by [`ServerCalls::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmittedCall {
    /// When the handler's time is up, if the caller set a deadline.
    pub deadline: Option<Instant>,
}

/// The server's side of one connection: calls being handled, each with a
/// handle `H` (in the runtime, what cancels the handler).
#[derive(Debug)]
pub struct ServerCalls<H> {
    in_flight: HashMap<u64, H>,
    limit: usize,
    /// The setting that raises the limit, for messages.
    knob: &'static str,
}

impl<H> ServerCalls<H> {
    /// A table that admits at most `limit` calls at once.
    pub fn new(limit: usize) -> Self {
        Self::with_knob(limit, "ServerBuilder::max_in_flight")
    }

    /// A table that admits at most `limit` calls at once, set by `knob`
    /// (named when a call is refused).
    pub fn with_knob(limit: usize, knob: &'static str) -> Self {
        Self {
            in_flight: HashMap::new(),
            limit,
            knob,
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Admits a request. ResourceExhausted beyond the limit, InvalidArgument
    /// for a call id already in flight; the call is then not registered and
    /// the error is the response to send.
    pub fn admit(
        &mut self,
        now: Instant,
        header: &Header,
        handle: H,
    ) -> Result<AdmittedCall, Status> {
        if self.in_flight.len() >= self.limit {
            return Err(Status::resource_exhausted(format!(
                "this connection already has {} calls in flight, the server's limit; \
                 retry after some finish, or raise it with {}",
                self.limit, self.knob
            )));
        }
        if self.in_flight.contains_key(&header.call_id) {
            return Err(Status::invalid_argument(format!(
                "call id {} is already in flight on this connection; a client must not reuse \
                 the id of an unfinished call",
                header.call_id
            )));
        }
        self.in_flight.insert(header.call_id, handle);
        Ok(AdmittedCall {
            deadline: deadline_from_budget(now, header.deadline_us),
        })
    }

    /// The handles of the calls in flight.
    pub fn iter(&self) -> impl Iterator<Item = &H> {
        self.in_flight.values()
    }

    /// The handle of a call in flight.
    pub fn get(&self, call_id: u64) -> Option<&H> {
        self.in_flight.get(&call_id)
    }

    /// Removes a finished call; `None` if it was cancelled meanwhile.
    pub fn finish(&mut self, call_id: u64) -> Option<H> {
        self.in_flight.remove(&call_id)
    }

    /// Removes a call the caller cancelled, returning its handle to cancel
    /// the handler with; `None` if it already finished.
    pub fn cancel(&mut self, call_id: u64) -> Option<H> {
        self.in_flight.remove(&call_id)
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::Kind;
    use crate::protocol::status::Code;

    #[test]
    fn budgets_count_down_and_past_deadlines_fail() {
        let now = Instant::now();
        assert_eq!(deadline_budget(now, None, "x").unwrap(), 0);
        let budget = deadline_budget(now, Some(now + Duration::from_millis(5)), "x").unwrap();
        assert_eq!(budget, 5_000);
        let err = deadline_budget(now, Some(now), "Calc.add").unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(err.message().contains("Calc.add"), "{err}");
        assert_eq!(
            deadline_budget(now, Some(now + Duration::from_nanos(10)), "x").unwrap(),
            1
        );
    }

    #[test]
    fn client_table_limits_and_hands_back_waiters() {
        let now = Instant::now();
        let mut calls = ClientCalls::new(1);
        let first = calls.start(now, None, "a", "w1").unwrap();
        let (status, waiter) = calls.start(now, None, "a", "w2").unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(waiter, "w2");
        assert_eq!(calls.complete(first.call_id), Some("w1"));
        assert_eq!(calls.complete(first.call_id), None);
        let second = calls.start(now, None, "a", "w3").unwrap();
        assert_ne!(second.call_id, first.call_id);
        assert!(calls.abandon(second.call_id));
        assert!(!calls.abandon(second.call_id));
    }

    #[test]
    fn server_table_limits_rejects_duplicates_and_sets_deadlines() {
        let now = Instant::now();
        let mut calls = ServerCalls::new(2);
        let mut header = Header::new(Kind::Request, 1);
        header.deadline_us = 2_000;
        let admitted = calls.admit(now, &header, 'a').unwrap();
        assert_eq!(admitted.deadline, Some(now + Duration::from_millis(2)));
        assert_eq!(
            calls.admit(now, &header, 'b').unwrap_err().code(),
            Code::InvalidArgument
        );
        header.call_id = 2;
        header.deadline_us = 0;
        assert_eq!(calls.admit(now, &header, 'c').unwrap().deadline, None);
        header.call_id = 3;
        assert_eq!(
            calls.admit(now, &header, 'd').unwrap_err().code(),
            Code::ResourceExhausted
        );
        assert_eq!(calls.cancel(1), Some('a'));
        assert_eq!(calls.finish(1), None);
        assert_eq!(calls.len(), 1);
    }
}
