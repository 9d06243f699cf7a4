//! Streams over the in-memory link, in one process: the three shapes,
//! flow control as a user sees it (a sender waits, `try_send` says
//! RESOURCE_EXHAUSTED), cancellation both ways, and what the debug
//! snapshot shows of streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use switchyard::transport::memory;
use switchyard::{Channel, Code, Server, Status, StreamSender, Streaming, Transport};

/// A service with a stream each way.
#[switchyard::service]
pub trait Numbers {
    /// `0..count`, one message each.
    async fn count(&self, count: u64) -> Streaming<u64>;
    /// The sum of the numbers sent.
    async fn sum(&self, numbers: Streaming<u64>) -> Result<u64, Status>;
    /// Each number doubled, as it comes.
    async fn double(&self, numbers: Streaming<u64>) -> Streaming<u64>;
    /// Sends through a channel of `capacity` until the stream is full
    /// (the caller reads nothing); the handler records how far it got.
    async fn flood(&self, capacity: u64) -> Streaming<u64>;
    /// Sends `before` numbers, then stops with FAILED_PRECONDITION.
    async fn stop_early(&self, before: u64) -> Streaming<u64>;
}

#[derive(Default)]
struct Impl {
    /// How many `flood` got into its stream before `try_send` refused.
    flooded: Arc<AtomicU64>,
    /// The status `try_send` refused with.
    refused: Arc<std::sync::Mutex<Option<Status>>>,
    /// Set when a `flood` handler's sender saw its stream gone.
    stream_gone: Arc<AtomicBool>,
}

impl Numbers for Impl {
    async fn count(&self, count: u64) -> Streaming<u64> {
        Streaming::from_iter(0..count)
    }

    async fn sum(&self, mut numbers: Streaming<u64>) -> Result<u64, Status> {
        let mut sum = 0;
        while let Some(n) = numbers.message().await? {
            sum += n;
        }
        Ok(sum)
    }

    async fn double(&self, numbers: Streaming<u64>) -> Streaming<u64> {
        Streaming::new(numbers.map(|n| n.map(|n| n * 2)))
    }

    async fn flood(&self, capacity: u64) -> Streaming<u64> {
        let (sender, stream): (StreamSender<u64>, _) = Streaming::channel(capacity as usize);
        let flooded = Arc::clone(&self.flooded);
        let refused = Arc::clone(&self.refused);
        let gone = Arc::clone(&self.stream_gone);
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                match sender.try_send(n) {
                    Ok(()) => n += 1,
                    Err(status) => {
                        flooded.store(n, Ordering::SeqCst);
                        *refused.lock().unwrap() = Some(status);
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
            // Then it waits; the call's cancel ends the wait.
            let _ = sender.send(u64::MAX).await;
            while !sender.is_closed() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            gone.store(true, Ordering::SeqCst);
        });
        stream
    }

    async fn stop_early(&self, before: u64) -> Streaming<u64> {
        let items = (0..before)
            .map(Ok)
            .chain(std::iter::once(Err(Status::failed_precondition(
                "stopped early",
            ))));
        Streaming::from_iter(items)
    }
}

async fn in_memory(window: u32) -> (switchyard::ServerHandle, Channel, Arc<Impl>) {
    let service = Arc::new(Impl::default());
    let server = Server::builder()
        .add_service(NumbersServer::from_arc(Arc::clone(&service)))
        .stream_window(window)
        .no_unix()
        .unpublished()
        .start()
        .await
        .unwrap();
    let (client_end, server_end) = memory::pair();
    server.serve_link(server_end);
    let channel = Channel::builder()
        .stream_window(window)
        .connect_link(client_end)
        .await
        .unwrap();
    assert_eq!(channel.selection().transport, Transport::Memory);
    (server, channel, service)
}

#[tokio::test]
async fn the_three_shapes_work_over_the_in_memory_link() {
    let (server, channel, _) = in_memory(4).await;
    let client = NumbersClient::new(channel);
    let counted: Vec<u64> = client
        .count(1_000)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(
        counted,
        (0..1_000).collect::<Vec<_>>(),
        "in order, all of them"
    );
    let sum = client
        .sum(futures_util::stream::iter(1..=100u64))
        .await
        .unwrap();
    assert_eq!(sum, 5_050);
    let doubled: Vec<u64> = client
        .double(futures_util::stream::iter(0..500u64))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(doubled, (0..500).map(|n| n * 2).collect::<Vec<_>>());
    server.shutdown().await;
}

#[tokio::test]
async fn a_reader_that_stops_holds_back_the_sender_and_try_send_says_resource_exhausted() {
    let (server, channel, service) = in_memory(4).await;
    let client = NumbersClient::new(channel);
    let stream = client.flood(8).await.unwrap();
    // The client reads nothing: the server may send the window (4 frames,
    // each a batch of the messages ready at the time), the channel holds
    // its capacity (8).
    let refused = async {
        loop {
            if let Some(status) = service.refused.lock().unwrap().clone() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("try_send refuses once the stream is full");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    let flooded = service.flooded.load(Ordering::SeqCst);
    println!("the handler got {flooded} messages into a stream nobody read (window 4, capacity 8)");
    assert!(
        (8..=4 + 8 + 1024).contains(&flooded),
        "bounded by window and capacity, got {flooded}"
    );
    // The snapshot shows the stream, stalled on credit.
    let snapshot = switchyard::debug::snapshot();
    let stalled: u64 = snapshot
        .connections
        .iter()
        .filter(|c| c.transport == "memory" && c.role == "server")
        .map(|c| c.streams.stalled)
        .sum();
    assert!(
        stalled >= 1,
        "the server's stream shows as stalled: {snapshot:?}"
    );
    // Dropping the stream cancels the call: the handler's sender sees
    // its stream gone.
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !service.stream_gone.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the cancel reaches the handler's stream");
    let metrics = switchyard::debug::render_prometheus(&switchyard::debug::snapshot());
    assert!(
        metrics
            .contains("switchyard_stream_messages_sent_total{service=\"Numbers\",method=\"flood\""),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_stops_early_ends_the_clients_stream_with_its_status() {
    let (server, channel, _) = in_memory(64).await;
    let client = NumbersClient::new(channel);
    let mut stream = client.stop_early(3).await.unwrap();
    for n in 0..3 {
        assert_eq!(stream.message().await.unwrap(), Some(n));
    }
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    assert!(status.message().contains("stopped early"), "{status}");
    assert_eq!(
        stream.message().await.unwrap(),
        None,
        "then the stream is over"
    );
    // Other calls on the connection go on.
    assert_eq!(
        client
            .sum(futures_util::stream::iter([1u64, 2]))
            .await
            .unwrap(),
        3
    );
    server.shutdown().await;
}
