//! How one-way calls leave a client: through the server's POSIX message
//! queue when both processes share a host, an IPC namespace and a user
//! (the call then survives a server restart), else over the connection.
//! The choice is made once per service and kept, with its reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::debug::recorder::{MethodCounters, Side, recorder};
use crate::descriptor::ServiceDescriptor;
use crate::protocol::hello::Locality;
use crate::select::{Forced, Selection, Transport};

/// Where one-way calls to a service go.
#[derive(Clone, Debug)]
pub(crate) enum OnewayRoute {
    /// The server's queue.
    Queue(Arc<QueueRoute>),
    /// The connection, and why not a queue.
    Connection(String),
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

fn decide(
    service: &'static ServiceDescriptor,
    facts: ServerFacts,
    forced: Option<Forced>,
) -> OnewayRoute {
    if let Some(f) = forced.filter(|f| f.transport != Transport::MessageQueue) {
        return OnewayRoute::Connection(format!(
            "{}={} keeps one-way calls on the connection",
            f.source, f.transport
        ));
    }
    if let Some(locality) = facts.locality.filter(|l| *l != Locality::SameHostSameIpc) {
        return OnewayRoute::Connection(format!(
            "{}: a message queue is shared only within one host's IPC namespace",
            locality.describe()
        ));
    }
    let uid = crate::sys::uid();
    if let Some(theirs) = facts.uid.filter(|theirs| *theirs != uid) {
        return OnewayRoute::Connection(format!(
            "the server runs as uid {theirs} and this process as uid {uid}; a queue is open \
             only to its owner"
        ));
    }
    let Some(name) = facts.queue else {
        if let Some(held) = facts.expected.as_deref().and_then(squatted) {
            let why = format!(
                "the server announced no message queue for {}: {held}; one-way calls go over \
                 the connection and are NOT kept if the server restarts",
                service.name
            );
            tracing::warn!(service = service.name, "one-way durability lost: {why}");
            return OnewayRoute::Connection(why);
        }
        return OnewayRoute::Connection(format!(
            "the server announced no message queue for {} (queues are off or unavailable there)",
            service.name
        ));
    };
    open(service, name)
}

#[cfg(target_os = "linux")]
fn open(service: &'static ServiceDescriptor, name: String) -> OnewayRoute {
    use crate::sys::mqueue::MqError;
    use crate::transport::mqueue::MqSender;

    if !service.methods.iter().any(|m| m.oneway) {
        return OnewayRoute::Connection(format!("{} has no one-way methods", service.name));
    }
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
        Err(MqError::NotFound { .. }) => OnewayRoute::Connection(format!(
            "the server keeps no queue {name} (message queues are off or unavailable there)"
        )),
        Err(err) => OnewayRoute::Connection(format!("the queue {name} is unusable: {err}")),
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
    OnewayRoute::Connection("POSIX message queues are not available on this platform".into())
}

/// The selection one-way calls to a service get.
pub(crate) fn selection(route: &OnewayRoute, connection: Option<Transport>) -> Selection {
    match route {
        OnewayRoute::Queue(queue) => Selection {
            transport: Transport::MessageQueue,
            reason: match connection {
                Some(_) => format!(
                    "same host, IPC namespace and user: the server's queue {} takes one-way \
                     calls (up to {} bytes each; larger ones go over the connection) and keeps \
                     them across a server restart",
                    queue.name,
                    queue.max_message()
                ),
                None => format!(
                    "no live server is reachable, but its queue {} is: one-way calls wait in \
                     the kernel until the server is back",
                    queue.name
                ),
            },
            rejected: connection
                .map(|t| {
                    vec![(
                        t,
                        "one-way calls need no response; the queue keeps them if the server \
                         restarts"
                            .to_owned(),
                    )]
                })
                .unwrap_or_default(),
        },
        OnewayRoute::Connection(why) => Selection {
            transport: connection.unwrap_or(Transport::Unix),
            reason: "one-way calls ride the connection".to_owned(),
            rejected: vec![(Transport::MessageQueue, why.clone())],
        },
    }
}
