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

use std::sync::Arc;

use switchyard::transport::Listener;
use switchyard::transport::quic::{self, Fingerprint, Identity, QuicConfig, QuicListener};
use switchyard::{Channel, Server};

use crate::bench::{
    BenchServer, ChildGuard, Echo, Figures, MESSAGE, Settings, announce, measure_calls,
    spawn_announcing,
};

/// The parent's side of "raw quinn": starts the echoing child, connects,
/// and measures round trips.
pub(crate) fn raw_figures(s: &Settings) -> Result<Figures, String> {
    let (child, addr, pin) = spawn("raw-quic")?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let client = quic::quinn_client_config(pin, &QuicConfig::default())
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

/// Starts the serving child for switchyard's row and connects a channel to
/// it over QUIC: the child, the channel, and what it was reached at.
pub(crate) async fn connect_switchyard() -> Result<(ChildGuard, Channel, String), String> {
    let (child, addr, pin) = spawn("switchyard-quic")?;
    let target = quic::url(addr);
    let link = quic::connect(&addr.to_string(), &pin)
        .await
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    let channel = Channel::builder()
        .connect_link(link)
        .await
        .map_err(|e| format!("the handshake over {target}: {e}"))?;
    Ok((child, channel, target))
}

/// Starts the child in `role` and reads its address and fingerprint.
fn spawn(role: &str) -> Result<(ChildGuard, std::net::SocketAddr, Fingerprint), String> {
    let (child, _stdout, line) = spawn_announcing(role, &[], "its address and fingerprint")?;
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
            _ => switchyard_child().await,
        }
    })
}

async fn raw_child() -> Result<(), String> {
    let identity = Identity::self_signed(&["localhost"]).map_err(|e| e.to_string())?;
    let server = quic::quinn_server_config(&identity, &QuicConfig::default())
        .map_err(|e| format!("quinn server configuration: {e}"))?;
    let endpoint = quinn::Endpoint::server(server, (std::net::Ipv4Addr::LOCALHOST, 0).into())
        .map_err(|e| format!("bind: {e}"))?;
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

async fn switchyard_child() -> Result<(), String> {
    let server = Server::builder()
        .add_service(BenchServer::new(Echo::new()?))
        .unpublished()
        .no_unix()
        .message_queues(false)
        .start()
        .await
        .map_err(|e| format!("server: {e}"))?;
    let mut listener = QuicListener::bind("127.0.0.1:0")
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
