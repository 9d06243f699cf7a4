//! Response metadata over an in-memory link: set by a handler (or a task it
//! hands its context to), read by the caller, with a result or an error;
//! and what happens at the client's frame limit.

use std::time::Duration;

use switchyard::client::with_response_metadata;
use switchyard::transport::memory;
use switchyard::{Channel, Code, Context, Server, Status};

/// Answers with metadata.
#[switchyard::service]
pub trait Tagged {
    /// `len` bytes, tagged with `served-by`.
    async fn blob(&self, len: u32) -> Vec<u8>;
    /// Fails with Aborted, tagged with a `len`-byte `detail`.
    async fn refuse(&self, len: u32) -> Result<(), Status>;
    /// Tags from a task the handler spawned with a clone of its context.
    async fn delegated(&self) -> u32;
}

struct Impl;

fn ctx() -> Context {
    Context::current().expect("inside a handler")
}

impl Tagged for Impl {
    async fn blob(&self, len: u32) -> Vec<u8> {
        ctx()
            .set_response_metadata("served-by", "replica-2")
            .unwrap();
        vec![7; len as usize]
    }

    async fn refuse(&self, len: u32) -> Result<(), Status> {
        ctx()
            .set_response_metadata("detail", vec![b'x'; len as usize])
            .unwrap();
        Err(Status::aborted("refused, as asked"))
    }

    async fn delegated(&self) -> u32 {
        let ctx = ctx();
        tokio::spawn(async move {
            ctx.set_response_metadata("from", "a spawned task").unwrap();
        })
        .await
        .unwrap();
        1
    }
}

/// A client whose frame limit is `limit`.
async fn client(limit: u32) -> (switchyard::ServerHandle, TaggedClient) {
    let server = Server::builder()
        .add_service(TaggedServer::new(Impl))
        .no_unix()
        .unpublished()
        .start()
        .await
        .unwrap();
    let (client_end, server_end) = memory::pair();
    server.serve_link(server_end);
    let channel = Channel::builder()
        .max_frame(limit)
        .timeout(Duration::from_secs(20))
        .connect_link(client_end)
        .await
        .unwrap();
    (server, TaggedClient::new(channel))
}

#[tokio::test]
async fn metadata_comes_back_with_a_result_and_with_an_error() {
    let (server, client) = client(1 << 20).await;
    let (blob, metadata) = with_response_metadata(client.blob(100)).await;
    assert_eq!(blob.unwrap().len(), 100);
    assert_eq!(metadata.get_str("served-by"), Some("replica-2"));
    let (refused, metadata) = with_response_metadata(client.refuse(10)).await;
    assert_eq!(refused.unwrap_err().code(), Code::Aborted);
    assert_eq!(metadata.get("detail"), Some(&[b'x'; 10][..]));
    let (one, metadata) = with_response_metadata(client.delegated()).await;
    assert_eq!(one.unwrap(), 1);
    assert_eq!(metadata.get_str("from"), Some("a spawned task"));
    // Several calls in one capture: the last one's.
    let (_, metadata) = with_response_metadata(async {
        client.blob(1).await.unwrap();
        client.refuse(3).await.unwrap_err();
    })
    .await;
    assert_eq!(metadata.get("detail"), Some(&b"xxx"[..]));
    assert_eq!(metadata.get("served-by"), None);
    // Outside a capture the call works the same.
    assert_eq!(client.blob(5).await.unwrap().len(), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn at_the_client_limit_the_status_wins_over_the_metadata() {
    let limit = 64 << 10;
    let (server, client) = client(limit).await;
    // An error whose metadata would pass the client's limit: the status
    // arrives, without the metadata.
    let (refused, metadata) = with_response_metadata(client.refuse(limit)).await;
    let status = refused.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status}");
    assert!(metadata.is_empty(), "{metadata:?}");
    // A result over the limit is refused as written; its metadata then
    // comes with the ResourceExhausted status.
    let (blob, metadata) = with_response_metadata(client.blob(limit)).await;
    let status = blob.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert_eq!(metadata.get_str("served-by"), Some("replica-2"));
    // The connection goes on.
    assert_eq!(client.blob(10).await.unwrap().len(), 10);
    server.shutdown().await;
}
