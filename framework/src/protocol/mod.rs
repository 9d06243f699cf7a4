//! The switchyard wire protocol, sans-IO.
//!
//! Nothing here does I/O or knows tokio (as quinn-proto knows nothing of
//! quinn's sockets): bytes and the current time go in, frames, statuses and
//! deadlines come out. The runtime in [`client`](crate::client) and
//! [`server`](crate::server) drives it over a [`Link`](crate::transport::Link).
//!
//! Order of a connection: each side sends a [`Kind::Hello`](frame::Kind)
//! first and reads the peer's; then either side sends Request/OneWay frames
//! and answers Requests with a Response carrying the same call id. A caller
//! that gives up sends Cancel; a side that is shutting down sends GoAway.
//! See `docs/wire-protocol.md` for the byte-level description.

pub mod call;
pub mod compress;
pub mod endpoint;
pub mod frame;
pub mod hello;
pub mod metadata;
pub mod session;
pub mod status;

pub use call::{ClientCalls, ServerCalls};
pub use compress::{Compression, CompressionMode};
pub use endpoint::{Endpoint, EndpointError, PipeSide};
pub use frame::{Decoded, Frame, FrameDecoder, FrameError, Header, Kind};
pub use hello::{Hello, HelloError, HostIdentity, Locality, Role};
pub use metadata::{Metadata, MetadataError, MetadataLimits};
pub use status::{Code, Status};
