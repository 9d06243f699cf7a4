//! Static descriptions of services and methods, emitted by `#[switchyard::service]`.
//!
//! A descriptor is plain data: the runtime uses it to route calls, to compare
//! signatures with a peer during the handshake, and to show what a process
//! serves in its introspection output.

/// One method of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// The service's name, e.g. `Calculator`.
    pub service: &'static str,
    /// The method's name, e.g. `add`.
    pub name: &'static str,
    /// `Service.method`, the string the method id is hashed from.
    pub full_name: &'static str,
    /// The stable method id: 32-bit FNV-1a of [`full_name`](Self::full_name).
    pub id: u32,
    /// Whether the method is one-way (`#[switchyard(oneway)]`): no response
    /// is sent and the caller returns once the transport has the call.
    pub oneway: bool,
    /// For one-way methods, the message-queue priority
    /// (`#[switchyard(oneway, priority = N)]`, 0 to 32767; higher first).
    pub priority: u32,
    /// Whether an argument is a [`Streaming`](crate::streaming::Streaming):
    /// the caller sends a stream of messages after the other arguments.
    pub client_streaming: bool,
    /// Whether the result is a [`Streaming`](crate::streaming::Streaming):
    /// the callee answers with a stream of messages.
    pub server_streaming: bool,
    /// Whether this method's payloads (arguments, result, stream messages)
    /// may be compressed on links that compress; `#[switchyard(compress =
    /// false)]` turns it off for payloads that are already compressed
    /// (images, archives).
    pub compress: bool,
    /// `#[switchyard(idempotent)]`: making the call twice does no harm, so
    /// a channel retries it on a retryable failure
    /// ([`RetryPolicy`](crate::RetryPolicy)), on another replica when it
    /// has one.
    pub idempotent: bool,
    /// The signature as text, e.g. `add(i64, i64) -> i64`; shown in errors
    /// when client and server disagree.
    pub signature: &'static str,
    /// 64-bit FNV-1a of [`signature`](Self::signature).
    pub fingerprint: u64,
}

/// A service: its name, methods and a fingerprint over all signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// The service's name, by default the trait's name.
    pub name: &'static str,
    /// 64-bit FNV-1a over the signatures of all methods, in declaration order,
    /// joined with `;`.
    pub fingerprint: u64,
    /// The methods, in declaration order.
    pub methods: &'static [MethodDescriptor],
}

impl MethodDescriptor {
    /// The header flags its payloads carry: [`FLAG_INCOMPRESSIBLE`]
    /// when the method says they do not compress (`compress = false`).
    ///
    /// [`FLAG_INCOMPRESSIBLE`]: crate::protocol::frame::FLAG_INCOMPRESSIBLE
    pub const fn frame_flags(&self) -> u16 {
        if self.compress {
            0
        } else {
            crate::protocol::frame::FLAG_INCOMPRESSIBLE
        }
    }
}

impl ServiceDescriptor {
    /// The method with this id.
    pub fn method(&self, id: u32) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|method| method.id == id)
    }

    /// The method with this name.
    pub fn method_by_name(&self, name: &str) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|method| method.name == name)
    }
}

/// 32-bit FNV-1a: how method ids are derived from `Service.method`.
///
/// The same function is implemented in `switchyard-codegen`, which computes
/// ids at compile time; the wire protocol document specifies it for other
/// languages.
pub const fn method_id(full_name: &str) -> u32 {
    let bytes = full_name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// 64-bit FNV-1a: how signature fingerprints are derived.
pub const fn fingerprint(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_published_vectors() {
        // Test vectors from the FNV reference (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(method_id(""), 0x811c_9dc5);
        assert_eq!(method_id("a"), 0xe40c_292c);
        assert_eq!(method_id("foobar"), 0xbf9c_f968);
        assert_eq!(fingerprint(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fingerprint("foobar"), 0x8594_4171_f739_67e8);
    }
}
