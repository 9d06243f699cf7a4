//! The layers table (`--only-layers`, and after the streams table in a full
//! run): 64-byte `echo` round trips over shm and tcp with no layers, with
//! an empty layer on each side, and with authentication plus a concurrency
//! limit (a bearer token sent by the client, checked by the server, and a
//! per-method limit), one after the other in one run; then the cost of the
//! chain itself per call, measured in place (no runtime, no transport).

use std::path::Path;
use std::sync::Arc;

use switchyard::layers::{Bearer, Call, ConcurrencyLimit, Layer, LayerFuture, Next, RequireBearer};
use switchyard::{Channel, ChannelBuilder, Server, ServerBuilder, Transport};

use crate::bench::{
    self, BENCH_DESCRIPTOR, BenchServer, Echo, Figures, ScratchDir, Serving, Settings,
};

/// The token of the authenticated rows (a bench secret, not a real one).
const TOKEN: &str = "bench-layers-token-0123456789abcdef";

/// What a row puts in front of the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    /// No layers at all (the calls take no detour).
    None,
    /// One layer that calls on, on the server only.
    EmptyServer,
    /// One layer that calls on, on the client only.
    EmptyClient,
    /// One layer that calls on, on each side.
    Empty,
    /// The client sends a bearer token; the server checks it and limits
    /// each method to 1024 calls in flight.
    AuthAndLimit,
}

impl Stack {
    const ALL: [Self; 5] = [
        Self::None,
        Self::EmptyServer,
        Self::EmptyClient,
        Self::Empty,
        Self::AuthAndLimit,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::EmptyServer => "empty-srv",
            Self::EmptyClient => "empty-cli",
            Self::Empty => "empty",
            Self::AuthAndLimit => "auth+limit",
        }
    }

    fn role(self) -> String {
        format!("layers-{}", self.name())
    }

    fn from_role(role: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stack| stack.role() == role)
    }

    fn server(self, builder: ServerBuilder) -> ServerBuilder {
        match self {
            Self::None | Self::EmptyClient => builder,
            Self::Empty | Self::EmptyServer => builder.layer(Pass),
            Self::AuthAndLimit => builder
                .layer(RequireBearer::new(TOKEN))
                .layer(ConcurrencyLimit::per_method(1024)),
        }
    }

    fn client(self, builder: ChannelBuilder) -> ChannelBuilder {
        match self {
            Self::None | Self::EmptyServer => builder,
            Self::Empty | Self::EmptyClient => builder.layer(Pass),
            Self::AuthAndLimit => builder.layer(Bearer::new(TOKEN)),
        }
    }
}

/// A layer that only calls on.
struct Pass;

impl Layer for Pass {
    fn name(&self) -> &str {
        "pass"
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        next.run(call)
    }
}

/// The serving child of a row: `layers-<stack>`.
pub(crate) fn child(role: &str) -> Result<(), String> {
    let stack = Stack::from_role(role).ok_or_else(|| format!("unknown role {role}"))?;
    let dir = std::env::var_os(bench::DIR_ENV).ok_or("SWITCHYARD_RUNTIME_DIR is not set")?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async {
        let server = stack
            .server(Server::builder().add_service(BenchServer::new(Echo::new()?)))
            .tcp("127.0.0.1:0")
            .runtime_dir(dir)
            .start()
            .await
            .map_err(|e| format!("server: {e}"))?;
        bench::announce(&server.endpoints().join(" "));
        std::future::pending::<()>().await;
        Ok::<(), String>(())
    })
}

/// Starts the child of `stack` in `dir` and connects over `transport`
/// with the client side of `stack`.
async fn connect(
    transport: Transport,
    stack: Stack,
    dir: &Path,
) -> Result<(Serving, Channel, String), String> {
    let (child, endpoints) = bench::spawn_child(&stack.role(), dir)?;
    let builder = stack.client(Channel::builder());
    let (channel, target) = match transport {
        Transport::Shm => {
            let name = BENCH_DESCRIPTOR.name;
            let channel = builder
                .runtime_dir(dir)
                .connect(name)
                .await
                .map_err(|e| format!("connecting to {name}: {e}"))?;
            (channel, format!("shm ({name})"))
        }
        _ => {
            let target = endpoints
                .split(' ')
                .find(|e| e.starts_with("tcp://"))
                .ok_or_else(|| format!("the child offers no tcp endpoint: {endpoints}"))?
                .to_owned();
            let channel = builder
                .prefer(Transport::Tcp)
                .connect(&target)
                .await
                .map_err(|e| format!("connecting to {target}: {e}"))?;
            (channel, target)
        }
    };
    let selection = channel.selection();
    if selection.transport != transport {
        return Err(format!(
            "the {transport} rows need {transport}, but the channel selected {selection}"
        ));
    }
    Ok((Serving::Addressed(child), channel, target))
}

/// Prints the layers table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    bench::pin(0);
    println!(
        "\nlayers: 64 B echo round trips, {}; layers: none, empty-srv / empty-cli / empty (one \
         layer that calls on, on the server, the client, each side), auth+limit (client: bearer token; server: bearer check in constant \
         time + concurrency limit per method); pinned to CPUs 0 and 1: {}",
        settings.describe(),
        if bench::pinning() { "yes" } else { "no" }
    );
    println!(
        "{:<10} {:<11} {:>9} {:>9} {:>12} {:>14}",
        "transport", "layers", "p50 µs", "p99 µs", "calls/s", "p50 vs none"
    );
    for transport in [Transport::Shm, Transport::Tcp] {
        if !transport.is_available() {
            println!("{transport}: not available here");
            continue;
        }
        let mut base: Option<Figures> = None;
        // For profiling one row: SWITCHYARD_BENCH_LAYERS=empty-cli (say).
        let only = std::env::var("SWITCHYARD_BENCH_LAYERS").ok();
        for stack in Stack::ALL
            .into_iter()
            .filter(|s| only.as_deref().is_none_or(|o| o == s.name()))
        {
            let dir = ScratchDir::new()?;
            let figures = bench::echo_figures(&settings, connect(transport, stack, dir.path()))?;
            let delta = base.map_or_else(
                || "-".to_owned(),
                |base| format!("{:+.0} ns", (figures.p50_us - base.p50_us) * 1000.0),
            );
            println!(
                "{:<10} {:<11} {:>9.2} {:>9.2} {:>12.0} {:>14}",
                transport.as_str(),
                stack.name(),
                figures.p50_us,
                figures.p99_us,
                figures.calls_per_s,
                delta
            );
            base.get_or_insert(figures);
        }
    }
    chain_cost(if quick { 200_000 } else { 2_000_000 });
    Ok(())
}

/// The chain's own cost per call with 0, 1 and 4 empty layers.
fn chain_cost(calls: u64) {
    let method = &BENCH_DESCRIPTOR.methods[0];
    let per_call = |layers: usize| {
        let stack: Vec<Arc<dyn Layer>> = (0..layers)
            .map(|_| Arc::new(Pass) as Arc<dyn Layer>)
            .collect();
        // Best of three, against preemption.
        (0..3)
            .map(|_| switchyard::layers::bench_chain(&stack, method, calls))
            .min()
            .unwrap_or_default()
            .as_nanos() as f64
            / calls as f64
    };
    let none = per_call(0);
    let one = per_call(1);
    let four = per_call(4);
    println!(
        "layer chain in place ({calls} calls, best of 3): no layers {none:.1} ns/call, one \
         empty layer {one:.1} ns (+{:.1}), four {four:.1} ns (+{:.1} per layer)",
        one - none,
        (four - none) / 4.0
    );
}
