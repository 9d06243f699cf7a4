//! The `Files` service of the streaming examples: uploads stored with their
//! SHA-256 (client streaming), and the lines appended to a file as they are
//! written (server streaming), both inside one directory of the server.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard::{Bytes, Status, Streaming};

/// How often `tail` looks for new lines in its file.
pub const TAIL_POLL: Duration = Duration::from_millis(100);

/// The longest line `tail` sends in one piece (bytes); a longer one goes in
/// pieces of this size.
const MAX_LINE: usize = 64 << 10;

/// What the server stored for an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Where the file is on the server.
    pub path: String,
    /// Bytes stored.
    pub bytes: u64,
    /// SHA-256 of the stored bytes, lower-case hex (what `sha256sum` prints).
    pub sha256: String,
}

/// Files in one directory of the server, streamed in and out.
#[switchyard::service]
pub trait Files {
    /// Stores `chunks` as the file `name` in the server's directory and
    /// answers with its size and digest. The file appears only once every
    /// chunk has arrived: a cancelled upload leaves nothing behind.
    async fn upload(&self, name: String, chunks: Streaming<Bytes>) -> Result<Receipt, Status>;
    /// The lines appended to the file `name` in the server's directory from
    /// now on (all its lines first with `from_start`), each as it is
    /// written, until the caller drops the stream.
    async fn tail(&self, name: String, from_start: bool) -> Result<Streaming<String>, Status>;
}

/// The `Files` service over a directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store of the files in `dir`, which must exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory it stores files in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file `name` is: a plain name in the directory, nothing
    /// that climbs out of it.
    fn path_of(&self, name: &str) -> Result<PathBuf, Status> {
        let plain =
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(Status::invalid_argument(format!(
                "{name:?} is not a plain file name; name a file in the server's directory {} \
                 without '/' or '..'",
                self.dir.display()
            )));
        }
        Ok(self.dir.join(name))
    }
}

impl Files for Store {
    async fn upload(&self, name: String, mut chunks: Streaming<Bytes>) -> Result<Receipt, Status> {
        let path = self.path_of(&name)?;
        let partial = PartFile::create(self.dir.join(format!(".{name}.part")))?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut bytes = 0u64;
        // Plain blocking writes keep the example short; a chunk is 64 KiB.
        while let Some(chunk) = chunks.message().await? {
            partial.write(&chunk)?;
            digest.update(&chunk);
            bytes += chunk.len() as u64;
        }
        partial.keep_as(&path)?;
        Ok(Receipt {
            path: path.display().to_string(),
            bytes,
            sha256: hex(digest.finish().as_ref()),
        })
    }

    async fn tail(&self, name: String, from_start: bool) -> Result<Streaming<String>, Status> {
        let path = self.path_of(&name)?;
        let mut file = File::open(&path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => Status::not_found(format!(
                "there is no file {name:?} in the server's directory {}; create it \
                 (`echo hello >> {}`) or check the name",
                self.dir.display(),
                path.display()
            )),
            _ => Status::internal(format!("could not open {}: {err}", path.display())),
        })?;
        let pos = if from_start {
            0
        } else {
            file.seek(SeekFrom::End(0))
                .map_err(|err| Status::internal(format!("could not seek {name:?}: {err}")))?
        };
        let tail = Tail {
            file,
            name,
            pos,
            partial: Vec::new(),
            lines: VecDeque::new(),
        };
        // No task of its own: when the caller drops the stream, the call is
        // cancelled and this stream, file and all, is dropped with it.
        Ok(Streaming::new(futures_util::stream::unfold(
            tail,
            |mut tail| async move {
                loop {
                    if let Some(line) = tail.lines.pop_front() {
                        return Some((Ok(line), tail));
                    }
                    match tail.read_more() {
                        Ok(true) => {}
                        Ok(false) => tokio::time::sleep(TAIL_POLL).await,
                        Err(status) => return Some((Err(status), tail)),
                    }
                }
            },
        )))
    }
}

/// An upload being written: removed when dropped unless kept, so a failed
/// or cancelled upload leaves nothing behind.
struct PartFile {
    path: PathBuf,
    file: File,
    kept: bool,
}

impl PartFile {
    fn create(path: PathBuf) -> Result<Self, Status> {
        let file = File::create(&path).map_err(|err| {
            Status::internal(format!(
                "could not create {}: {err}; check that the server's directory exists and is \
                 writable",
                path.display()
            ))
        })?;
        Ok(Self {
            path,
            file,
            kept: false,
        })
    }

    fn write(&self, chunk: &[u8]) -> Result<(), Status> {
        (&self.file).write_all(chunk).map_err(|err| {
            Status::resource_exhausted(format!(
                "could not write {}: {err}; free space on the server's disk and upload again",
                self.path.display()
            ))
        })
    }

    /// Renames it to `path`: the upload is complete.
    fn keep_as(mut self, path: &Path) -> Result<(), Status> {
        std::fs::rename(&self.path, path).map_err(|err| {
            Status::internal(format!(
                "could not rename {} to {}: {err}",
                self.path.display(),
                path.display()
            ))
        })?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A file being followed: where it was read up to, and the lines read but
/// not sent yet.
struct Tail {
    file: File,
    name: String,
    pos: u64,
    /// The start of a line whose end is not written yet.
    partial: Vec<u8>,
    lines: VecDeque<String>,
}

impl Tail {
    /// Reads what was appended since the last read: whether there was any.
    fn read_more(&mut self) -> Result<bool, Status> {
        let failed = |err: std::io::Error| {
            Status::internal(format!(
                "could not read {:?}: {err}; tail it again once it is back",
                self.name
            ))
        };
        let len = self.file.metadata().map_err(failed)?.len();
        if len < self.pos {
            // Truncated (a log rotated by copy-and-truncate): start over.
            self.pos = 0;
            self.partial.clear();
        }
        if len == self.pos {
            return Ok(false);
        }
        self.file.seek(SeekFrom::Start(self.pos)).map_err(failed)?;
        let mut buf = vec![0; (len - self.pos).min(MAX_LINE as u64) as usize];
        let read = self.file.read(&mut buf).map_err(failed)?;
        self.pos += read as u64;
        for &byte in &buf[..read] {
            if byte == b'\n' || self.partial.len() == MAX_LINE {
                let line = std::mem::take(&mut self.partial);
                let line = line.strip_suffix(b"\r").unwrap_or(&line);
                self.lines
                    .push_back(String::from_utf8_lossy(line).into_owned());
            }
            if byte != b'\n' {
                self.partial.push(byte);
            }
        }
        Ok(read > 0)
    }
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
