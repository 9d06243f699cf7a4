//! What the debug views show of a test's own connections (`compression.rs`,
//! `loans.rs`).

use switchyard::Channel;
use switchyard::debug::ConnectionInfo;

/// The channel's open connection, as the debug views show it.
pub(crate) fn client_view(channel: &Channel) -> ConnectionInfo {
    let peer = channel.peer().addr;
    switchyard::debug::snapshot()
        .connections
        .into_iter()
        .find(|c| c.role == "client" && c.state == "open" && c.peer.addr == peer)
        .unwrap_or_else(|| panic!("no open client connection to {peer}"))
}
