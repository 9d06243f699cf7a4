//! The health service every server answers: `check` per service (and `""`
//! for the server as a whole), NOT_FOUND naming what is served; `watch`
//! streams the status as the application changes it through the server's
//! `HealthReporter`; a server that shuts down reports NOT_SERVING and ends
//! every watch, so none holds its drain up; layers do not guard it.

use std::time::Duration;

use futures_util::StreamExt;
use switchyard::health::{HealthClient, ServingStatus};
use switchyard::layers::RequireBearer;
use switchyard::{Channel, Code, Server, ServerHandle, Transport};

/// A service to report the health of.
#[switchyard::service]
pub trait Orders {
    /// `n + 1`.
    async fn next(&self, n: u64) -> u64;
}

struct Impl;

impl Orders for Impl {
    async fn next(&self, n: u64) -> u64 {
        n + 1
    }
}

async fn server(dir: &std::path::Path, name: &str) -> ServerHandle {
    Server::builder()
        .add_service(OrdersServer::new(Impl))
        .publish(name)
        .runtime_dir(dir)
        // A layer that refuses everything without a token: health still
        // answers.
        .layer(RequireBearer::new("secret"))
        .grace_period(Duration::from_secs(20))
        .start()
        .await
        .expect("server starts")
}

async fn health(dir: &std::path::Path, name: &str) -> HealthClient {
    let channel = Channel::builder()
        .runtime_dir(dir)
        .prefer(Transport::Unix)
        .connect(name)
        .await
        .expect("connects");
    HealthClient::new(channel)
}

/// The next message of `watch`, within 10 s.
async fn next(
    watch: &mut switchyard::Streaming<ServingStatus>,
) -> Option<Result<ServingStatus, switchyard::Status>> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a status within 10 s")
}

#[tokio::test]
async fn check_reports_each_service_and_names_what_is_served_when_asked_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "orders-check").await;
    let health = health(dir.path(), "orders-check").await;
    assert_eq!(
        health.check(String::new()).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health.check("Orders".into()).await.unwrap(),
        ServingStatus::Serving
    );
    let unknown = health.check("Payments".into()).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    assert!(
        unknown.message().contains("does not serve \"Payments\"")
            && unknown.message().contains("it serves Orders"),
        "{unknown}"
    );
    // The application takes a service out, and puts it back.
    let reporter = server.health();
    reporter.set_not_serving("Orders").unwrap();
    assert_eq!(reporter.status("Orders"), Some(ServingStatus::NotServing));
    assert_eq!(
        health.check("Orders".into()).await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(
        health.check(String::new()).await.unwrap(),
        ServingStatus::Serving
    );
    reporter.set_serving("Orders").unwrap();
    assert_eq!(
        health.check("Orders".into()).await.unwrap(),
        ServingStatus::Serving
    );
    let err = reporter.set_not_serving("Payments").unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.shutdown().await;
}

#[tokio::test]
async fn watch_streams_changes_and_a_shutdown_ends_it_with_not_serving_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "orders-watch").await;
    let health = health(dir.path(), "orders-watch").await;
    let mut watch = health.watch("Orders".into()).await.unwrap();
    assert_eq!(
        next(&mut watch).await.unwrap().unwrap(),
        ServingStatus::Serving
    );
    let reporter = server.health();
    reporter.set_not_serving("Orders").unwrap();
    // Setting what it already is sends nothing.
    reporter.set_not_serving("Orders").unwrap();
    assert_eq!(
        next(&mut watch).await.unwrap().unwrap(),
        ServingStatus::NotServing
    );
    reporter.set_serving("Orders").unwrap();
    assert_eq!(
        next(&mut watch).await.unwrap().unwrap(),
        ServingStatus::Serving
    );
    let unknown = health.watch("Payments".into()).await;
    let status = match unknown {
        Err(status) => status,
        Ok(mut stream) => next(&mut stream).await.unwrap().unwrap_err(),
    };
    assert_eq!(status.code(), Code::NotFound, "{status}");
    // Shutting down: the watcher hears NOT_SERVING, then its stream ends,
    // and the drain does not wait out the 20 s grace for it.
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    assert_eq!(
        next(&mut watch).await.unwrap().unwrap(),
        ServingStatus::NotServing
    );
    assert!(
        next(&mut watch).await.is_none(),
        "the watch ends after NOT_SERVING"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the shutdown is not held up by the watch")
        .unwrap();
    println!("shutdown with a watch open took {:?}", started.elapsed());
}

#[tokio::test]
async fn health_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::builder()
        .add_service(OrdersServer::new(Impl))
        .publish("orders-nohealth")
        .runtime_dir(dir.path())
        .health(false)
        .start()
        .await
        .unwrap();
    let health = health(dir.path(), "orders-nohealth").await;
    let err = health.check(String::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
}
