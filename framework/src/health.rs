//! The health service every server answers, as gRPC servers answer
//! `grpc.health.v1.Health`: [`check`](Health::check) says whether a service
//! serves now, [`watch`](Health::watch) streams its status as it changes.
//!
//! The application marks a service NOT_SERVING through the
//! [`HealthReporter`] of its [`ServerHandle`](crate::ServerHandle) (say,
//! while a database it needs is down) and SERVING again after. A server
//! that begins to shut down reports every service NOT_SERVING first and
//! ends every watch, so watchers move on before its GoAway and no watch
//! holds the drain up. The empty name `""` stands for the server as a
//! whole. Layers do not run for it, as for the introspection service:
//! health is what balancers and orchestrators probe without credentials.
//! Turn it off with [`ServerBuilder::health`](crate::ServerBuilder::health).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Status, Streaming};

/// Whether a service serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServingStatus {
    /// It takes calls.
    Serving,
    /// It does not now: pick another replica.
    NotServing,
}

/// The health of a server's services.
#[switchyard_macros::service(name = "SwitchyardHealth")]
pub trait Health {
    /// The status of `service` now (`""`: the server as a whole);
    /// NOT_FOUND for a service this server does not serve.
    async fn check(&self, service: String) -> Result<ServingStatus, Status>;
    /// The status of `service` now, then each change, until the call ends
    /// or the server shuts down (its last message is then NOT_SERVING);
    /// NOT_FOUND for a service this server does not serve.
    async fn watch(&self, service: String) -> Streaming<ServingStatus>;
}

/// Sets the health a server reports. Cheap to clone; from
/// [`ServerHandle::health`](crate::ServerHandle::health).
#[derive(Clone, Debug)]
pub struct HealthReporter {
    statuses: Arc<Mutex<BTreeMap<String, watch::Sender<ServingStatus>>>>,
}

impl HealthReporter {
    /// A reporter of `services` (and `""`), all serving.
    pub(crate) fn new(services: &[String]) -> Self {
        let statuses = std::iter::once(String::new())
            .chain(services.iter().cloned())
            .map(|name| (name, watch::Sender::new(ServingStatus::Serving)))
            .collect();
        Self {
            statuses: Arc::new(Mutex::new(statuses)),
        }
    }

    /// Reports `service` (`""`: the whole server) as `status`; watchers see
    /// the change. NOT_FOUND for a service this server does not serve, or
    /// once it is shutting down.
    pub fn set(&self, service: &str, status: ServingStatus) -> Result<(), Status> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = statuses.get(service) else {
            return Err(self.unknown(&statuses, service));
        };
        sender.send_if_modified(|now| std::mem::replace(now, status) != status);
        Ok(())
    }

    /// Reports `service` serving.
    pub fn set_serving(&self, service: &str) -> Result<(), Status> {
        self.set(service, ServingStatus::Serving)
    }

    /// Reports `service` not serving.
    pub fn set_not_serving(&self, service: &str) -> Result<(), Status> {
        self.set(service, ServingStatus::NotServing)
    }

    /// What `service` reports now; `None` if this server does not serve it
    /// (or is shutting down).
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        statuses.get(service).map(|sender| *sender.borrow())
    }

    /// The server begins to shut down: every service reports NOT_SERVING,
    /// and then every watch ends.
    pub(crate) fn shutting_down(&self) {
        let statuses =
            std::mem::take(&mut *self.statuses.lock().unwrap_or_else(PoisonError::into_inner));
        for sender in statuses.values() {
            sender.send_replace(ServingStatus::NotServing);
        }
        // Dropping the senders ends the watches once they took the last
        // status.
        drop(statuses);
    }

    fn subscribe(&self, service: &str) -> Result<watch::Receiver<ServingStatus>, Status> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        match statuses.get(service) {
            Some(sender) => Ok(sender.subscribe()),
            None => Err(self.unknown(&statuses, service)),
        }
    }

    fn unknown(
        &self,
        statuses: &BTreeMap<String, watch::Sender<ServingStatus>>,
        service: &str,
    ) -> Status {
        if statuses.is_empty() {
            return Status::not_found(format!(
                "this server is shutting down: {service:?} is not served any more; call another \
                 replica"
            ));
        }
        let served: Vec<&str> = statuses
            .keys()
            .filter(|name| !name.is_empty())
            .map(String::as_str)
            .collect();
        Status::not_found(format!(
            "this server does not serve {service:?}; it serves {} (\"\" asks about the server as \
             a whole)",
            served.join(", ")
        ))
    }
}

/// The health service a server adds, answering from its reporter.
#[derive(Clone, Debug)]
pub(crate) struct HealthService {
    pub(crate) reporter: HealthReporter,
}

impl Health for HealthService {
    async fn check(&self, service: String) -> Result<ServingStatus, Status> {
        let statuses = self
            .reporter
            .statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match statuses.get(&service) {
            Some(sender) => Ok(*sender.borrow()),
            None if statuses.is_empty() => Ok(ServingStatus::NotServing),
            None => Err(self.reporter.unknown(&statuses, &service)),
        }
    }

    async fn watch(&self, service: String) -> Streaming<ServingStatus> {
        let receiver = match self.reporter.subscribe(&service) {
            Ok(receiver) => receiver,
            Err(status) => return Streaming::failed(status),
        };
        let updates =
            futures_util::stream::unfold((receiver, true), |(mut receiver, first)| async move {
                if !first && receiver.changed().await.is_err() {
                    return None;
                }
                let now = *receiver.borrow_and_update();
                Some((now, (receiver, false)))
            });
        Streaming::new(updates.boxed())
    }
}
