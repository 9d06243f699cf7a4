//! The acceptance suite: gRPC's unary interop cases, ported to switchyard,
//! written once (`acceptance/cases.rs`) and run on every transport against
//! a server in another process (`switchyard_integration_tests::acceptance`).
//! A failure names the transport and the case: `tcp::large_unary`.
//!
//! `cargo test -p switchyard-integration-tests --test acceptance` runs it;
//! add `quic::` (or any transport's name) to run one transport.
#![cfg(target_os = "linux")]

#[path = "acceptance/cases.rs"]
mod cases;
#[path = "acceptance/layers.rs"]
mod layers;
#[path = "acceptance/streaming.rs"]
mod streaming;

use std::time::Duration;

/// The watchdog of every test: a hang fails instead of blocking the run.
const LIMIT: Duration = Duration::from_secs(120);

/// One `#[tokio::test]` per case, in a module named after the transport.
macro_rules! suite {
    ($module:ident, $transport:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    switchyard_integration_tests::within(
                        super::LIMIT,
                        super::cases::$case($transport),
                    )
                    .await;
                }
            )*
        }
    };
}

/// gRPC's streaming cases, in a module `<transport>_streams`.
macro_rules! streaming_suite {
    ($module:ident, $transport:expr) => {
        mod $module {
            streaming_suite!(@cases $transport, [
                server_streaming,
                client_streaming,
                ping_pong,
                empty_stream,
                cancel_after_first_response,
                timeout_on_sleeping_server_stream,
                custom_metadata_stream,
                status_code_and_message_stream,
            ]);
        }
    };
    (@cases $transport:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                switchyard_integration_tests::within(
                    super::LIMIT,
                    super::streaming::$case($transport),
                )
                .await;
            }
        )*
    };
}

streaming_suite!(pipe_streams, ::switchyard::Transport::Pipe);
streaming_suite!(shm_streams, ::switchyard::Transport::Shm);
streaming_suite!(mmap_streams, ::switchyard::Transport::Mmap);
streaming_suite!(unix_streams, ::switchyard::Transport::Unix);
streaming_suite!(tcp_streams, ::switchyard::Transport::Tcp);
streaming_suite!(quic_streams, ::switchyard::Transport::Quic);

/// Layers across processes, in a module `<transport>_layers`.
macro_rules! layers_suite {
    ($module:ident, $transport:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    switchyard_integration_tests::within(
                        super::LIMIT,
                        super::layers::$case($transport),
                    )
                    .await;
                }
            )*
        }
    };
}

layers_suite!(
    pipe_layers,
    ::switchyard::Transport::Pipe,
    [bearer_token_required]
);
layers_suite!(
    shm_layers,
    ::switchyard::Transport::Shm,
    [bearer_token_required]
);
layers_suite!(
    mmap_layers,
    ::switchyard::Transport::Mmap,
    [bearer_token_required]
);
layers_suite!(
    unix_layers,
    ::switchyard::Transport::Unix,
    [bearer_token_required]
);
layers_suite!(
    tcp_layers,
    ::switchyard::Transport::Tcp,
    [bearer_token_required]
);
layers_suite!(
    quic_layers,
    ::switchyard::Transport::Quic,
    [bearer_token_required]
);
layers_suite!(
    mqueue_layers,
    ::switchyard::Transport::MessageQueue,
    [bearer_token_required_oneway]
);

/// The cases every connection-based transport runs. `graceful_shutdown`
/// and the order of one-way calls are listed per transport.
macro_rules! connection_suite {
    ($module:ident, $transport:expr $(, $extra:ident)* $(,)?) => {
        suite!($module, $transport, [
            empty_unary,
            large_unary,
            concurrent_large_unary,
            very_large_request,
            very_large_response,
            status_code_and_message,
            special_status_message,
            unimplemented_method,
            unimplemented_service,
            custom_metadata,
            cancel_after_begin,
            timeout_on_sleeping_server,
            deadline_not_exceeded,
            deadline_in_past,
            max_request_size_at_limit,
            max_request_size_over_limit,
            max_response_size_at_limit,
            max_response_size_over_limit,
            rpc_soak,
            channel_soak,
            oneway_special_message,
            oneway_large,
            $($extra,)*
        ]);
    };
}

// No `graceful_shutdown` over pipes: a peer link has no drain (no GoAway);
// `ChildProcess::shutdown` closes the pipes at once and fails the calls in
// flight. See docs/reliability.md, "Acceptance suite".
connection_suite!(pipe, ::switchyard::Transport::Pipe, oneway_in_order);
connection_suite!(
    shm,
    ::switchyard::Transport::Shm,
    oneway_in_order,
    graceful_shutdown
);
connection_suite!(
    mmap,
    ::switchyard::Transport::Mmap,
    oneway_in_order,
    graceful_shutdown
);
connection_suite!(
    unix,
    ::switchyard::Transport::Unix,
    oneway_in_order,
    graceful_shutdown
);
connection_suite!(
    tcp,
    ::switchyard::Transport::Tcp,
    oneway_in_order,
    graceful_shutdown
);
// QUIC gives each one-way call a stream of its own: calls may overtake
// each other (by design, docs/architecture.md "QUIC"), so its one-way case
// checks exactly-once delivery instead of order.
connection_suite!(
    quic,
    ::switchyard::Transport::Quic,
    oneway_exactly_once,
    graceful_shutdown
);
// Message queues carry one-way calls only.
suite!(
    mqueue,
    ::switchyard::Transport::MessageQueue,
    [oneway_in_order, oneway_special_message, oneway_large]
);
