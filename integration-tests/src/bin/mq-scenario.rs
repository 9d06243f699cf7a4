//! The durability scenario of one-way calls through a message queue, run in
//! an IPC namespace of its own whose queues hold 64 messages (the test starts
//! it under `unshare --ipc` after raising `fs.mqueue.msg_max` there):
//!
//! start a server, SIGKILL it, send 50 one-way calls of mixed priority while
//! it is down, restart it, and check that all 50 arrive exactly once, the
//! urgent ones first, each priority in the order sent.
//!
//! `mq-scenario <test-server binary> <output file>`; exits 0 when it holds,
//! 1 with what went wrong on stderr.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use switchyard::{Channel, Transport};
use switchyard_integration_tests::{ServerProcess, TESTING_DESCRIPTOR, TestingClient};

const CALLS: usize = 50;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(server_exe), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: mq-scenario <test-server binary> <output file>");
        return ExitCode::from(2);
    };
    match scenario(Path::new(server_exe), Path::new(out)).await {
        Ok(()) => {
            println!("ok: {CALLS} one-way calls survived a SIGKILL, each once, by priority");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("mq-scenario: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn scenario(server_exe: &Path, out: &Path) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("sy-mq-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut server = ServerProcess::start_exe(server_exe, dir, &["--queues"]);
    let channel = Channel::builder()
        .runtime_dir(server.dir())
        .connect("testing")
        .await
        .map_err(|s| s.to_string())?;
    let selection = channel.oneway_selection(&TESTING_DESCRIPTOR);
    if selection.transport != Transport::MessageQueue {
        return Err(format!("one-way calls do not take the queue: {selection}"));
    }
    server.kill();
    let client = TestingClient::new(channel.clone());
    let path = out.display().to_string();
    let mut expected_urgent = Vec::new();
    let mut expected_normal = Vec::new();
    for i in 0..CALLS {
        let sent = if i % 3 == 0 {
            expected_urgent.push(format!("urgent {i}"));
            client
                .record_urgent(path.clone(), format!("urgent {i}"))
                .await
        } else {
            expected_normal.push(format!("normal {i}"));
            client.record(path.clone(), format!("normal {i}")).await
        };
        sent.map_err(|s| format!("call {i} with the server down: {s}"))?;
    }
    // The channel notices the killed server when its connection's reader
    // sees the socket close, which may come after the 50 sends: give it
    // time before asking how one-way calls go now.
    let noticed = Instant::now() + Duration::from_secs(5);
    let mut down = channel.oneway_selection(&TESTING_DESCRIPTOR);
    while !down.reason.to_string().contains("wait in the kernel") && Instant::now() < noticed {
        tokio::time::sleep(Duration::from_millis(10)).await;
        down = channel.oneway_selection(&TESTING_DESCRIPTOR);
    }
    if !down.reason.to_string().contains("wait in the kernel") {
        return Err(format!(
            "the selection while the server is down says: {down}"
        ));
    }
    let dir = std::mem::replace(
        &mut server.runtime_dir,
        tempfile::tempdir().map_err(|e| e.to_string())?,
    );
    let _restarted = ServerProcess::start_exe(server_exe, dir, &["--queues"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= CALLS {
            // Give a duplicate the chance to show up.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let text = std::fs::read_to_string(out).unwrap_or_default();
            break text.lines().map(str::to_owned).collect::<Vec<_>>();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {CALLS} calls arrived after the restart: {lines:?}",
                lines.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let expected: Vec<String> = expected_urgent.into_iter().chain(expected_normal).collect();
    if lines != expected {
        return Err(format!(
            "arrival order differs\n  expected {expected:?}\n  got      {lines:?}"
        ));
    }
    Ok(())
}
