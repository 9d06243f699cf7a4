//! `cluster`: a storefront gateway that fans every quote out to an
//! inventory and a pricing service, each usually on another host, reached
//! by name over QUIC (TCP when UDP does not get through).
//!
//! ```text
//! cluster demo                          all of it on this machine, then stop
//! cluster backend inventory|pricing [--quic ADDR] [--tcp ADDR] [--no-unix]
//! cluster gateway [--quic ADDR] [--tcp ADDR] [--no-unix] [--wait SECS]
//!                 [--balance POLICY] [--dns [--dns-suffix DOMAIN]]
//! cluster client [--target NAME|URL] [--rounds N]
//! ```
//!
//! The gateway spreads its calls over every replica of a backend
//! (`--balance`: round-robin, the default here, pick-first,
//! least-in-flight or peak-ewma). With `--dns` it finds the replicas in DNS
//! instead of the discovery file: every A/AAAA record of the backend's name
//! (a Kubernetes headless Service, a Compose service with several
//! replicas) is one replica, reached over QUIC at port 7443 and checked
//! against that name. The client ends with how its quotes were spread over
//! the replicas that answered.
//!
//! Servers listen on QUIC at 0.0.0.0:7443 and TCP at 0.0.0.0:7000 unless
//! told otherwise (`--tcp none`; with mutual TLS on, no TCP: TCP carries no
//! TLS, and a server that requires client certificates refuses a plaintext
//! listener) and stop on SIGTERM or Ctrl-C. Names are found through the
//! local registry, then the discovery file named by `SWITCHYARD_DISCOVERY`;
//! TLS comes from `SWITCHYARD_TLS_CERT`/`_KEY`/`_CA`/`_CLIENT_CA` (see
//! `switchyard certs`), else each server makes a self-signed certificate
//! whose fingerprint its `quic://…?pin=` address carries.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use switchyard::discovery::Dns;
use switchyard::transport::Endpoint;
use switchyard::{Balance, Channel, Server, ServerBuilder};
use switchyard_examples::cluster::{
    Gateway, InventoryClient, InventoryServer, PriceList, PricingClient, PricingServer, Quote,
    Stockroom, StorefrontClient, StorefrontServer,
};

const USAGE: &str = "usage: cluster demo | backend inventory|pricing [--quic ADDR] [--tcp ADDR] \
                     [--no-unix] | gateway [--quic ADDR] [--tcp ADDR] [--no-unix] [--wait SECS] \
                     [--balance round-robin|pick-first|least-in-flight|peak-ewma] [--dns \
                     [--dns-suffix DOMAIN]] | client [--target NAME|URL] [--rounds N]";

/// The port backends found through DNS serve QUIC on (the default of
/// `--quic`).
const DNS_QUIC_PORT: u16 = 7443;

/// Options after the role.
struct Options {
    quic: String,
    tcp: Option<String>,
    /// `--tcp` was given.
    tcp_chosen: bool,
    unix: bool,
    wait: Duration,
    target: String,
    rounds: u32,
    /// How the gateway spreads calls over a backend's replicas.
    balance: Balance,
    /// Find backends in DNS (`Some(suffix)`, maybe empty) instead of the
    /// discovery file.
    dns: Option<String>,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quic: "0.0.0.0:7443".into(),
        tcp: Some("0.0.0.0:7000".into()),
        tcp_chosen: false,
        unix: true,
        wait: Duration::from_secs(60),
        target: "storefront".into(),
        rounds: 1,
        balance: Balance::RoundRobin,
        dns: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--quic" => o.quic = value()?,
            "--tcp" => {
                o.tcp = Some(value()?).filter(|v| v != "none");
                o.tcp_chosen = true;
            }
            "--no-unix" => o.unix = false,
            "--wait" => {
                o.wait = Duration::from_secs(value()?.parse().map_err(|e| format!("--wait: {e}"))?)
            }
            "--target" => o.target = value()?,
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--balance" => {
                o.balance = match value()?.as_str() {
                    "round-robin" => Balance::RoundRobin,
                    "pick-first" => Balance::PickFirst,
                    "least-in-flight" => Balance::LeastInFlight,
                    "peak-ewma" => Balance::PeakEwma,
                    other => return Err(format!("--balance {other}: unknown policy; {USAGE}")),
                }
            }
            "--dns" => o.dns = o.dns.take().or_else(|| Some(String::new())),
            "--dns-suffix" => o.dns = Some(value()?),
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo().await,
        Some("backend") => match args.get(1).map(String::as_str) {
            Some(kind @ ("inventory" | "pricing")) => match options(&args[2..]) {
                Ok(o) => backend(kind, &o).await,
                Err(e) => Err(e),
            },
            _ => Err(format!("backend needs inventory or pricing; {USAGE}")),
        },
        Some("gateway") => match options(&args[1..]) {
            Ok(o) => gateway(&o).await,
            Err(e) => Err(e),
        },
        Some("client") => match options(&args[1..]) {
            Ok(o) => client(&o.target, o.rounds).await,
            Err(e) => Err(e),
        },
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cluster: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Listens as the options say, prints `listening <endpoints>`, serves
/// until SIGTERM or Ctrl-C.
async fn serve(builder: ServerBuilder, o: &Options) -> Result<(), String> {
    let mut builder = builder.quic(o.quic.clone());
    // TCP carries no TLS: beside mutual TLS it would let clients without a
    // certificate in, so it is off then unless asked for.
    let mutual_tls = std::env::var_os("SWITCHYARD_TLS_CLIENT_CA").is_some_and(|v| !v.is_empty());
    match (&o.tcp, mutual_tls && !o.tcp_chosen) {
        (Some(_), true) => {
            eprintln!("cluster: mutual TLS is on, so no TCP listener (TCP has no TLS)");
        }
        (Some(tcp), false) => builder = builder.tcp(tcp.clone()),
        (None, _) => {}
    }
    if !o.unix {
        builder = builder.no_unix();
    }
    let server = builder.start().await.map_err(|s| s.to_string())?;
    println!("listening {}", server.endpoints().join(" "));
    server.run_until_signal().await;
    Ok(())
}

async fn backend(kind: &str, o: &Options) -> Result<(), String> {
    let builder = Server::builder();
    let builder = if kind == "inventory" {
        builder.add_service(InventoryServer::new(Stockroom))
    } else {
        builder.add_service(PricingServer::new(PriceList))
    };
    serve(builder, o).await
}

/// Connects to `target`, trying again every second for up to `wait` (a
/// backend may start after the gateway), saying why each attempt failed.
/// With `o`, as the gateway's options say (balance, DNS).
async fn connect_patiently(
    target: &str,
    wait: Duration,
    o: Option<&Options>,
) -> Result<Channel, String> {
    let started = Instant::now();
    loop {
        let mut builder = Channel::builder().timeout(Duration::from_secs(5));
        if let Some(o) = o {
            builder = builder.balance(o.balance);
            if let Some(suffix) = &o.dns {
                let dns = Dns::system(DNS_QUIC_PORT)
                    .map_err(|s| s.to_string())?
                    .quic()
                    .suffix(suffix.clone());
                builder = builder.discovery(dns);
            }
        }
        match builder.connect(target).await {
            Ok(channel) => {
                eprintln!("cluster: {target}: {}", channel.selection());
                for replica in channel.replicas() {
                    eprintln!(
                        "cluster: {target} replica {}: {} {}",
                        replica.key,
                        replica.state,
                        replica.transport.as_deref().unwrap_or("")
                    );
                }
                return Ok(channel);
            }
            Err(status) if started.elapsed() < wait => {
                eprintln!("cluster: {target} not reachable yet ({status}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(status) => return Err(format!("{target}: {status}")),
        }
    }
}

async fn gateway(o: &Options) -> Result<(), String> {
    let inventory = connect_patiently("inventory", o.wait, Some(o)).await?;
    let pricing = connect_patiently("pricing", o.wait, Some(o)).await?;
    let gateway = Gateway {
        inventory: InventoryClient::new(inventory),
        pricing: PricingClient::new(pricing),
    };
    serve(
        Server::builder().add_service(StorefrontServer::new(gateway)),
        o,
    )
    .await
}

fn describe(q: &Quote) -> String {
    format!(
        "{} x{}: {} in stock at {}.{:02} = {}.{:02}  (inventory: {} pid {} over {}, caller {}; \
         pricing: {} pid {} over {}, caller {})",
        q.item,
        q.quantity,
        q.in_stock,
        q.unit_cents / 100,
        q.unit_cents % 100,
        q.total_cents / 100,
        q.total_cents % 100,
        q.inventory.host,
        q.inventory.pid,
        q.inventory.transport,
        q.inventory.caller,
        q.pricing.host,
        q.pricing.pid,
        q.pricing.transport,
        q.pricing.caller,
    )
}

/// How many quotes each backend replica (host and pid) answered.
#[derive(Default)]
struct Spread {
    inventory: BTreeMap<String, u32>,
    pricing: BTreeMap<String, u32>,
}

impl Spread {
    fn add(&mut self, q: &Quote) {
        let at = |o: &switchyard_examples::cluster::Origin| format!("{} pid {}", o.host, o.pid);
        *self.inventory.entry(at(&q.inventory)).or_default() += 1;
        *self.pricing.entry(at(&q.pricing)).or_default() += 1;
    }

    fn print(&self) {
        for (service, counts) in [("inventory", &self.inventory), ("pricing", &self.pricing)] {
            let each: Vec<String> = counts.iter().map(|(at, n)| format!("{at}: {n}")).collect();
            println!(
                "spread {service}: {} replica(s) answered ({})",
                counts.len(),
                each.join(", ")
            );
        }
    }
}

async fn client(target: &str, rounds: u32) -> Result<(), String> {
    let channel = connect_patiently(target, Duration::from_secs(30), None).await?;
    println!("storefront: {}", channel.selection());
    let store = StorefrontClient::new(channel).with_timeout(Duration::from_secs(5));
    let mut spread = Spread::default();
    for _ in 0..rounds.max(1) {
        for (item, quantity) in [("widget", 3), ("gadget", 2), ("flux-capacitor", 1)] {
            match store.quote(item.into(), quantity).await {
                Ok(Ok(quote)) => {
                    println!("quote {}", describe(&quote));
                    spread.add(&quote);
                }
                Ok(Err(err)) => return Err(format!("quote {item}: {err}")),
                Err(status) => return Err(format!("quote {item}: {status}")),
            }
        }
    }
    spread.print();
    match store.quote("unobtainium".into(), 1).await {
        Ok(Err(err)) => println!("quote unobtainium: {err} (as expected)"),
        other => return Err(format!("an unknown item should be refused, got {other:?}")),
    }
    Ok(())
}

/// Child processes, killed and reaped however the demo ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts this program with `args`, in its own runtime directory (as if on
/// a host of its own), and returns its QUIC address.
fn spawn(
    children: &mut Children,
    dir: &Path,
    role: &str,
    args: &[&str],
    discovery: &Path,
) -> Result<String, String> {
    let runtime = dir.join(role);
    // Private from the start, as a runtime directory must be.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&runtime)
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(args)
        .args(["--quic", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--no-unix"])
        .env("SWITCHYARD_RUNTIME_DIR", &runtime)
        .env("SWITCHYARD_DISCOVERY", discovery)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {role}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    children.0.push(child);
    // The first line, read on a thread of its own so that a child that
    // never prints cannot hold the demo up for more than 30 s.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = std::io::BufReader::new(stdout).lines().next();
        let _ = tx.send(line.and_then(Result::ok).unwrap_or_default());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| format!("{role} printed nothing within 30 s"))?;
    line.split(' ')
        .find(|e| Endpoint::scheme_of(e) == Some("quic"))
        .map(str::to_owned)
        .ok_or_else(|| format!("{role} did not start (it printed {line:?})"))
}

/// Everything on this machine: three inventory replicas, a pricing backend
/// and the gateway as processes with runtime directories of their own and
/// no Unix sockets, so that each looks like another host and names resolve
/// through a discovery file (the inventory's three replicas as
/// `[[services.inventory.replicas]]`).
async fn demo() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("switchyard-cluster-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let discovery = dir.join("discovery.toml");
    let mut children = Children(Vec::new());
    let mut entries = String::new();
    let mut publish = |name: &str, urls: &[String]| -> Result<(), String> {
        for url in urls {
            entries.push_str(&if urls.len() > 1 {
                format!("[[services.{name}.replicas]]\naddresses = [{url:?}]\n")
            } else {
                format!("[services.{name}]\naddresses = [{url:?}]\n")
            });
        }
        std::fs::write(&discovery, &entries).map_err(|e| e.to_string())
    };
    let mut inventory = Vec::new();
    for replica in 1..=3 {
        inventory.push(spawn(
            &mut children,
            &dir,
            &format!("inventory-{replica}"),
            &["backend", "inventory"],
            &discovery,
        )?);
    }
    let pricing = spawn(
        &mut children,
        &dir,
        "pricing",
        &["backend", "pricing"],
        &discovery,
    )?;
    publish("inventory", &inventory)?;
    publish("pricing", &[pricing])?;
    let gateway = spawn(&mut children, &dir, "gateway", &["gateway"], &discovery)?;
    publish("storefront", &[gateway])?;
    println!("discovery file {}:", discovery.display());
    for line in entries.lines() {
        println!("  {line}");
    }
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        let channel = Channel::builder()
            .discovery_file(&discovery)
            .runtime_dir(dir.join("client"))
            .timeout(Duration::from_secs(5))
            .connect("storefront")
            .await
            .map_err(|s| s.to_string())?;
        println!("storefront: {}", channel.selection());
        let store = StorefrontClient::new(channel);
        let mut spread = Spread::default();
        for (item, quantity) in [("widget", 3), ("gadget", 2), ("flux-capacitor", 1)] {
            match store.quote(item.into(), quantity).await {
                Ok(Ok(quote)) => {
                    println!("quote {}", describe(&quote));
                    spread.add(&quote);
                }
                other => return Err(format!("quote {item}: {other:?}")),
            }
        }
        spread.print();
        if spread.inventory.len() != 3 {
            return Err(format!(
                "the gateway should spread the inventory calls over its 3 replicas, but {} \
                 answered",
                spread.inventory.len()
            ));
        }
        Ok::<(), String>(())
    })
    .await
    .map_err(|_| "the demo did not finish within 60 s".to_owned())?;
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
