//! A graceful shutdown that begins while the server is sending a reply
//! still drains the connection: the driver used to miss the change of
//! phase that the reply's send had seen, and waited out the whole grace
//! period with a live client attached.

use std::time::Duration;

use switchyard::transport::memory;
use switchyard::{Channel, Code, Server};

/// Never answers: its calls end at their deadline.
#[switchyard::service]
pub trait Stall {
    /// Waits forever.
    async fn stall(&self) -> u64;
}

struct Stalling;

impl Stall for Stalling {
    async fn stall(&self) -> u64 {
        std::future::pending::<()>().await;
        0
    }
}

#[tokio::test]
async fn a_shutdown_that_begins_while_a_reply_is_sent_still_drains() {
    // The client's deadline and the server's end the call together: the
    // server is sending its DEADLINE_EXCEEDED reply when shutdown begins.
    for round in 0..5 {
        let server = Server::builder()
            .add_service(StallServer::new(Stalling))
            .no_unix()
            .unpublished()
            .message_queues(false)
            .grace_period(Duration::from_secs(120))
            .start()
            .await
            .unwrap();
        let (client_end, server_end) = memory::pair();
        server.serve_link(server_end);
        let channel = Channel::builder().connect_link(client_end).await.unwrap();
        let client = StallClient::new(channel);
        let err = client
            .with_timeout(Duration::from_millis(100))
            .stall()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        // The client stays connected: only the server's drain ends it.
        let drained = tokio::time::timeout(Duration::from_secs(30), server.shutdown()).await;
        assert!(
            drained.is_ok(),
            "round {round}: the shutdown waited for its 120 s grace period with no call in flight"
        );
        drop(client);
    }
}
