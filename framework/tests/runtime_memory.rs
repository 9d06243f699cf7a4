//! The runtime end to end over an in-memory link, in one process: several
//! services on one server and one connection, and the static guarantees
//! (Send, Sync, Clone) of the public types.

use std::time::Duration;

use switchyard::transport::memory;
use switchyard::{Channel, Code, Server, Transport};

/// A greeting service.
#[switchyard::service]
pub trait Greeter {
    /// Greets.
    async fn hello(&self, name: String) -> String;
}

/// A counting service.
#[switchyard::service]
pub trait Counter {
    /// Adds `by` and returns the new total.
    async fn bump(&self, by: u64) -> u64;
}

struct English;

impl Greeter for English {
    async fn hello(&self, name: String) -> String {
        let transport = switchyard::Context::current()
            .map(|ctx| ctx.transport().to_string())
            .unwrap_or_default();
        format!("hello, {name} (over {transport})")
    }
}

#[derive(Default)]
struct Total(std::sync::atomic::AtomicU64);

impl Counter for Total {
    async fn bump(&self, by: u64) -> u64 {
        self.0.fetch_add(by, std::sync::atomic::Ordering::SeqCst) + by
    }
}

async fn in_memory() -> (switchyard::ServerHandle, Channel) {
    let server = Server::builder()
        .add_service(GreeterServer::new(English))
        .add_service(CounterServer::new(Total::default()))
        .no_unix()
        .unpublished()
        .start()
        .await
        .unwrap();
    let (client_end, server_end) = memory::pair();
    server.serve_link(server_end);
    let channel = Channel::builder().connect_link(client_end).await.unwrap();
    (server, channel)
}

#[tokio::test]
async fn two_services_share_one_server_and_one_connection() {
    let (server, channel) = in_memory().await;
    assert_eq!(channel.selection().transport, Transport::Memory);
    let greeter = GreeterClient::new(channel.clone());
    let counter = CounterClient::new(channel.clone());
    assert_eq!(
        greeter.hello("ada".into()).await.unwrap(),
        "hello, ada (over memory)"
    );
    assert_eq!(counter.bump(2).await.unwrap(), 2);
    assert_eq!(counter.bump(3).await.unwrap(), 5);
    assert!(channel.serves(&GREETER_DESCRIPTOR) && channel.serves(&COUNTER_DESCRIPTOR));
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown completes");
    let err = counter.bump(1).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[tokio::test]
async fn adding_a_service_twice_is_refused() {
    let err = Server::builder()
        .add_service(CounterServer::new(Total::default()))
        .add_service(CounterServer::new(Total::default()))
        .no_unix()
        .unpublished()
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("Counter"), "{err}");
}

fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
fn assert_send<T: Send>(_: &T) {}

#[test]
fn public_types_are_send_sync_and_clone() {
    assert_send_sync_clone::<Channel>();
    assert_send_sync_clone::<GreeterClient>();
    assert_send_sync_clone::<GreeterServer<English>>();
    assert_send_sync_clone::<switchyard::Status>();
    assert_send_sync_clone::<switchyard::Selection>();
    assert_send_sync_clone::<switchyard::Context>();
}

#[tokio::test]
async fn call_futures_are_send() {
    let (_server, channel) = in_memory().await;
    let greeter = GreeterClient::new(channel);
    let call = greeter.hello("x".into());
    assert_send(&call);
    drop(call);
    let spawned = tokio::spawn(async move { greeter.hello("spawned".into()).await });
    assert!(
        spawned
            .await
            .unwrap()
            .unwrap()
            .starts_with("hello, spawned")
    );
}
