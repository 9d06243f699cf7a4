//! The introspection model offered as a switchyard service, callable over any
//! transport, as gRPC's channelz is a gRPC service. Every server adds it
//! unless built with [`ServerBuilder::introspection(false)`](crate::ServerBuilder::introspection);
//! `switchyard inspect <name or url>` is its client.

use super::model::Snapshot;

/// Reads a process's introspection model.
#[switchyard_macros::service(name = "SwitchyardIntrospection")]
pub trait Introspection {
    /// The model as it stands now.
    async fn snapshot(&self) -> Snapshot;
}

/// The implementation servers add: answers with [`super::snapshot`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessIntrospection;

impl Introspection for ProcessIntrospection {
    async fn snapshot(&self) -> Snapshot {
        super::snapshot()
    }
}
