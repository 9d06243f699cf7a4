//! The child the pipe tests spawn with `switchyard::process::Spawner`.
//!
//! Modes (first argument):
//! - `worker`: serves `Testing` to the parent, exits when the parent is gone.
//! - `worker-32m`: as `worker`, taking bodies up to 32 MiB on its pipe
//!   (`Services::max_frame`).
//! - `worker-token TOKEN`: as `worker`, refusing calls without the bearer
//!   token TOKEN (`layers::RequireBearer`).
//! - `call-parent`: calls the parent's `Testing.add(2, 3)` by name and
//!   prints `<transport> <sum> <reason>`.
//! - `garbage [after-hello]`: writes bytes that are not frames into its pipe
//!   to the parent (after opening the link, with `after-hello`).
//! - `orphan MARKER`: serves `Testing`; when the parent is gone, writes
//!   MARKER and exits.
//! - `waiter MARKER`: calls the parent's `sleep(60000)`; writes the error it
//!   gets to MARKER, waits for `parent_gone()`, then exits.
//! - `middle MODE MARKER`: spawns `MODE MARKER` (`waiter` or `orphan`)
//!   itself, serving `Testing` to it, prints `ready <grandchild pid>` and
//!   waits (the test kills it).
//! - `grandchild-fds`: opens the link, then prints the fds a grandchild
//!   (`/bin/ls /proc/self/fd`) has, then the pipe fds from the environment.
//! - `same-fd-twice`: makes an inheritable pipe and starts itself as
//!   `call-parent` with `SWITCHYARD_PIPE` naming one of its fds as both
//!   ends (what a hand-set or hostile variable can say); prints how that
//!   child ended (`exit N` or `signal N`) and then its stderr.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use switchyard::process::{self, Services, Spawner};
use switchyard::{Channel, Status};
use switchyard_integration_tests::{TestingClient, TestingImpl, TestingServer, testing_service};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let result = match arg(0).as_str() {
        "worker" => worker().await,
        "worker-32m" => worker_32m().await,
        "worker-tight" => worker_tight().await,
        "worker-token" => worker_token(&arg(1)).await,
        "call-parent" => call_parent().await,
        "garbage" => garbage(arg(1) == "after-hello").await,
        "orphan" => orphan(&arg(1)).await,
        "waiter" => waiter(&arg(1)).await,
        "middle" => middle(&arg(1), &arg(2)).await,
        "grandchild-fds" => grandchild_fds().await,
        "same-fd-twice" => same_fd_twice(),
        other => Err(Status::invalid_argument(format!("unknown mode {other:?}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(status) => {
            eprintln!("pipe-child: {status}");
            ExitCode::FAILURE
        }
    }
}

fn testing() -> Services {
    Services::new().add_service(testing_service())
}

async fn worker() -> Result<(), Status> {
    process::serve_parent(testing()).await?;
    process::parent_gone().await;
    Ok(())
}

async fn worker_32m() -> Result<(), Status> {
    process::serve_parent(testing().max_frame(32 << 20)).await?;
    process::parent_gone().await;
    Ok(())
}

/// A child whose calls need the bearer token `token`.
async fn worker_token(token: &str) -> Result<(), Status> {
    let services = testing().layer(switchyard::layers::RequireBearer::new(token));
    process::serve_parent(services).await?;
    process::parent_gone().await;
    Ok(())
}

/// A child serving one call at a time, with at most 256 bytes of metadata.
async fn worker_tight() -> Result<(), Status> {
    process::serve_parent(testing().max_in_flight(1).max_metadata(256, 8)).await?;
    process::parent_gone().await;
    Ok(())
}

async fn call_parent() -> Result<(), Status> {
    let channel = Channel::connect("testing").await?;
    let sum = TestingClient::new(channel.clone()).add(2, 3).await?;
    let selection = channel.selection();
    println!("{} {sum} {}", selection.transport, selection.reason);
    Ok(())
}

async fn garbage(after_hello: bool) -> Result<(), Status> {
    if after_hello {
        process::serve_parent(testing()).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let value = std::env::var(process::PIPE_ENV).unwrap_or_default();
    let write_fd = value.rsplit(',').next().unwrap_or_default();
    // Opening /proc/self/fd/N of a pipe opens the same pipe.
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{write_fd}"))
        .map_err(|e| Status::internal(e.to_string()))?;
    pipe.write_all(b"this is not a switchyard frame, not even close")
        .map_err(|e| Status::internal(e.to_string()))?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

async fn orphan(marker: &str) -> Result<(), Status> {
    process::serve_parent(testing()).await?;
    process::parent_gone().await;
    std::fs::write(marker, "parent gone").map_err(|e| Status::internal(e.to_string()))?;
    Ok(())
}

async fn waiter(marker: &str) -> Result<(), Status> {
    let client = TestingClient::new(process::parent_channel().await?);
    let outcome = client.sleep(60_000).await;
    let text = match outcome {
        Ok(_) => "ok".to_owned(),
        Err(status) => status.to_string(),
    };
    tokio::time::timeout(Duration::from_secs(10), process::parent_gone())
        .await
        .map_err(|_| Status::deadline_exceeded("parent_gone did not resolve"))?;
    std::fs::write(marker, text).map_err(|e| Status::internal(e.to_string()))?;
    Ok(())
}

async fn middle(mode: &str, marker: &str) -> Result<(), Status> {
    let exe = std::env::current_exe().map_err(|e| Status::internal(e.to_string()))?;
    let mut command = std::process::Command::new(exe);
    command.args([mode, marker]);
    let child = Spawner::new(command)
        .add_service(TestingServer::new(TestingImpl::default()))
        .spawn()
        .await?;
    println!("ready {}", child.id());
    let _ = std::io::stdout().flush();
    std::future::pending::<()>().await;
    Ok(())
}

async fn grandchild_fds() -> Result<(), Status> {
    let _ = process::parent_channel().await?;
    let out = std::process::Command::new("/bin/ls")
        .arg("/proc/self/fd")
        .output()
        .map_err(|e| Status::internal(e.to_string()))?;
    let fds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let value = std::env::var(process::PIPE_ENV).unwrap_or_default();
    let pipe_fds = value
        .split(':')
        .nth(1)
        .unwrap_or_default()
        .replace(',', " ");
    println!("grandchild {}", fds.join(" "));
    println!("pipes {pipe_fds}");
    Ok(())
}

fn same_fd_twice() -> Result<(), Status> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::ExitStatusExt;
    let internal = |e: std::io::Error| Status::internal(e.to_string());
    // Without close-on-exec, so the child inherits both ends.
    let (read, _write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::empty())
        .map_err(|e| internal(e.into()))?;
    let fd = read.as_raw_fd();
    let exe = std::env::current_exe().map_err(internal)?;
    let out = std::process::Command::new(exe)
        .arg("call-parent")
        .env(
            process::PIPE_ENV,
            format!("{}:{fd},{fd}", std::process::id()),
        )
        .env(process::PARENT_SERVICES_ENV, "testing")
        .output()
        .map_err(internal)?;
    match (out.status.code(), out.status.signal()) {
        (Some(code), _) => println!("exit {code}"),
        (None, Some(signal)) => println!("signal {signal}"),
        (None, None) => println!("ended"),
    }
    print!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
