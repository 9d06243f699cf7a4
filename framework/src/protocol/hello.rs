//! The handshake: each side's first frame is a [`Hello`] saying who it is
//! (host identity, process, limits) and what it serves.
//!
//! Wire form of the payload, all integers little endian, `str` = `u16` length
//! then UTF-8 bytes:
//!
//! ```text
//! u8  role (0 client, 1 server, 2 peer)
//! str boot id        str machine id      str hostname
//! u64 IPC namespace inode                u64 network namespace inode
//! u32 pid            u32 uid             str process name
//! u32 max frame body u32 max calls in flight
//! u16 service count, then per service:
//!     str name  u64 fingerprint  u16 method count, then per method:
//!         u32 id  u8 flags (bit 0: one-way)  str name  str signature  u64 fingerprint
//! u16 queue count (optional: absent in older hellos), then per queue:
//!     str service name  str POSIX message queue name
//! u16 endpoint count (optional), then per endpoint: str URL
//! u8  codecs the sender can read (optional, 0 if absent): bit 0 zstd
//! u8  features the sender reads (optional, 0 if absent): bit 1 batches of
//!     stream messages (FLAG_BATCH Data frames, one credit each); bit 0
//!     retired
//! ```
//!
//! Unknown trailing bytes are ignored, so later versions may append fields.
//! Each endpoint is an [`Endpoint`] URL, parsed as the hello is decoded; one
//! this version cannot parse (a transport of a newer peer) is skipped.

use super::endpoint::Endpoint;
use crate::descriptor::ServiceDescriptor;

/// Which end of a connection sent the hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that connected.
    Client,
    /// The side that accepted.
    Server,
    /// Either side of a link on which both ends serve and call (a pipe
    /// between a parent and its child).
    Peer,
}

/// Facts that tell whether two processes share a host, and how closely.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostIdentity {
    /// `/proc/sys/kernel/random/boot_id`: unique per boot of a kernel.
    pub boot_id: String,
    /// `/etc/machine-id`, empty if absent.
    pub machine_id: String,
    /// The host name.
    pub hostname: String,
    /// Inode of `/proc/self/ns/ipc`: equal means shared memory and POSIX
    /// queues are shared.
    pub ipc_ns: u64,
    /// Inode of `/proc/self/ns/net`: equal means the same network stack.
    pub net_ns: u64,
}

/// How two processes relate, judged from their [`HostIdentity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Locality {
    /// Same kernel and same IPC namespace: shared memory works.
    SameHostSameIpc,
    /// Same kernel, different IPC namespaces.
    SameHostOtherIpc,
    /// Different kernels (or unknown).
    OtherHost,
}

impl HostIdentity {
    /// How `self` relates to `peer`.
    pub fn locality(&self, peer: &Self) -> Locality {
        if self.boot_id.is_empty() || self.boot_id != peer.boot_id {
            Locality::OtherHost
        } else if self.ipc_ns != 0 && self.ipc_ns == peer.ipc_ns {
            Locality::SameHostSameIpc
        } else {
            Locality::SameHostOtherIpc
        }
    }
}

impl Locality {
    /// A sentence saying why, for selection reasons.
    pub fn describe(self) -> &'static str {
        match self {
            Self::SameHostSameIpc => "same host: boot id and IPC namespace match",
            Self::SameHostOtherIpc => "same host (boot id matches) but a different IPC namespace",
            Self::OtherHost => "another host: boot ids differ",
        }
    }
}

/// One method as a peer describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MethodInfo {
    /// Method id.
    pub id: u32,
    /// Whether the method is one-way.
    pub oneway: bool,
    /// Method name.
    pub name: String,
    /// Signature text, e.g. `add(i64,i64) -> i64`.
    pub signature: String,
    /// Fingerprint of the signature.
    pub fingerprint: u64,
}

/// One service as a peer describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// Fingerprint over all method signatures.
    pub fingerprint: u64,
    /// Methods.
    pub methods: Vec<MethodInfo>,
}

impl ServiceInfo {
    /// The wire description of a generated service.
    pub fn from_descriptor(descriptor: &ServiceDescriptor) -> Self {
        Self {
            name: descriptor.name.to_owned(),
            fingerprint: descriptor.fingerprint,
            methods: descriptor
                .methods
                .iter()
                .map(|m| MethodInfo {
                    id: m.id,
                    oneway: m.oneway,
                    name: m.name.to_owned(),
                    signature: m.signature.to_owned(),
                    fingerprint: m.fingerprint,
                })
                .collect(),
        }
    }
}

/// The handshake message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Which end sent it.
    pub role: Role,
    /// The sender's host.
    pub host: HostIdentity,
    /// The sender's process id.
    pub pid: u32,
    /// The sender's user id.
    pub uid: u32,
    /// The sender's process name.
    pub process_name: String,
    /// The largest frame body the sender accepts.
    pub max_frame: u32,
    /// How many calls the sender accepts in flight on this connection.
    pub max_in_flight: u32,
    /// What the sender serves.
    pub services: Vec<ServiceInfo>,
    /// POSIX message queues that take one-way calls: (service, queue name).
    pub queues: Vec<(String, String)>,
    /// Where the sender listens (`unix:///…`, `tcp://…`, `quic://…` on the
    /// wire): a client that reached a server on its own host over TCP moves
    /// to shared memory through its Unix socket. Decoding skips URLs this
    /// version cannot parse.
    pub endpoints: Vec<Endpoint>,
    /// The compression codecs the sender can read (a bit set of
    /// [`CODEC_ZSTD`](super::compress::CODEC_ZSTD)); 0 from a peer that
    /// predates compression, which is then sent nothing compressed.
    pub codecs: u8,
    /// The protocol features the sender reads (a bit set of
    /// [`FEATURE_BATCHES`]); 0 from a peer that predates them, which is
    /// then sent none of them.
    pub features: u8,
}

/// Hello feature: the sender reads Data frames that carry several messages
/// ([`FLAG_BATCH`](super::frame::FLAG_BATCH)), each batch spending one
/// credit. (Bit 0, 1, named batches whose credit counted their messages,
/// in a development build that never shipped: it is retired, and a peer
/// that lists only it is sent no batches.)
pub const FEATURE_BATCHES: u8 = 2;

/// The features this build reads.
pub const FEATURES: u8 = FEATURE_BATCHES;

/// Why a hello could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// The payload ended inside a field.
    #[error("hello ended at byte {at} inside the {field} field")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where the payload ended.
        at: usize,
    },
    /// A string field is not UTF-8.
    #[error("hello field {field} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// The role byte is neither 0 nor 1.
    #[error("hello role {found} is not 0 (client), 1 (server) or 2 (peer)")]
    BadRole {
        /// What was found.
        found: u8,
    },
}

impl Hello {
    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(match self.role {
            Role::Client => 0,
            Role::Server => 1,
            Role::Peer => 2,
        });
        put_str(out, &self.host.boot_id);
        put_str(out, &self.host.machine_id);
        put_str(out, &self.host.hostname);
        out.extend_from_slice(&self.host.ipc_ns.to_le_bytes());
        out.extend_from_slice(&self.host.net_ns.to_le_bytes());
        out.extend_from_slice(&self.pid.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        put_str(out, &self.process_name);
        out.extend_from_slice(&self.max_frame.to_le_bytes());
        out.extend_from_slice(&self.max_in_flight.to_le_bytes());
        put_u16_len(out, self.services.len());
        for service in &self.services {
            put_str(out, &service.name);
            out.extend_from_slice(&service.fingerprint.to_le_bytes());
            put_u16_len(out, service.methods.len());
            for method in &service.methods {
                out.extend_from_slice(&method.id.to_le_bytes());
                out.push(u8::from(method.oneway));
                put_str(out, &method.name);
                put_str(out, &method.signature);
                out.extend_from_slice(&method.fingerprint.to_le_bytes());
            }
        }
        put_u16_len(out, self.queues.len());
        for (service, queue) in &self.queues {
            put_str(out, service);
            put_str(out, queue);
        }
        put_u16_len(out, self.endpoints.len());
        for endpoint in &self.endpoints {
            put_str(out, &endpoint.to_string());
        }
        out.push(self.codecs);
        out.push(self.features);
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Self, HelloError> {
        let mut r = Reader { bytes, at: 0 };
        let role = match r.u8("role")? {
            0 => Role::Client,
            1 => Role::Server,
            2 => Role::Peer,
            found => return Err(HelloError::BadRole { found }),
        };
        let host = HostIdentity {
            boot_id: r.str("boot id")?,
            machine_id: r.str("machine id")?,
            hostname: r.str("hostname")?,
            ipc_ns: r.u64("ipc namespace")?,
            net_ns: r.u64("net namespace")?,
        };
        let pid = r.u32("pid")?;
        let uid = r.u32("uid")?;
        let process_name = r.str("process name")?;
        let max_frame = r.u32("max frame")?;
        let max_in_flight = r.u32("max in flight")?;
        let service_count = r.u16("service count")?;
        // Each service takes at least 12 bytes, so a count the payload
        // cannot hold fails on truncation before much is allocated.
        let mut services = Vec::with_capacity(usize::from(service_count).min(r.remaining() / 12));
        for _ in 0..service_count {
            let name = r.str("service name")?;
            let fingerprint = r.u64("service fingerprint")?;
            let method_count = r.u16("method count")?;
            let mut methods = Vec::with_capacity(usize::from(method_count).min(r.remaining() / 17));
            for _ in 0..method_count {
                let id = r.u32("method id")?;
                let oneway = r.u8("method flags")? & 1 == 1;
                methods.push(MethodInfo {
                    id,
                    oneway,
                    name: r.str("method name")?,
                    signature: r.str("method signature")?,
                    fingerprint: r.u64("method fingerprint")?,
                });
            }
            services.push(ServiceInfo {
                name,
                fingerprint,
                methods,
            });
        }
        // Optional trailing lists: an older peer ends before them.
        let mut queues = Vec::new();
        if r.remaining() >= 2 {
            let count = r.u16("queue count")?;
            for _ in 0..count {
                queues.push((r.str("queue service")?, r.str("queue name")?));
            }
        }
        let mut endpoints = Vec::new();
        let with_endpoints = r.remaining() >= 2;
        if with_endpoints {
            let count = r.u16("endpoint count")?;
            for _ in 0..count {
                // A newer peer may list transports this version does not
                // know: they are no use here, and no error.
                if let Ok(endpoint) = r.str("endpoint")?.parse() {
                    endpoints.push(endpoint);
                }
            }
        }
        // Only after the lists it follows: a hello that ends inside them
        // is an older one.
        let codecs = if with_endpoints && r.remaining() >= 1 {
            r.u8("codecs")?
        } else {
            0
        };
        let features = if with_endpoints && r.remaining() >= 1 {
            r.u8("features")?
        } else {
            0
        };
        Ok(Self {
            role,
            host,
            pid,
            uid,
            process_name,
            max_frame,
            max_in_flight,
            services,
            queues,
            endpoints,
            codecs,
            features,
        })
    }

    /// The message queue that takes one-way calls of `service`, if any.
    pub fn queue(&self, service: &str) -> Option<&str> {
        self.queues
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, q)| q.as_str())
    }

    /// The service named `name`, if the sender serves it.
    pub fn service(&self, name: &str) -> Option<&ServiceInfo> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn put_u16_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // Strings longer than u16::MAX are cut at a character boundary.
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    put_u16_len(out, end);
    out.extend_from_slice(&text.as_bytes()[..end]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], HelloError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(HelloError::Truncated { field, at: self.at });
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, HelloError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, HelloError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_le_bytes(word))
    }

    fn str(&mut self, field: &'static str) -> Result<String, HelloError> {
        let len = self.u16(field)?;
        let bytes = self.take(usize::from(len), field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| HelloError::NotUtf8 { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Hello {
        Hello {
            role: Role::Server,
            host: HostIdentity {
                boot_id: "b00t".into(),
                machine_id: "m".into(),
                hostname: "host-a".into(),
                ipc_ns: 4026531839,
                net_ns: 4026531840,
            },
            pid: 42,
            uid: 1000,
            process_name: "calc".into(),
            max_frame: 1 << 20,
            max_in_flight: 64,
            services: vec![ServiceInfo {
                name: "Calculator".into(),
                fingerprint: 7,
                methods: vec![MethodInfo {
                    id: 0xabc,
                    oneway: true,
                    name: "log".into(),
                    signature: "oneway log(String) -> ()".into(),
                    fingerprint: 9,
                }],
            }],
            queues: vec![("Calculator".into(), "/sy-1000-calculator".into())],
            endpoints: vec![
                Endpoint::Unix("/run/calculator.sock".into()),
                Endpoint::Tcp("127.0.0.1:7000".into()),
            ],
            codecs: crate::protocol::compress::CODEC_ZSTD,
            features: FEATURES,
        }
    }

    #[test]
    fn endpoints_travel_as_urls_and_unknown_ones_are_skipped() {
        let mut hello = sample();
        hello.endpoints.clear();
        let mut wire = Vec::new();
        hello.encode_into(&mut wire);
        // Replace the empty endpoint list (and the codecs and features)
        // with URLs, one of them unknown.
        wire.truncate(wire.len() - 4);
        put_u16_len(&mut wire, 3);
        for url in ["unix:///s.sock", "carrier-pigeon://roof", "tcp://h:1"] {
            put_str(&mut wire, url);
        }
        assert_eq!(
            Hello::decode(&wire).unwrap().endpoints,
            [
                Endpoint::Unix("/s.sock".into()),
                Endpoint::Tcp("h:1".into())
            ]
        );
        // What goes on the wire is the URL text.
        let mut sent = Vec::new();
        sample().encode_into(&mut sent);
        let tail = b"\x1b\x00unix:///run/calculator.sock\x14\x00tcp://127.0.0.1:7000\x01\x02";
        assert!(sent.ends_with(tail));
    }

    #[test]
    fn round_trips() {
        let hello = sample();
        let mut wire = Vec::new();
        hello.encode_into(&mut wire);
        assert_eq!(Hello::decode(&wire).unwrap(), hello);
        assert_eq!(hello.queue("Calculator"), Some("/sy-1000-calculator"));
        wire.extend_from_slice(b"future fields");
        assert_eq!(Hello::decode(&wire).unwrap(), hello);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut hello = sample();
        let mut wire = Vec::new();
        hello.encode_into(&mut wire);
        for cut in 0..wire.len() {
            // A hello cut exactly before an optional list is an older hello
            // without it (and without the lists after it).
            if let Ok(decoded) = Hello::decode(&wire[..cut]) {
                let without_features = Hello {
                    features: 0,
                    ..hello.clone()
                };
                let without_codecs = Hello {
                    codecs: 0,
                    ..without_features.clone()
                };
                let without_endpoints = Hello {
                    endpoints: Vec::new(),
                    ..without_codecs.clone()
                };
                let without_both = Hello {
                    queues: Vec::new(),
                    ..without_endpoints.clone()
                };
                assert!(
                    decoded == without_features
                        || decoded == without_codecs
                        || decoded == without_endpoints
                        || decoded == without_both,
                    "cut at {cut}: {decoded:?}"
                );
            }
        }
        hello.queues.clear();
        hello.endpoints.clear();
        hello.codecs = 0;
        hello.features = 0;
        // An older hello ends before both lists (two empty counts), the
        // codecs and the features.
        let mut older = Vec::new();
        hello.encode_into(&mut older);
        older.truncate(older.len() - 6);
        assert_eq!(Hello::decode(&older).unwrap(), hello);
        assert!(Hello::decode(&older[..older.len() - 1]).is_err());
    }

    #[test]
    fn huge_counts_do_not_preallocate() {
        let mut wire = Vec::new();
        let mut hello = sample();
        hello.services.clear();
        hello.queues.clear();
        hello.endpoints.clear();
        hello.encode_into(&mut wire);
        // The service count sits before the (empty) queue and endpoint
        // lists, the codecs byte and the features byte.
        let n = wire.len() - 6;
        wire[n - 2..n].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            Hello::decode(&wire),
            Err(HelloError::Truncated { .. })
        ));
    }

    #[test]
    fn locality_compares_boot_id_then_ipc_namespace() {
        let a = sample().host;
        let mut b = a.clone();
        assert_eq!(a.locality(&b), Locality::SameHostSameIpc);
        b.ipc_ns += 1;
        assert_eq!(a.locality(&b), Locality::SameHostOtherIpc);
        b.boot_id = "other".into();
        assert_eq!(a.locality(&b), Locality::OtherHost);
    }
}
