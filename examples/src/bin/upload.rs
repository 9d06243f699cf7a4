//! Uploads a file (or generated data) to the stream server in 64 KiB
//! chunks (client streaming) with a progress bar, then checks the size and
//! SHA-256 the server answers with against what was sent.
//!
//! ```text
//! cargo run -p switchyard-examples --bin stream-server      # first, in another terminal
//! cargo run -p switchyard-examples --bin upload -- FILE [--as NAME]
//! cargo run -p switchyard-examples --bin upload -- --generate 256MiB [--as NAME]
//! ```

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::Stream;
use switchyard::Bytes;
use switchyard_examples::files::{FilesClient, hex};
use tokio::sync::oneshot;

const USAGE: &str = "usage:\n  upload FILE [--as NAME]\n  upload --generate SIZE [--as NAME]   \
                     (SIZE: bytes, or with KiB, MiB, GiB)";

/// Bytes per message.
const CHUNK: usize = 64 << 10;

/// Characters of the progress bar between its brackets.
const BAR: usize = 30;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match upload(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("upload: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn upload(args: &[String]) -> Result<(), String> {
    let (input, name) = parse(args)?;
    let (reader, total): (Box<dyn Read + Send>, u64) = match &input {
        Input::File(path) => {
            let file =
                std::fs::File::open(path).map_err(|err| format!("could not open {path}: {err}"))?;
            let len = file
                .metadata()
                .map_err(|err| format!("could not read the size of {path}: {err}"))?
                .len();
            (Box::new(file), len)
        }
        Input::Generated(size) => (
            Box::new(Generated {
                left: *size,
                state: 0x9e37_79b9,
            }),
            *size,
        ),
    };
    let files = FilesClient::connect("files").await.map_err(|status| {
        format!(
            "could not reach the Files service: {status}\nstart it first: cargo run -p \
             switchyard-examples --bin stream-server"
        )
    })?;

    let (chunks, source) = Source::stream(reader);
    let Source {
        sent,
        digest,
        failed,
    } = source;
    let started = Instant::now();
    let call = files.upload(name.clone(), chunks);
    tokio::pin!(call);
    let mut failed = Some(failed);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let receipt = loop {
        tokio::select! {
            receipt = &mut call => break receipt,
            // Leaving the loop drops the call: it is cancelled, and the
            // server throws its partial file away.
            read = async { failed.as_mut().expect("polled only while Some").await },
                if failed.is_some() =>
            {
                match read {
                    Ok(message) => {
                        println!();
                        return Err(format!(
                            "could not read {input}: {message}; the upload was cancelled"
                        ));
                    }
                    // The input ended: reading can no longer fail.
                    Err(_) => failed = None,
                }
            }
            _ = tick.tick() => draw(sent.load(Ordering::Relaxed), total, started.elapsed()),
        }
    };
    if receipt.is_ok() {
        draw(sent.load(Ordering::Relaxed), total, started.elapsed());
    }
    println!();
    let receipt = receipt.map_err(|status| format!("the upload failed: {status}"))?;
    let took = started.elapsed();
    let sent = sent.load(Ordering::Relaxed);
    let digest = digest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default();
    println!(
        "sent {input} as {name}: {} in {took:.1?} ({}) over {}",
        mib(sent),
        rate(sent, took),
        files.selection().transport
    );
    println!(
        "server stored {}: {} bytes, sha256 {}",
        receipt.path, receipt.bytes, receipt.sha256
    );
    if receipt.bytes != sent || receipt.sha256 != digest {
        return Err(format!(
            "the server stored {} bytes with sha256 {}, but {sent} bytes with sha256 {digest} \
             were sent: the stored file is not what was sent; upload it again",
            receipt.bytes, receipt.sha256
        ));
    }
    println!("size and sha256 match what was sent");
    Ok(())
}

/// What to upload.
enum Input {
    File(String),
    Generated(u64),
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.write_str(path),
            Self::Generated(size) => write!(f, "{} of generated data", mib(*size)),
        }
    }
}

/// The input and the name to store it as.
fn parse(args: &[String]) -> Result<(Input, String), String> {
    let (args, name) = match args {
        [rest @ .., flag, name] if flag == "--as" => (rest, Some(name.clone())),
        rest => (rest, None),
    };
    let input = match args {
        [flag, size] if flag == "--generate" => Input::Generated(parse_size(size)?),
        [path] if !path.starts_with("--") => Input::File(path.clone()),
        _ => return Err(USAGE.to_owned()),
    };
    let name = name.unwrap_or_else(|| match &input {
        Input::File(path) => std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.clone()),
        Input::Generated(size) => format!("generated-{size}.bin"),
    });
    Ok((input, name))
}

/// `1024`, `64KiB`, `256MiB`, `1GiB` (or KB/MB/GB, K/M/G: the same
/// binary units) as bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size: write it as 1024, 64KiB, 256MiB or 1GiB"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?} is not a size: write it as 1024, 64KiB, 256MiB or 1GiB"))
}

/// The chunks being sent, read from `reader`, counted and digested on the
/// way out.
struct Source {
    /// Bytes handed to the call so far.
    sent: Arc<AtomicU64>,
    /// The SHA-256 of everything sent, once the input ended.
    digest: Arc<Mutex<Option<String>>>,
    /// Why the input could not be read, if it could not.
    failed: oneshot::Receiver<String>,
}

impl Source {
    /// The stream of chunks for the call, and what it reports.
    fn stream(reader: Box<dyn Read + Send>) -> (impl Stream<Item = Bytes> + Send + 'static, Self) {
        let sent = Arc::new(AtomicU64::new(0));
        let digest = Arc::new(Mutex::new(None));
        let (fail, failed) = oneshot::channel();
        let state = Reading {
            reader,
            context: ring::digest::Context::new(&ring::digest::SHA256),
            sent: Arc::clone(&sent),
            digest: Arc::clone(&digest),
            fail: Some(fail),
        };
        // Plain blocking reads of one chunk keep the example short.
        let chunks = futures_util::stream::unfold(state, |mut state| async move {
            let mut chunk = vec![0; CHUNK];
            match read_full(&mut state.reader, &mut chunk) {
                Ok(0) => {
                    let done = hex(state.context.clone().finish().as_ref());
                    *state.digest.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
                    None
                }
                Ok(len) => {
                    chunk.truncate(len);
                    state.context.update(&chunk);
                    state.sent.fetch_add(len as u64, Ordering::Relaxed);
                    Some((Bytes::from(chunk), state))
                }
                Err(err) => {
                    // A stream of plain chunks cannot fail; tell the caller,
                    // who cancels the call, and send nothing more.
                    if let Some(fail) = state.fail.take() {
                        let _ = fail.send(err.to_string());
                    }
                    std::future::pending().await
                }
            }
        });
        (
            chunks,
            Self {
                sent,
                digest,
                failed,
            },
        )
    }
}

/// The state of the chunk stream.
struct Reading {
    reader: Box<dyn Read + Send>,
    context: ring::digest::Context,
    sent: Arc<AtomicU64>,
    digest: Arc<Mutex<Option<String>>>,
    fail: Option<oneshot::Sender<String>>,
}

/// Reads until `buf` is full or the input ends: how much it read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// `size` bytes of cheap pseudo-random data (xorshift32), so the digest is
/// not that of zeros.
struct Generated {
    left: u64,
    state: u32,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for byte in &mut buf[..len] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            *byte = self.state as u8;
        }
        self.left -= len as u64;
        Ok(len)
    }
}

/// Redraws the progress bar in place: `[#####     ] 45% 12.3 MiB/s`.
fn draw(sent: u64, total: u64, elapsed: Duration) {
    let fraction = if total == 0 {
        1.0
    } else {
        (sent as f64 / total as f64).min(1.0)
    };
    let filled = (fraction * BAR as f64).round() as usize;
    print!(
        "\r[{}{}] {:>3.0}% {} of {}  ",
        "#".repeat(filled),
        " ".repeat(BAR - filled),
        fraction * 100.0,
        rate(sent, elapsed),
        mib(total)
    );
    let _ = std::io::stdout().flush();
}

fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!("{:.1} MiB/s", bytes as f64 / secs / (1u64 << 20) as f64)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
