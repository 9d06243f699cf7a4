//! The settings of QUIC connections.

use std::time::Duration;

use quinn::VarInt;

/// Settings of QUIC connections, the same for listeners and clients.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicConfig {
    /// How many calls the peer may have in flight at once on a connection
    /// (each is a stream); one more waits until one ends. Default 1024.
    pub max_streams: u32,
    /// How long a connection may go without hearing from the peer before it
    /// is considered dead. Also bounds the handshake, and how long a closed
    /// link waits for the peer to take what it sent. This is how a peer that
    /// died without a word (SIGKILL, a pulled cable) is noticed: UDP has no
    /// reset, so calls on such a connection fail with Unavailable after this
    /// long, or by their deadline if that comes first. The smaller of the
    /// two sides' values applies. Default 10 s.
    pub idle_timeout: Duration,
    /// How often to send a keep-alive on a connection that is otherwise
    /// quiet, so that the idle timeout only catches dead peers; `None`
    /// sends none. Keep it well under the idle timeout. Default 3 s.
    pub keep_alive: Option<Duration>,
    /// How many bytes of one stream may be in flight before the reader has
    /// taken them. A frame up to this size is handed to QUIC at once, so
    /// frames of other calls sent behind it go out beside it instead of
    /// after it. Default 16 MiB (the default frame limit).
    pub stream_window: u32,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Some(Duration::from_secs(3)),
            stream_window: 16 << 20,
        }
    }
}

/// Why a [`QuicConfig`] cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_streams` is 0: no call could ever start.
    #[error("max_streams is 0: no call could start; allow at least 1")]
    NoStreams,
    /// The idle timeout does not fit QUIC's encoding.
    #[error("idle_timeout {0:?} is too long for QUIC; use a few seconds to a few minutes")]
    IdleTimeout(Duration),
    /// `stream_window` is 0.
    #[error("stream_window is 0: no byte could be sent; use at least the frame limit")]
    NoWindow,
}

impl QuicConfig {
    pub(super) fn transport(&self) -> Result<quinn::TransportConfig, ConfigError> {
        if self.max_streams == 0 {
            return Err(ConfigError::NoStreams);
        }
        if self.stream_window == 0 {
            return Err(ConfigError::NoWindow);
        }
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| ConfigError::IdleTimeout(self.idle_timeout))?;
        let window = u64::from(self.stream_window);
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams))
            // The peer's control stream.
            .max_concurrent_uni_streams(VarInt::from_u32(1))
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .stream_receive_window(VarInt::from_u32(self.stream_window))
            .receive_window(VarInt::from_u64(4 * window).unwrap_or(VarInt::MAX))
            .send_window(2 * window);
        Ok(transport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_settings_are_refused_with_a_reason() {
        assert!(QuicConfig::default().transport().is_ok());
        let config = |config: QuicConfig| config.transport().err();
        let no_streams = QuicConfig {
            max_streams: 0,
            ..QuicConfig::default()
        };
        assert_eq!(config(no_streams), Some(ConfigError::NoStreams));
        let no_window = QuicConfig {
            stream_window: 0,
            ..QuicConfig::default()
        };
        assert_eq!(config(no_window), Some(ConfigError::NoWindow));
        let forever = QuicConfig {
            idle_timeout: Duration::MAX,
            ..QuicConfig::default()
        };
        let err = forever.transport().unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }
}
