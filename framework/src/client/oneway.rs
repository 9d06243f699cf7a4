//! How one-way calls leave a client: through the server's POSIX message
//! queue when both processes share a host, an IPC namespace and a user
//! (the call then survives a server restart), else over the connection.
//! The choice is made once per service and kept, with its reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::debug::recorder::{MethodCounters, Side, recorder};
use crate::descriptor::ServiceDescriptor;
use crate::protocol::hello::Locality;
use crate::select::{
    self, Forced, OnewayFacts, OnewayTrack, OnewayVerdict, Rejection, Selection, Transport, select,
};

/// Where one-way calls to a service go.
#[derive(Clone, Debug)]
pub(crate) enum OnewayRoute {
    /// The server's queue.
    Queue(Arc<QueueRoute>),
    /// The connection, and why not a queue.
    Connection(Rejection),
}

/// An open queue and the counters of the methods sent through it.
#[derive(Debug)]
pub(crate) struct QueueRoute {
    #[cfg(target_os = "linux")]
    pub(crate) sender: crate::transport::mqueue::MqSender,
    pub(crate) name: String,
    counters: HashMap<u32, Arc<MethodCounters>>,
}

impl QueueRoute {
    /// The counters of method `id` over the queue.
    pub(crate) fn counters(&self, id: u32) -> Option<&Arc<MethodCounters>> {
        self.counters.get(&id)
    }

    /// The largest frame the queue takes.
    pub(crate) fn max_message(&self) -> usize {
        #[cfg(target_os = "linux")]
        {
            self.sender.max_message()
        }
        #[cfg(not(target_os = "linux"))]
        {
            0
        }
    }
}

/// The routes chosen so far, per service.
#[derive(Debug, Default)]
pub(crate) struct OnewayRoutes {
    routes: Mutex<HashMap<&'static str, OnewayRoute>>,
}

/// Facts about the server a route depends on.
#[derive(Clone, Debug)]
pub(crate) struct ServerFacts {
    /// Where it runs relative to us; `None` when no server is connected.
    pub(crate) locality: Option<Locality>,
    /// Its uid, as its hello says.
    pub(crate) uid: Option<u32>,
    /// The queue it announced for the service; or, with no server
    /// connected, the queue a server of this runtime directory would use.
    pub(crate) queue: Option<String>,
    /// The queue a server of this client's runtime directory would use
    /// (to say why, when the server announced none).
    pub(crate) expected: Option<String>,
}

impl OnewayRoutes {
    /// The route for `service`, deciding it on first use.
    pub(crate) fn route(
        &self,
        service: &'static ServiceDescriptor,
        facts: impl FnOnce() -> ServerFacts,
        forced: Option<Forced>,
    ) -> OnewayRoute {
        let mut routes = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        routes
            .entry(service.name)
            .or_insert_with(|| decide(service, facts(), forced))
            .clone()
    }

    /// Forgets the route of `service` (its queue was removed).
    pub(crate) fn forget(&self, service: &'static ServiceDescriptor) {
        let mut routes = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.remove(service.name);
    }
}

/// Gathers the facts (whether someone squats the expected queue name),
/// lets [`select`] decide ([`select::OnewayRoute`]), and opens the queue it
/// picks.
fn decide(
    service: &'static ServiceDescriptor,
    facts: ServerFacts,
    forced: Option<Forced>,
) -> OnewayRoute {
    let squatter = match facts.queue {
        Some(_) => None,
        None => facts.expected.as_deref().and_then(squatted),
    };
    let facts = OnewayFacts {
        service: service.name.to_owned(),
        has_oneway_methods: service.methods.iter().any(|m| m.oneway),
        locality: facts.locality,
        server_uid: facts.uid,
        own_uid: crate::sys::uid(),
        queue: facts.queue,
        squatter,
    };
    match select(select::OnewayRoute {
        facts: &facts,
        forced,
    }) {
        OnewayVerdict::Queue(name) => open(service, name),
        OnewayVerdict::Connection(why) => {
            if matches!(why, Rejection::QueueSquatted { .. }) {
                tracing::warn!(service = service.name, "one-way durability lost: {why}");
            }
            OnewayRoute::Connection(why)
        }
    }
}

#[cfg(target_os = "linux")]
fn open(service: &'static ServiceDescriptor, name: String) -> OnewayRoute {
    use crate::sys::mqueue::MqError;
    use crate::transport::mqueue::MqSender;

    match MqSender::open(&name) {
        Ok(sender) => {
            let counters = service
                .methods
                .iter()
                .filter(|m| m.oneway)
                .map(|m| {
                    let counters =
                        recorder().method(m.service, m.name, Transport::MessageQueue, Side::Client);
                    (m.id, counters)
                })
                .collect();
            OnewayRoute::Queue(Arc::new(QueueRoute {
                sender,
                name,
                counters,
            }))
        }
        Err(MqError::NotFound { .. }) => {
            OnewayRoute::Connection(Rejection::QueueNotKept { queue: name })
        }
        Err(err) => OnewayRoute::Connection(Rejection::QueueUnusable {
            queue: name,
            error: err.to_string(),
        }),
    }
}

/// If someone else holds the queue name `name`, what the queue error says.
#[cfg(target_os = "linux")]
fn squatted(name: &str) -> Option<String> {
    use crate::sys::mqueue::MqError;
    match crate::sys::mqueue::open_send(name) {
        Err(err @ (MqError::Foreign { .. } | MqError::PermissionDenied { .. })) => {
            Some(err.to_string())
        }
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn squatted(_name: &str) -> Option<String> {
    None
}

#[cfg(not(target_os = "linux"))]
fn open(_service: &'static ServiceDescriptor, _name: String) -> OnewayRoute {
    OnewayRoute::Connection(Rejection::QueuesUnsupported)
}

/// The selection one-way calls to a service get.
pub(crate) fn selection(route: &OnewayRoute, connection: Option<Transport>) -> Selection {
    let track = match route {
        OnewayRoute::Queue(queue) => OnewayTrack::Queue {
            name: &queue.name,
            max_message: queue.max_message(),
        },
        OnewayRoute::Connection(why) => OnewayTrack::Connection(why),
    };
    select(select::OnewaySelection { track, connection })
}
