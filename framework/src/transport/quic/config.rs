//! The settings of QUIC connections.

use std::time::Duration;

use quinn::VarInt;

/// Settings of QUIC connections, the same for listeners and clients; the
/// last three (address validation, the handshake cap and the handshake
/// timeout) are a listener's defences against floods of connection
/// attempts and clients ignore them.
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
    /// Listener only: when a client must first prove, with a Retry, that
    /// it receives what is sent to its address. Until then QUIC lets a
    /// server send an address three times what came from it, so without a
    /// Retry anyone spoofing a victim's address reflects about 3x the
    /// traffic at it; a Retry is a tenth of the Initial that asked for it,
    /// and no connection state is kept for the address until it answers.
    /// A Retry costs a new connection one round trip (on loopback, tens of
    /// microseconds). Default [`AddressValidation::Always`].
    pub address_validation: AddressValidation,
    /// Listener only: how many handshakes may be under way at once. A
    /// connection attempt beyond them is ignored (nothing is sent back, as
    /// a full TCP backlog drops a SYN) and the client sends its Initial
    /// again on its own timer, so a burst of genuine clients only waits.
    /// Each handshake under way holds about 150 KiB with the default
    /// `max_streams` (quinn sets up every stream the peer may open), so the
    /// default bounds them at about 40 MiB. Default 256.
    pub max_handshakes: usize,
    /// Listener only: how many of those may come from one IP address at
    /// once, so that one host (whose address a Retry validated: it cannot
    /// be spoofed) cannot take every handshake slot; attempts past it are
    /// ignored until one of that address's handshakes ends. Default 32.
    pub max_handshakes_per_address: usize,
    /// Listener only: how long a handshake may take, from the client's
    /// first packet (after any Retry) to a connection. A handshake the
    /// client abandoned is dropped after this long, and its state with it.
    /// Default 5 s.
    pub handshake_timeout: Duration,
}

/// When a QUIC listener makes a client prove its address with a Retry
/// before it starts a handshake ([`QuicConfig::address_validation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressValidation {
    /// Every client whose address is not yet validated: an address that
    /// has not shown it receives what is sent to it is never sent more
    /// than a Retry, about 0.1x the bytes it sent. Each new connection
    /// costs one more round trip.
    Always,
    /// Only while more than this many handshakes are under way: a first
    /// connection is a round trip faster while the listener is quiet, but
    /// the first handshakes of a flood from spoofed addresses reflect up to
    /// QUIC's 3x at their victims.
    WhenBusy {
        /// Handshakes under way above which clients are sent a Retry.
        handshakes: usize,
    },
    /// Never: QUIC's own limit of three times the bytes received applies
    /// to unvalidated addresses.
    Never,
}

impl AddressValidation {
    /// Whether a client whose address is not validated gets a Retry while
    /// `handshakes` are under way.
    pub(super) fn retry(self, handshakes: usize) -> bool {
        match self {
            Self::Always => true,
            Self::WhenBusy { handshakes: above } => handshakes > above,
            Self::Never => false,
        }
    }
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Some(Duration::from_secs(3)),
            stream_window: 16 << 20,
            address_validation: AddressValidation::Always,
            max_handshakes: 256,
            max_handshakes_per_address: 32,
            handshake_timeout: Duration::from_secs(5),
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
    /// `max_handshakes` or `max_handshakes_per_address` is 0: no client
    /// could ever connect.
    #[error(
        "max_handshakes or max_handshakes_per_address is 0: no client could connect; allow at \
         least 1"
    )]
    NoHandshakes,
    /// `handshake_timeout` is 0: every handshake would time out.
    #[error("handshake_timeout is 0: every handshake would time out; use a few seconds")]
    NoHandshakeTime,
}

impl QuicConfig {
    /// Checks the listener-only settings.
    pub(super) fn check_listener(&self) -> Result<(), ConfigError> {
        if self.max_handshakes == 0 || self.max_handshakes_per_address == 0 {
            return Err(ConfigError::NoHandshakes);
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::NoHandshakeTime);
        }
        Ok(())
    }

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
        assert_eq!(QuicConfig::default().check_listener(), Ok(()));
        let no_handshakes = QuicConfig {
            max_handshakes: 0,
            ..QuicConfig::default()
        };
        assert_eq!(
            no_handshakes.check_listener(),
            Err(ConfigError::NoHandshakes)
        );
        let no_time = QuicConfig {
            handshake_timeout: Duration::ZERO,
            ..QuicConfig::default()
        };
        assert_eq!(no_time.check_listener(), Err(ConfigError::NoHandshakeTime));
    }

    #[test]
    fn retry_is_asked_for_as_configured() {
        assert!(AddressValidation::Always.retry(0));
        assert!(!AddressValidation::Never.retry(usize::MAX));
        let busy = AddressValidation::WhenBusy { handshakes: 8 };
        assert!(!busy.retry(8));
        assert!(busy.retry(9));
    }
}
