//! The receiving half of every stream on a connection: how many more Data
//! frames the peer may send on each streaming call (the credit this side
//! granted and the peer has not used yet), and whether the caller has
//! half-closed. Sending credit is the runtime's: it learns of grants from
//! [`Event::StreamCredit`](super::Event::StreamCredit).
//!
//! Credit counts frames: a message of its own, or a batch of many small
//! ones ([`FLAG_BATCH`](crate::protocol::frame::FLAG_BATCH)), spends one.
//! A stream's receiver grants credit as its reader finishes frames, so a
//! reader that stops bounds what the peer can make this side hold at about
//! the window times the frame size (a large message, or a batch, which
//! senders keep to 16 KiB). A frame beyond the credit is a flow-control
//! violation: the connection ends with a GoAway naming it.

use std::collections::HashMap;

/// Whose call a stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Whose {
    /// A call this side made: the callee's messages come in.
    Ours,
    /// A call the peer made and this side serves: the caller's come in.
    Theirs,
}

/// The receiving state of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inbound {
    /// Data frames the peer may still send before it is granted more.
    credit: u32,
    /// Messages may still come: the caller has not half-closed (and, for
    /// a call that streams nothing this way, never opened).
    open: bool,
}

/// What a stream message that arrived means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Within the credit: hand it to the stream's reader.
    Accepted,
    /// No such stream (never opened, or already finished): dropped. A
    /// message that crossed the end of its call is ordinary.
    Unknown,
    /// The stream's messages ended (the caller half-closed, or the call
    /// streams nothing this way): that stream alone fails.
    AfterEnd,
    /// Beyond the credit granted: the peer broke flow control.
    OverCredit,
}

/// The streams of one connection, by whose call they belong to.
#[derive(Debug, Default)]
pub struct Streams {
    ours: HashMap<u64, Inbound>,
    theirs: HashMap<u64, Inbound>,
}

impl Streams {
    fn table(&mut self, whose: Whose) -> &mut HashMap<u64, Inbound> {
        match whose {
            Whose::Ours => &mut self.ours,
            Whose::Theirs => &mut self.theirs,
        }
    }

    /// Opens the receiving half of call `call_id`'s stream with `credit`
    /// granted at once; `receives`: the peer sends messages on it at all.
    pub fn open(&mut self, whose: Whose, call_id: u64, credit: u32, receives: bool) {
        self.table(whose).insert(
            call_id,
            Inbound {
                credit,
                open: receives,
            },
        );
    }

    /// A Data frame (one message, or a batch) arrived on `call_id`.
    pub fn arrive(&mut self, whose: Whose, call_id: u64) -> Arrival {
        let Some(stream) = self.table(whose).get_mut(&call_id) else {
            return Arrival::Unknown;
        };
        if !stream.open {
            return Arrival::AfterEnd;
        }
        match stream.credit.checked_sub(1) {
            Some(left) => {
                stream.credit = left;
                Arrival::Accepted
            }
            None => Arrival::OverCredit,
        }
    }

    /// The caller half-closed `call_id`; `false` if there is no such
    /// stream or it had already ended.
    pub fn end(&mut self, call_id: u64) -> bool {
        match self.theirs.get_mut(&call_id) {
            Some(stream) if stream.open => {
                stream.open = false;
                true
            }
            _ => false,
        }
    }

    /// This side grants `credit` more frames on `call_id`; `false` if
    /// the stream is gone (then nothing is to be sent).
    pub fn grant(&mut self, whose: Whose, call_id: u64, credit: u32) -> bool {
        match self.table(whose).get_mut(&call_id) {
            Some(stream) if stream.open => {
                stream.credit = stream.credit.saturating_add(credit);
                true
            }
            _ => false,
        }
    }

    /// Whether `call_id` has a stream.
    pub fn contains(&self, whose: Whose, call_id: u64) -> bool {
        match whose {
            Whose::Ours => self.ours.contains_key(&call_id),
            Whose::Theirs => self.theirs.contains_key(&call_id),
        }
    }

    /// The call ended: its stream goes.
    pub fn close(&mut self, whose: Whose, call_id: u64) {
        self.table(whose).remove(&call_id);
    }

    /// Every stream of this side's calls goes (the connection closed).
    pub fn close_ours(&mut self) {
        self.ours.clear();
    }

    /// Streams open: this side's calls', the peer's calls'.
    pub fn len(&self) -> (usize, usize) {
        (self.ours.len(), self.theirs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_spent_one_frame_at_a_time_and_granted_back() {
        let mut streams = Streams::default();
        streams.open(Whose::Theirs, 7, 2, true);
        assert_eq!(streams.arrive(Whose::Theirs, 7), Arrival::Accepted);
        assert_eq!(streams.arrive(Whose::Theirs, 7), Arrival::Accepted);
        assert_eq!(streams.arrive(Whose::Theirs, 7), Arrival::OverCredit);
        assert!(streams.grant(Whose::Theirs, 7, 1));
        assert_eq!(streams.arrive(Whose::Theirs, 7), Arrival::Accepted);
        assert_eq!(streams.arrive(Whose::Ours, 7), Arrival::Unknown);
        assert_eq!(streams.arrive(Whose::Theirs, 7), Arrival::OverCredit);
    }

    #[test]
    fn a_half_closed_stream_takes_no_more_messages_and_no_grants() {
        let mut streams = Streams::default();
        streams.open(Whose::Theirs, 1, 4, true);
        assert!(streams.end(1));
        assert!(!streams.end(1));
        assert_eq!(streams.arrive(Whose::Theirs, 1), Arrival::AfterEnd);
        assert!(!streams.grant(Whose::Theirs, 1, 4));
        streams.close(Whose::Theirs, 1);
        assert_eq!(streams.arrive(Whose::Theirs, 1), Arrival::Unknown);
        assert_eq!(streams.len(), (0, 0));
    }
}
