//! Compression across network namespaces, as between two hosts: a client
//! on host A calls the test server on host B over TCP and QUIC; with the
//! default setting both sides compress large payloads (the reason names
//! the other network namespace) and a compressible body crosses in a
//! fraction of its bytes; a server with compression off lists no codec in
//! its hello, so nothing is compressed either way.
//!
//! Needs root and iproute2; elsewhere each test prints why it skips.

use std::time::Duration;

use switchyard::debug::ConnectionInfo;
use switchyard::{Channel, Transport};
use switchyard_integration_tests::netns::{Host, Lan};
use switchyard_integration_tests::{ServerProcess, TestingClient};

/// The server's endpoint of `scheme` as seen from other hosts.
fn address(server: &ServerProcess, host: &Host, scheme: &str) -> String {
    server
        .endpoint(scheme)
        .replace("0.0.0.0", &host.ip.to_string())
}

/// The client side of `channel`'s connection, as the debug views show it.
fn client_view(channel: &Channel) -> ConnectionInfo {
    let peer = channel.peer().addr;
    switchyard::debug::snapshot()
        .connections
        .into_iter()
        .find(|c| c.role == "client" && c.state == "open" && c.peer.addr == peer)
        .unwrap_or_else(|| panic!("no open client connection to {peer}"))
}

/// 64 KiB of text, as a JSON document or a log would be.
fn document() -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = 0u64;
    while out.len() < 64 * 1024 {
        out.extend_from_slice(
            format!(
                "{{\"sku\":\"item-{}\",\"stock\":{},\"warehouse\":\"north\"}}\n",
                n % 211,
                n % 17
            )
            .as_bytes(),
        );
        n += 1;
    }
    out.truncate(64 * 1024);
    out
}

#[test]
fn across_namespaces_both_sides_compress_large_payloads_over_tcp_and_quic() {
    let Some(lan) = Lan::or_skip(
        2,
        "across_namespaces_both_sides_compress_large_payloads_over_tcp_and_quic",
    ) else {
        return;
    };
    let (a, b) = (&lan.hosts[0], &lan.hosts[1]);
    let server = b.serve_test_server();
    for (scheme, transport) in [("tcp", Transport::Tcp), ("quic", Transport::Quic)] {
        let target = address(&server, b, scheme);
        a.run(Duration::from_secs(90), async {
            let channel = Channel::connect(&target).await.expect("connects");
            assert_eq!(channel.selection().transport, transport);
            let client = TestingClient::new(channel.clone());
            let body = document();
            for _ in 0..8 {
                assert_eq!(client.echo(body.clone()).await.unwrap(), body);
            }
            // Small calls go as they are.
            assert_eq!(client.add(2, 3).await.unwrap(), 5);
            let view = client_view(&channel);
            let z = &view.compression;
            assert!(z.on, "{scheme}: {z:?}");
            assert!(
                z.reason
                    .contains(&format!("{scheme} to another network namespace")),
                "{scheme}: {}",
                z.reason
            );
            let m = &z.moved;
            println!(
                "{scheme} across namespaces, 8 echoes of 64 KiB of JSON lines: sent {} bytes as \
                 {} ({:.1}x), received {} as {}; {} saved",
                m.raw_bytes_sent,
                m.wire_bytes_sent,
                m.ratio_sent(),
                m.wire_bytes_received,
                m.raw_bytes_received,
                m.saved()
            );
            assert_eq!(m.payloads_sent, 8, "{scheme}: {m:?}");
            assert_eq!(m.payloads_received, 8, "{scheme}: the server's replies too");
            assert!(m.wire_bytes_sent * 4 < m.raw_bytes_sent, "{scheme}: {m:?}");
            assert!(
                m.wire_bytes_received * 4 < m.raw_bytes_received,
                "{scheme}: {m:?}"
            );
        });
    }
}

#[test]
fn a_server_with_compression_off_reads_none_so_nothing_is_compressed_either_way() {
    let Some(lan) = Lan::or_skip(
        2,
        "a_server_with_compression_off_reads_none_so_nothing_is_compressed_either_way",
    ) else {
        return;
    };
    let (a, b) = (&lan.hosts[0], &lan.hosts[1]);
    let server = b.serve_test_server_with(&["--compression", "off"]);
    let target = address(&server, b, "tcp");
    a.run(Duration::from_secs(90), async {
        let channel = Channel::connect(&target).await.expect("connects");
        assert_eq!(channel.server_hello().codecs, 0);
        let client = TestingClient::new(channel.clone());
        let body = document();
        for _ in 0..3 {
            assert_eq!(client.echo(body.clone()).await.unwrap(), body);
        }
        let view = client_view(&channel);
        assert!(!view.compression.on);
        assert!(
            view.compression
                .reason
                .contains("the peer cannot read zstd"),
            "{}",
            view.compression.reason
        );
        let m = view.compression.moved;
        assert_eq!((m.payloads_sent, m.payloads_received), (0, 0), "{m:?}");
    });
}
