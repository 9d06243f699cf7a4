//! [`Endpoint`], [`EndpointError`] and [`PipeSide`] (defined, with the URL
//! grammar, in [`protocol::endpoint`](crate::protocol::endpoint), where the
//! hello that carries endpoints can use them without the runtime), and the
//! transport each endpoint names.

pub use crate::protocol::endpoint::{Endpoint, EndpointError, PipeSide};

use super::Transport;

impl Endpoint {
    /// The transport that reaches it.
    pub fn transport(&self) -> Transport {
        match self {
            Self::Unix(_) => Transport::Unix,
            Self::Tcp(_) => Transport::Tcp,
            Self::Quic { .. } => Transport::Quic,
            Self::Shm(_) => Transport::Shm,
            Self::MessageQueue(_) => Transport::MessageQueue,
            Self::Pipe { .. } => Transport::Pipe,
            Self::Memory => Transport::Memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_names_its_transport() {
        let quic: Endpoint = format!("quic://h:1?pin={}", "AB:".repeat(31) + "AB")
            .parse()
            .unwrap();
        assert_eq!(quic.transport(), Transport::Quic);
        for (url, transport) in [
            ("unix:///s", Transport::Unix),
            ("tcp://h:1", Transport::Tcp),
            ("shm:///s", Transport::Shm),
            ("mqueue:///q", Transport::MessageQueue),
            ("pipe://parent/1", Transport::Pipe),
            ("memory://", Transport::Memory),
        ] {
            assert_eq!(url.parse::<Endpoint>().unwrap().transport(), transport);
        }
    }
}
