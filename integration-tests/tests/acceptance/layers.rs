//! Layers across real processes, on every transport: a server that
//! requires a bearer token (`layers::RequireBearer`) refuses a client
//! without it or with another, over shared memory as over the network, and
//! serves one that sends it (`layers::Bearer`); unary, streaming and
//! one-way calls alike.

use switchyard::{Code, Transport};
use switchyard_integration_tests::TestingClient;
use switchyard_integration_tests::acceptance::Options;

use super::cases::{lines, start};

const TOKEN: &str = "acceptance-token-7f3a";

fn requiring() -> Options {
    Options {
        require_token: Some(TOKEN.to_owned()),
        ..Options::default()
    }
}

pub(crate) async fn bearer_token_required(transport: Transport) {
    let Some(harness) = start(transport, requiring()).await else {
        return;
    };
    // No token: refused, unary and streaming, whatever the transport.
    let client = harness.client();
    let err = client.add(2, 3).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{transport}: {err}");
    assert!(err.message().contains("needs a bearer token"), "{err}");
    let mut stream = client
        .streaming_output_call(vec![8, 8], 0, None)
        .await
        .unwrap();
    let err = stream.message().await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "{transport} stream: {err}"
    );
    // Another token: refused.
    let wrong = harness
        .fresh_channel_with(&Options {
            client_token: Some("not-the-token".to_owned()),
            ..requiring()
        })
        .await;
    let err = TestingClient::new(wrong.channel.clone())
        .add(2, 3)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{transport}: {err}");
    assert!(err.message().contains("not accepted"), "{err}");
    // The token: served.
    let right = harness
        .fresh_channel_with(&Options {
            client_token: Some(TOKEN.to_owned()),
            ..requiring()
        })
        .await;
    let client = TestingClient::new(right.channel.clone());
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    let mut stream = client
        .streaming_output_call(vec![8, 8], 0, None)
        .await
        .unwrap();
    let mut got = 0;
    while let Some(message) = stream.message().await.unwrap() {
        assert_eq!(message.len(), 8);
        got += 1;
    }
    assert_eq!(got, 2, "{transport}: the stream came whole");
    drop((wrong, right));
    harness.stop().await;
}

/// One-way calls through a message queue: the server drops the one without
/// the token (no caller waits for an answer) and takes the one with it.
pub(crate) async fn bearer_token_required_oneway(transport: Transport) {
    let Some(harness) = start(transport, requiring()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("record.txt");
    let path = out.display().to_string();
    harness
        .client()
        .record(path.clone(), "without a token".into())
        .await
        .unwrap();
    let right = harness
        .fresh_channel_with(&Options {
            client_token: Some(TOKEN.to_owned()),
            ..requiring()
        })
        .await;
    TestingClient::new(right.channel.clone())
        .record(path.clone(), "with the token".into())
        .await
        .unwrap();
    // In order: once the second is written, the first was handled.
    let got = lines(&out, 1).await;
    assert_eq!(got, ["with the token"], "{transport}");
    drop(right);
    harness.stop().await;
}
