//! The QUIC rows: "switchyard quic" (a switchyard `Server` serving `echo`
//! over a [`QuicListener`]) beside its raw baseline, "raw quinn": plain
//! quinn with the same stream pattern, TLS and transport parameters.
//!
//! Per raw call the client opens a bidirectional stream, writes
//! [`MESSAGE`] bytes and finishes it; the child reads the stream to its
//! end, writes the bytes back and finishes its side; the client reads to
//! the end. One stream per call is what the QUIC transport does too (see
//! `transport::quic`). Both sides build their quinn configuration with
//! [`quic::quinn_server_config`] and [`quic::quinn_client_config`] from the
//! default [`QuicConfig`]: TLS 1.3 on ring, ALPN `switchyard/1`, the client
//! pinning the child's self-signed certificate, the same stream limits and
//! windows.
//!
//! Each child (`raw-quic`, `switchyard-quic`) binds `127.0.0.1:0` and
//! announces `ADDR FINGERPRINT`; the parent connects, pinning the
//! fingerprint, and measures with [`crate::bench::measure_calls`], the loop
//! of every switchyard row, on tokio's default multi-thread runtime.
//!
//! Over veth (Linux, as root, with `ip`): the same two rows again with the
//! children in a network namespace of their own, reached through a veth
//! pair ([`Veth`], in [`crate::netns`]), so that packets cross a network
//! device instead of loopback.

use std::ffi::OsStr;
use std::sync::Arc;

use switchyard::transport::Listener;
use switchyard::transport::quic::{self, Fingerprint, Identity, QuicConfig, QuicListener};
use switchyard::{Channel, Compression, Server};

use crate::bench::{
    BenchServer, ChildGuard, Echo, Figures, MESSAGE, Row, Serving, Settings, announce,
    echo_figures, measure_calls,
};
use crate::netns::{self, Veth};

/// The parent's side of "raw quinn": starts the echoing child, connects,
/// and measures round trips.
pub(crate) fn raw_figures(s: &Settings) -> Result<Figures, String> {
    raw_figures_at(None, s)
}

/// [`raw_figures`] with the child in `veth`'s namespace, if given.
fn raw_figures_at(veth: Option<&Veth>, s: &Settings) -> Result<Figures, String> {
    let (child, addr, pin) = spawn("raw-quic", veth, &[])?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let client =
            quic::quinn_client_config(&quic::ClientTls::pinned(pin), &QuicConfig::default())
                .map_err(|e| format!("quinn client configuration: {e}"))?;
        let mut endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::UNSPECIFIED, 0).into())
            .map_err(|e| format!("a UDP socket for quinn: {e}"))?;
        endpoint.set_default_client_config(client);
        let conn = endpoint
            .connect(addr, "switchyard")
            .map_err(|e| format!("connecting to the raw-quic child at {addr}: {e}"))?
            .await
            .map_err(|e| format!("the QUIC handshake with the raw-quic child at {addr}: {e}"))?;
        let payload: Arc<[u8]> = Arc::from(vec![7u8; MESSAGE]);
        let figures = measure_calls(child.pid(), s, move || {
            let (conn, payload) = (conn.clone(), payload.clone());
            async move {
                raw_call(&conn, &payload)
                    .await
                    .map_err(|e| format!("raw quinn call: {e}"))
            }
        })
        .await;
        endpoint.close(0u32.into(), b"done");
        figures
    })
}

/// One raw call: a stream each way, each finished after the message.
async fn raw_call(conn: &quinn::Connection, payload: &[u8]) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(payload).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let back = recv.read_to_end(MESSAGE).await.map_err(|e| e.to_string())?;
    if back.len() != MESSAGE {
        return Err(format!("{} bytes came back, not {MESSAGE}", back.len()));
    }
    Ok(())
}

/// Starts the serving child for switchyard's row (in `veth`'s namespace,
/// if given) and connects a channel to it over QUIC: the child, the
/// channel, and what it was reached at.
pub(crate) async fn connect_switchyard(
    veth: Option<&Veth>,
) -> Result<(Serving, Channel, String), String> {
    let (child, addr, pin) = spawn("switchyard-quic", veth, &[])?;
    let target = quic::url(addr);
    let link = quic::connect(&addr.to_string(), &pin)
        .await
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    let channel = Channel::builder()
        .connect_link(link)
        .await
        .map_err(|e| format!("the handshake over {target}: {e}"))?;
    Ok((Serving::Addressed(child), channel, target))
}

/// Starts the child in `role` (in `veth`'s namespace, bound to its address,
/// if given) with `env` added, and reads its address and fingerprint.
pub(crate) fn spawn(
    role: &str,
    veth: Option<&Veth>,
    env: &[(&str, &OsStr)],
) -> Result<(ChildGuard, std::net::SocketAddr, Fingerprint), String> {
    let (child, line) = netns::spawn(role, veth, env, "its address and fingerprint")?;
    let parsed = line
        .split_once(' ')
        .and_then(|(addr, pin)| Some((addr.parse().ok()?, pin.parse::<Fingerprint>().ok()?)));
    let (addr, pin) = parsed
        .ok_or_else(|| format!("the {role} child announced {line:?}, not ADDR FINGERPRINT"))?;
    Ok((child, addr, pin))
}

/// The children's side: `raw-quic` echoes streams with plain quinn,
/// `switchyard-quic` serves `echo` over a [`QuicListener`]. Both serve
/// until the parent kills them or closes their stdin.
pub(crate) fn child(role: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async {
        match role {
            "raw-quic" => raw_child().await,
            _ => serve_switchyard(Compression::auto()).await,
        }
    })
}

async fn raw_child() -> Result<(), String> {
    let identity = Identity::self_signed(&["localhost"]).map_err(|e| e.to_string())?;
    let server = quic::quinn_server_config(
        &quic::ServerTls::new(identity.clone()),
        &QuicConfig::default(),
    )
    .map_err(|e| format!("quinn server configuration: {e}"))?;
    let endpoint =
        quinn::Endpoint::server(server, netns::bind_addr()?).map_err(|e| format!("bind: {e}"))?;
    let addr = endpoint.local_addr().map_err(|e| format!("address: {e}"))?;
    announce(&format!("{addr} {}", identity.fingerprint()));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(raw_echo(send, recv));
            }
        });
    }
    Ok(())
}

/// Echoes one stream: reads it to the end, writes it back, finishes.
async fn raw_echo(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    if let Ok(bytes) = recv.read_to_end(MESSAGE).await
        && send.write_all(&bytes).await.is_ok()
    {
        let _ = send.finish();
    }
}

/// Serves `echo` over a [`QuicListener`] bound to [`netns::bind_addr`],
/// compressing replies as `compression` says, after announcing `ADDR
/// FINGERPRINT`; until the parent kills it or closes its stdin.
pub(crate) async fn serve_switchyard(compression: Compression) -> Result<(), String> {
    let server = Server::builder()
        .add_service(BenchServer::new(Echo::new()?))
        .compression(compression)
        .unpublished()
        .no_unix()
        .message_queues(false)
        .start()
        .await
        .map_err(|e| format!("server: {e}"))?;
    let mut listener = QuicListener::bind(&netns::bind_addr()?.to_string())
        .await
        .map_err(|e| format!("bind: {e}"))?;
    announce(&format!(
        "{} {}",
        listener.local_addr(),
        listener.fingerprint()
    ));
    loop {
        match listener.accept().await {
            Ok(link) => server.serve_link(link),
            Err(err) => eprintln!("switchyard-quic child: {err}"),
        }
    }
}

/// The QUIC rows again with the children behind a veth pair: `raw quinn
/// (veth)` and `switchyard quic (veth)`. An error says why they could not
/// be measured.
#[cfg(target_os = "linux")]
pub(crate) fn veth_rows(s: &Settings) -> Result<[Row; 2], String> {
    netns::may_make_namespaces()?;
    let veth = Veth::new()?;
    println!(
        "quic over veth: children in network namespace {} at {}, reached through {}",
        veth.namespace(),
        veth.child_addr(),
        veth.outer()
    );
    let raw = raw_figures_at(Some(&veth), s)?;
    let ours = echo_figures(s, connect_switchyard(Some(&veth)))?;
    Ok([
        Row {
            path: "raw quinn (veth)".to_owned(),
            transport: "quic veth",
            figures: raw,
            base: None,
        },
        Row {
            path: "switchyard quic (veth)".to_owned(),
            transport: "quic veth",
            figures: ours,
            base: Some(raw),
        },
    ])
}
