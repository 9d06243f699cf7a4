//! The harness of the acceptance suite (`tests/acceptance.rs`): a server
//! of `Testing` reached over one chosen transport, a connected client, more
//! channels on demand, and a way to stop the server gracefully. Every case
//! is written once against [`Harness`] and run for every transport.
//!
//! | transport | server | client |
//! |---|---|---|
//! | pipe | a `pipe-child worker` spawned with `process::Spawner` | the child's channel |
//! | shm | a `test-server` process, bulk regions off | by name, shm demanded |
//! | mmap | a `test-server` process, bulk threshold 4 KiB both ways | by name, shm demanded |
//! | unix | a `test-server` process | its `unix://` endpoint |
//! | tcp | a `test-server --tcp` process | its `tcp://` endpoint, tcp demanded |
//! | quic | a `test-server --quic` process | [`connect_quic`] |
//! | mqueue | a `test-server --queues` process | by name; one-way calls take the queue |
//!
//! Dropping a harness kills what it started.

use std::time::{Duration, Instant};

use switchyard::process::{ChildProcess, Spawner};
use switchyard::{Channel, ChannelBuilder, Status, Transport};

use crate::{ServerProcess, TESTING_DESCRIPTOR, TestingClient, test_server_exe};

/// The bulk threshold of the `mmap` harness, on both sides: every body
/// over 4 KiB crosses as a mapped region.
pub const MMAP_THRESHOLD: usize = 4 * 1024;

/// A bulk threshold no body reaches: the `shm` harness keeps every body in
/// the ring (which then has to wrap for anything over its 1 MiB).
const NEVER: u64 = 1 << 40;

/// How a case wants the server and the client set up.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The server's frame limit: the largest request body it takes.
    /// Not settable for `pipe` (the child uses the default); see
    /// [`Harness::server_frame_limit`].
    pub server_max_frame: Option<u32>,
    /// The client's frame limit: the largest response body it takes.
    pub client_max_frame: Option<u32>,
    /// How long a graceful shutdown waits for calls in flight.
    pub grace: Option<Duration>,
    /// The bearer token the server requires (`layers::RequireBearer`).
    pub require_token: Option<String>,
    /// The bearer token the client sends (`layers::Bearer`).
    pub client_token: Option<String>,
}

/// The server side of a harness.
#[derive(Debug)]
enum Side {
    Process(ServerProcess),
    Child(ChildProcess),
}

/// A running server reached over one transport, and a client of it.
#[derive(Debug)]
pub struct Harness {
    transport: Transport,
    options: Options,
    side: Side,
    channel: Channel,
}

/// A channel made by [`Harness::fresh_channel`]; for `pipe` it owns the
/// child it talks to, killed when this is dropped.
#[derive(Debug)]
pub struct Fresh {
    /// The new channel.
    pub channel: Channel,
    _child: Option<ChildProcess>,
}

impl Harness {
    /// Starts a server for `transport` and connects a client, or returns
    /// why this machine cannot run it (the caller prints it and skips).
    pub async fn start(transport: Transport, options: Options) -> Result<Self, String> {
        if transport == Transport::MessageQueue
            && let Err(err) = switchyard::transport::mqueue::limits()
        {
            return Err(format!("POSIX message queues are not available ({err})"));
        }
        let side = match transport {
            Transport::Pipe => Side::Child(spawn_child(&options).await?),
            _ => {
                let mut args: Vec<String> = Vec::new();
                match transport {
                    Transport::Tcp => args.push("--tcp".into()),
                    Transport::Quic => args.extend(["--quic".into(), "127.0.0.1:0".into()]),
                    Transport::MessageQueue => args.push("--queues".into()),
                    Transport::Shm => {
                        args.extend(["--bulk-threshold".into(), NEVER.to_string()]);
                    }
                    Transport::Mmap => {
                        args.extend(["--bulk-threshold".into(), MMAP_THRESHOLD.to_string()]);
                    }
                    _ => {}
                }
                if let Some(limit) = options.server_max_frame {
                    args.extend(["--max-frame".into(), limit.to_string()]);
                }
                if let Some(grace) = options.grace {
                    args.extend(["--grace-ms".into(), grace.as_millis().to_string()]);
                }
                if let Some(token) = &options.require_token {
                    args.extend(["--require-token".into(), token.clone()]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Side::Process(ServerProcess::start(&args))
            }
        };
        let channel = match &side {
            Side::Child(child) => child.channel(),
            Side::Process(server) => connect(transport, &options, server)
                .await
                .map_err(|status| format!("connecting over {transport} failed: {status}"))?,
        };
        let harness = Self {
            transport,
            options,
            side,
            channel,
        };
        harness.check_selection(&harness.channel);
        Ok(harness)
    }

    /// The transport under test.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// A client on the harness's channel.
    pub fn client(&self) -> TestingClient {
        TestingClient::new(self.channel.clone())
    }

    /// The harness's channel.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A new connection to the server (for `pipe`, a new child: a pipe
    /// connects only a parent and the child it spawned).
    pub async fn fresh_channel(&self) -> Fresh {
        self.fresh_channel_with(&self.options).await
    }

    /// [`fresh_channel`](Self::fresh_channel) with the client set up by
    /// `options` (its token, its frame limit; for `pipe`, the new child's
    /// server side too).
    pub async fn fresh_channel_with(&self, options: &Options) -> Fresh {
        let fresh = match &self.side {
            Side::Child(_) => {
                let child = spawn_child(options).await.expect("spawn a child");
                Fresh {
                    channel: child.channel(),
                    _child: Some(child),
                }
            }
            Side::Process(server) => Fresh {
                channel: connect(self.transport, options, server)
                    .await
                    .unwrap_or_else(|status| panic!("connect over {}: {status}", self.transport)),
                _child: None,
            },
        };
        self.check_selection(&fresh.channel);
        fresh
    }

    /// The largest request body the server takes.
    pub fn server_frame_limit(&self) -> u32 {
        match (&self.side, self.options.server_max_frame) {
            (Side::Process(_), Some(limit)) => limit,
            _ => switchyard::protocol::frame::DEFAULT_FRAME_LIMIT,
        }
    }

    /// Whether bodies over [`MMAP_THRESHOLD`] must cross as mapped regions.
    pub fn expects_bulk(&self) -> bool {
        self.transport == Transport::Mmap
    }

    /// Starts a graceful shutdown of the server (SIGTERM to its process),
    /// or says why this transport has none.
    pub fn begin_shutdown(&self) -> Result<(), String> {
        match &self.side {
            Side::Process(server) => {
                server.signal_terminate();
                Ok(())
            }
            // `ChildProcess::shutdown` closes the pipes at once, failing
            // calls in flight: peer links have no drain (no GoAway).
            Side::Child(_) => Err("a pipe peer link has no graceful drain".into()),
        }
    }

    /// Waits until the server's process has exited.
    pub async fn wait_stopped(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let exited = match &mut self.side {
                Side::Process(server) => server.try_wait().is_some(),
                Side::Child(child) => child.exit_status().is_some(),
            };
            if exited {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Stops the server gracefully if it can, else kills it.
    pub async fn stop(mut self) {
        if self.begin_shutdown().is_ok() && self.wait_stopped(Duration::from_secs(10)).await {
            return;
        }
        if let Side::Process(server) = &mut self.side {
            server.kill();
        }
    }

    /// Checks that `channel` runs over the transport under test (a case must
    /// not pass over another one by a silent fallback).
    fn check_selection(&self, channel: &Channel) {
        let expected = match self.transport {
            Transport::Mmap | Transport::MessageQueue => Transport::Shm,
            other => other,
        };
        let selection = channel.selection();
        assert_eq!(
            selection.transport, expected,
            "this run is about {}, but the connection took another transport: {selection}",
            self.transport
        );
        if self.transport == Transport::MessageQueue {
            let oneway = channel.oneway_selection(&TESTING_DESCRIPTOR);
            assert_eq!(
                oneway.transport,
                Transport::MessageQueue,
                "one-way calls do not take the queue: {oneway}"
            );
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Side::Child(child) = &self.side {
            child.kill();
        }
        // A `ServerProcess` kills itself when dropped.
    }
}

/// Spawns `pipe-child worker`.
async fn spawn_child(options: &Options) -> Result<ChildProcess, String> {
    let exe = test_server_exe().with_file_name("pipe-child");
    let mut command = std::process::Command::new(exe);
    match &options.require_token {
        Some(token) => command.args(["worker-token", token]),
        None => command.arg("worker"),
    };
    let mut settings = ChannelBuilder::new();
    if let Some(limit) = options.client_max_frame {
        settings = settings.max_frame(limit);
    }
    if let Some(token) = &options.client_token {
        settings = settings.layer(switchyard::layers::Bearer::new(token));
    }
    Spawner::new(command)
        .channel_settings(settings)
        .spawn()
        .await
        .map_err(|status| format!("spawning pipe-child failed: {status}"))
}

/// A new channel to `server` over `transport`.
async fn connect(
    transport: Transport,
    options: &Options,
    server: &ServerProcess,
) -> Result<Channel, Status> {
    let mut builder = Channel::builder();
    if let Some(limit) = options.client_max_frame {
        builder = builder.max_frame(limit);
    }
    if let Some(token) = &options.client_token {
        builder = builder.layer(switchyard::layers::Bearer::new(token));
    }
    match transport {
        Transport::Quic => connect_quic(&server.endpoint("quic"), builder).await,
        Transport::Unix => {
            builder
                .prefer(Transport::Unix)
                .connect(&server.endpoint("unix"))
                .await
        }
        Transport::Tcp => {
            builder
                .prefer(Transport::Tcp)
                .connect(&server.endpoint("tcp"))
                .await
        }
        Transport::Shm | Transport::Mmap => {
            let threshold = if transport == Transport::Mmap {
                MMAP_THRESHOLD
            } else {
                NEVER as usize
            };
            builder
                .prefer(Transport::Shm)
                .bulk_threshold(threshold)
                .runtime_dir(server.dir())
                .connect("testing")
                .await
        }
        _ => builder.runtime_dir(server.dir()).connect("testing").await,
    }
}

/// Connects to a `quic://host:port?pin=<hex>` endpoint (as `test-server
/// --quic` prints it): the one place the suite makes QUIC channels.
pub async fn connect_quic(endpoint: &str, builder: ChannelBuilder) -> Result<Channel, Status> {
    // Demanded, so that a same-host server does not move it to shared memory.
    builder.prefer(Transport::Quic).connect(endpoint).await
}
