//! Trace context carried in call metadata (W3C `traceparent`), so a call
//! chain can be followed across processes: a call made from inside a handler
//! continues the handler's trace; any other call starts a new one.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The metadata key trace context travels under.
pub const TRACEPARENT: &str = "traceparent";

/// A position in a trace: the trace and the span (one call) within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The whole chain of calls.
    pub trace_id: u128,
    /// This call.
    pub span_id: u64,
}

impl TraceContext {
    /// A new trace.
    pub fn root() -> Self {
        Self {
            trace_id: (u128::from(random()) << 64) | u128::from(random()),
            span_id: random(),
        }
    }

    /// A new call within the same trace.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: random(),
        }
    }

    /// Parses `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self { trace_id, span_id })
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

/// A non-zero pseudo-random u64 (xorshift64*, seeded per thread). Trace ids
/// need uniqueness, not secrecy.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d).max(1)
    })
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as u64;
    (nanos ^ (u64::from(std::process::id()) << 32) ^ addr.rotate_left(17)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let root = TraceContext::root();
        let text = root.to_string();
        assert_eq!(text.len(), 55);
        assert_eq!(TraceContext::parse(&text), Some(root));
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-zz000000000000000000000000000001-0000000000000001-01",
            "00-00000000000000000000000000000001-0000000000000001",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn roots_differ() {
        assert_ne!(TraceContext::root(), TraceContext::root());
    }
}
