//! Dispatch by method id across every service a server hosts.

use std::collections::HashMap;
use std::sync::Arc;

use crate::descriptor::MethodDescriptor;
use crate::protocol::hello::ServiceInfo;
use crate::protocol::status::Status;
use crate::service::Service;

/// Method id → the service that handles it.
#[derive(Clone, Default)]
pub(crate) struct Router {
    routes: HashMap<u32, (Arc<dyn Service>, &'static MethodDescriptor)>,
    services: Vec<Arc<dyn Service>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.services.iter().map(|s| s.descriptor().name))
            .finish()
    }
}

impl Router {
    /// Adds a service; fails if its name or a method id is taken.
    pub(crate) fn add(&mut self, service: Arc<dyn Service>) -> Result<(), Status> {
        let descriptor = service.descriptor();
        if self
            .services
            .iter()
            .any(|s| s.descriptor().name == descriptor.name)
        {
            return Err(Status::already_exists(format!(
                "service {} was added twice; add each service once",
                descriptor.name
            )));
        }
        for method in descriptor.methods {
            if let Some((_, other)) = self.routes.get(&method.id) {
                return Err(Status::already_exists(format!(
                    "method ids collide: {} and {} both hash to {:#010x}; rename one of them",
                    other.full_name, method.full_name, method.id
                )));
            }
        }
        for method in descriptor.methods {
            self.routes
                .insert(method.id, (Arc::clone(&service), method));
        }
        self.services.push(service);
        Ok(())
    }

    /// The service and method for `id`.
    pub(crate) fn route(&self, id: u32) -> Option<&(Arc<dyn Service>, &'static MethodDescriptor)> {
        self.routes.get(&id)
    }

    /// The Unimplemented status for an unknown id.
    pub(crate) fn unknown(&self, id: u32) -> Status {
        Status::unimplemented(format!(
            "this server has no method with id {id:#010x}; it serves [{}] — the client was \
             probably built against another version of the trait",
            self.summary()
        ))
    }

    /// `Calculator (add, div), Echo (echo)`.
    pub(crate) fn summary(&self) -> String {
        self.services
            .iter()
            .map(|s| {
                let d = s.descriptor();
                let methods: Vec<_> = d.methods.iter().map(|m| m.name).collect();
                format!("{} ({})", d.name, methods.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every routed method: (id, service name, method name).
    pub(crate) fn methods(&self) -> impl Iterator<Item = (u32, &'static str, &'static str)> + '_ {
        self.routes
            .iter()
            .map(|(id, (_, m))| (*id, m.service, m.name))
    }

    /// Service names.
    pub(crate) fn names(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|s| s.descriptor().name.to_owned())
            .collect()
    }

    /// What the hello announces.
    pub(crate) fn infos(&self) -> Vec<ServiceInfo> {
        self.services
            .iter()
            .map(|s| ServiceInfo::from_descriptor(s.descriptor()))
            .collect()
    }
}
