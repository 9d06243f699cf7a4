//! Calls between real processes over Unix sockets and TCP: results, errors,
//! one-way calls, metadata, deadlines, concurrency on one connection.

use std::time::Duration;

use switchyard::{Channel, Code, Transport};
use switchyard_integration_tests::{ServerProcess, TestError, TestingClient, within};

const LIMIT: Duration = Duration::from_secs(30);

async fn clients(server: &ServerProcess) -> Vec<(Transport, TestingClient)> {
    let unix = Channel::connect(&server.endpoint("unix")).await.unwrap();
    // The server is on this host: without `prefer` the connection would
    // move to shared memory after the handshake.
    let tcp = Channel::builder()
        .prefer(Transport::Tcp)
        .connect(&server.endpoint("tcp"))
        .await
        .unwrap();
    vec![
        (Transport::Unix, TestingClient::new(unix)),
        (Transport::Tcp, TestingClient::new(tcp)),
    ]
}

#[tokio::test]
async fn unary_calls_return_values_and_typed_errors_on_unix_and_tcp() {
    let server = ServerProcess::start(&["--tcp"]);
    within(LIMIT, async {
        for (transport, client) in clients(&server).await {
            assert_eq!(client.selection().transport, transport);
            assert_eq!(client.add(2, 3).await.unwrap(), 5, "{transport}");
            assert_eq!(client.echo(Vec::new()).await.unwrap(), Vec::<u8>::new());
            let message = "tab\there\r\nnewline, BMP ✓, non-BMP 🚀".to_owned();
            assert_eq!(
                client.fail(message.clone()).await.unwrap(),
                Err(TestError { message }),
                "{transport}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn large_payloads_cross_intact() {
    let server = ServerProcess::start(&["--tcp"]);
    within(LIMIT, async {
        for (transport, client) in clients(&server).await {
            for len in [271_828usize, 314_159, 10 << 20] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
                let back = client.echo(payload.clone()).await.unwrap();
                assert!(back == payload, "{transport}: {len}-byte echo differs");
            }
            let got = client.payload(314_159).await.unwrap();
            assert_eq!(got.len(), 314_159);
            assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        }
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_calls_share_one_connection() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let mut tasks = Vec::new();
        for task in 0..32i64 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200i64 {
                    assert_eq!(client.add(task, i).await.unwrap(), task + i);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(client.requests_seen().await.unwrap(), 32 * 200);
    })
    .await;
}

#[tokio::test]
async fn oneway_calls_are_delivered_in_order() {
    let server = ServerProcess::start(&[]);
    let out = server.dir().join("record.txt");
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        for i in 0..100 {
            client
                .record(out.display().to_string(), format!("line {i}"))
                .await
                .unwrap();
        }
        // A unary call after them is handled after them on this connection's
        // reader, but one-way handlers may still be running: poll the file.
        client.add(0, 0).await.unwrap();
        let expected: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= 100 {
                assert_eq!(lines, expected);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn metadata_and_the_remaining_deadline_reach_the_handler() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let client = TestingClient::new(server.channel().await);
        let tagged = client
            .with_metadata("x-user", "ada")
            .with_metadata("x-bin", vec![0u8, 255]);
        assert_eq!(
            tagged.metadata("x-user".into()).await.unwrap().as_deref(),
            Some("ada")
        );
        assert_eq!(tagged.metadata("missing".into()).await.unwrap(), None);
        assert_eq!(client.deadline_left().await.unwrap(), None);
        let left = client
            .with_timeout(Duration::from_secs(10))
            .deadline_left()
            .await
            .unwrap()
            .expect("a deadline was set");
        assert!(left > 5_000 && left <= 10_000, "{left} ms left");
        let bad = client
            .with_metadata("bad key", "x")
            .add(1, 1)
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("metadata key"), "{bad}");
    })
    .await;
}

#[tokio::test]
async fn trace_context_and_deadlines_follow_a_call_chain_across_processes() {
    let front = ServerProcess::start(&[]);
    let back = ServerProcess::start(&["--tcp"]);
    within(LIMIT, async {
        let client = TestingClient::new(front.channel().await);
        let first = client
            .trace_id()
            .await
            .unwrap()
            .expect("every call carries a trace");
        let second = client.trace_id().await.unwrap().unwrap();
        assert_eq!(first.len(), 32);
        assert_ne!(
            first, second,
            "calls from outside a handler start new traces"
        );
        let (own, downstream, left) = client
            .with_timeout(Duration::from_secs(10))
            .forward(back.endpoint("tcp"))
            .await
            .unwrap();
        let own = own.expect("the front handler sees a trace");
        assert_eq!(
            downstream.as_deref(),
            Some(own.as_str()),
            "the chain keeps one trace id"
        );
        let left = left.expect("the downstream call inherits the deadline");
        assert!(left > 5_000 && left <= 10_000, "{left} ms left downstream");
    })
    .await;
}

#[tokio::test]
async fn a_channel_default_timeout_applies_to_every_call() {
    let server = ServerProcess::start(&[]);
    within(LIMIT, async {
        let channel = Channel::builder()
            .runtime_dir(server.dir())
            .timeout(Duration::from_millis(100))
            .connect("testing")
            .await
            .unwrap();
        let client = TestingClient::new(channel);
        let err = client.sleep(2_000).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(client.add(1, 2).await.unwrap(), 3);
    })
    .await;
}
