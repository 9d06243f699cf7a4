//! `name = "..."` and `crate = "..."`, a private trait, and a method named
//! like a generated local.

mod rpc {
    pub use switchyard::*;
}

#[switchyard::service(name = "HealthV1", crate = "crate::rpc")]
trait Health {
    async fn ping(&self);
    async fn check(&self, inner: String, method: u8, request: u8, args: u8) -> bool;
}

struct Always;

impl Health for Always {
    async fn ping(&self) {}
    async fn check(&self, _inner: String, _method: u8, _request: u8, _args: u8) -> bool {
        true
    }
}

fn main() {
    assert_eq!(HEALTH_DESCRIPTOR.name, "HealthV1");
    assert_eq!(HEALTH_DESCRIPTOR.methods[1].full_name, "HealthV1.check");
    let server: HealthServer<Always> = HealthServer::new(Always);
    let _ = rpc::__private::Service::descriptor(&server);
    let _client: fn(rpc::Channel) -> HealthClient = HealthClient::new;
}
