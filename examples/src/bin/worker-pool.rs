//! A parent that spreads work over N child processes and gathers the
//! results, each child reached over its own pipes.
//!
//! `cargo run --release -p switchyard-examples --bin worker-pool -- [workers] [jobs]`

use std::time::Instant;

use switchyard::process::{self, ChildProcess, Services, Spawner};

/// What each worker process serves to its parent.
#[switchyard::service]
pub trait Worker {
    /// The number of Collatz steps from `start` down to 1.
    async fn collatz_steps(&self, start: u64) -> u32;
    /// The worker's process id.
    async fn pid(&self) -> u32;
}

struct Collatz;

impl Worker for Collatz {
    async fn collatz_steps(&self, start: u64) -> u32 {
        let (mut n, mut steps) = (start.max(1), 0);
        while n != 1 {
            n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
            steps += 1;
        }
        steps
    }

    async fn pid(&self) -> u32 {
        std::process::id()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if process::parent().is_some() {
        // A worker: serve the parent until it is gone, then exit.
        process::serve_parent(Services::new().add_service(WorkerServer::new(Collatz))).await?;
        process::parent_gone().await;
        return Ok(());
    }
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let workers = args.next().transpose()?.unwrap_or(4).max(1) as usize;
    let jobs = args.next().transpose()?.unwrap_or(10_000);

    let exe = std::env::current_exe()?;
    let mut children: Vec<ChildProcess> = Vec::new();
    for _ in 0..workers {
        children.push(
            Spawner::new(std::process::Command::new(&exe))
                .spawn()
                .await?,
        );
    }
    let clients: Vec<WorkerClient> = children
        .iter()
        .map(|child| WorkerClient::new(child.channel()))
        .collect();
    println!(
        "{workers} workers ({}) over {}",
        children
            .iter()
            .map(|c| c.id().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        clients[0].selection()
    );

    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let mine: Vec<u64> = (1..=jobs).filter(|j| *j as usize % workers == i).collect();
        tasks.push(tokio::spawn(async move {
            let mut best = (0u64, 0u32);
            for job in mine {
                let steps = client.collatz_steps(job).await?;
                if steps > best.1 {
                    best = (job, steps);
                }
            }
            Ok::<_, switchyard::Status>((client.pid().await?, best))
        }));
    }
    let mut overall = (0u64, 0u32);
    for task in tasks {
        let (pid, best) = task.await??;
        println!(
            "worker {pid}: longest chain starts at {} ({} steps)",
            best.0, best.1
        );
        if best.1 > overall.1 {
            overall = best;
        }
    }
    println!(
        "{jobs} jobs in {:.1} ms; longest chain below {jobs}: {} ({} steps)",
        start.elapsed().as_secs_f64() * 1e3,
        overall.0,
        overall.1
    );
    // Closing the pipes tells each worker its parent is done; they exit.
    for child in children {
        let pid = child.id();
        let status = child.shutdown(std::time::Duration::from_secs(5)).await;
        println!("worker {pid} {status}");
    }
    Ok(())
}
