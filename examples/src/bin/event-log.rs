//! Prioritised one-way log events through the consumer's POSIX message
//! queue: the consumer is killed in the middle and restarted, and nothing is
//! lost; alerts sent behind a backlog of routine events are handled first.
//!
//! `cargo run -p switchyard-examples --bin event-log`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard::{Channel, Server};

/// Where producers send their events.
#[switchyard::service]
pub trait EventLog {
    /// A routine event.
    #[switchyard(oneway, priority = 1)]
    async fn info(&self, seq: u64, text: String);
    /// An event that goes ahead of queued routine ones.
    #[switchyard(oneway, priority = 9)]
    async fn alert(&self, seq: u64, text: String);
}

/// The consumer: appends every event to a file.
struct Writer(PathBuf);

impl Writer {
    fn append(&self, line: String) {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

impl EventLog for Writer {
    async fn info(&self, seq: u64, text: String) {
        self.append(format!("info  {seq:>2} {text}"));
    }

    async fn alert(&self, seq: u64, text: String) {
        self.append(format!("ALERT {seq:>2} {text}"));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("consume") {
        let server = Server::builder()
            .add_service(EventLogServer::new(Writer(PathBuf::from(&args[1]))))
            .start()
            .await?;
        println!("ready");
        server.run_until_signal().await;
        return Ok(());
    }

    let dir = std::env::temp_dir().join(format!("switchyard-event-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("events.txt");
    let mut consumer = Consumer::start(&dir, &log)?;
    let channel = connect(&dir).await?;
    let events = EventLogClient::new(channel.clone());
    println!(
        "one-way events travel over {}",
        channel.oneway_selection(&EVENT_LOG_DESCRIPTOR)
    );

    let mut seq = 0;
    for _ in 0..3 {
        seq += 1;
        events.info(seq, "consumer up".into()).await?;
    }
    wait_for_lines(&log, 3).await;
    println!("killing the consumer (SIGKILL) with events still to come");
    consumer.kill();
    // The queue holds fs.mqueue.msg_max messages; leave room for the alerts.
    let capacity = switchyard::transport::mqueue::limits()?.msg_max;
    for _ in 0..capacity.saturating_sub(2) {
        seq += 1;
        events
            .info(seq, "sent while the consumer is down".into())
            .await?;
    }
    for _ in 0..2 {
        seq += 1;
        events.alert(seq, "disk almost full".into()).await?;
    }
    println!(
        "{} events wait in the kernel; restarting the consumer",
        capacity
    );
    let consumer = Consumer::start(&dir, &log)?;
    let total = seq as usize;
    let lines = wait_for_lines(&log, total).await;
    println!("the consumer's log, in the order it handled the events:");
    for line in &lines {
        println!("  {line}");
    }
    let mut seen: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    seen.sort_unstable();
    let complete = seen == (1..=seq).collect::<Vec<_>>();
    println!(
        "{} events sent, {} handled, each exactly once: {complete}",
        total,
        lines.len()
    );
    // The client goes first, so the consumer's graceful stop has no
    // connection to drain.
    drop(events);
    drop(channel);
    drop(consumer);
    // A stopped consumer keeps its queue for its next start; the demo is
    // over, so the (now empty) queue goes with its runtime directory.
    let queue = switchyard::transport::mqueue::service_queue_name(&dir, "eventlog");
    let _ = switchyard::transport::mqueue::remove_if_empty(&queue);
    let _ = std::fs::remove_dir_all(&dir);
    if !complete {
        return Err("events were lost or duplicated".into());
    }
    Ok(())
}

/// A consumer process; killed when dropped.
struct Consumer(Child);

impl Consumer {
    fn start(dir: &Path, log: &Path) -> std::io::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("consume")
            .arg(log)
            .env("SWITCHYARD_RUNTIME_DIR", dir)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        Ok(Self(child))
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // SIGTERM: a graceful stop (the queue stays for the next start).
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

async fn connect(dir: &Path) -> Result<Channel, switchyard::Status> {
    Channel::builder()
        .runtime_dir(dir)
        .connect("eventlog")
        .await
}

async fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
