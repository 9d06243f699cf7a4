//! The little HTTP/1.1 that etcd's JSON gateway (`/v3/...`) needs: one
//! POST per connection (`Connection: close`) with a JSON body, and an
//! answer whose body has a `Content-Length` or is chunked. A streaming call
//! (a watch, a lease keep-alive) answers one JSON object per line for as
//! long as it lasts ([`Answer::next_line`]).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The most an answer's head may take.
const MAX_HEAD: usize = 16 * 1024;
/// The most one JSON object of an answer may take (a range over many
/// replicas, a watch event).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Why a request to etcd failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// Nothing answered at the address.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed mid-request.
    #[error("the connection to {addr} failed: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The request took longer than its timeout.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The bound.
        timeout: Duration,
    },
    /// The server answered with an error (etcd's JSON error, if any).
    #[error("{addr} answered HTTP {code}: {message}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The HTTP status code.
        code: u16,
        /// etcd's message, or the body.
        message: String,
    },
    /// The answer is not HTTP/1.1 with JSON as etcd's gateway sends it.
    #[error("{addr} sent an answer that is not etcd's: {why}")]
    Malformed {
        /// `host:port`.
        addr: String,
        /// What was wrong.
        why: String,
    },
}

/// How the body of an answer is delimited.
#[derive(Debug)]
enum Framing {
    /// This many bytes are left.
    Length(usize),
    /// Chunked; this many bytes are left in the current chunk (`None`
    /// before the first chunk's size line).
    Chunked(Option<usize>),
    /// Until the connection closes.
    Close,
}

/// The body of an answer, read as it arrives.
#[derive(Debug)]
pub(crate) struct Answer {
    addr: String,
    reader: BufReader<TcpStream>,
    framing: Framing,
    /// Body bytes read but not yet given out as a line.
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no newline.
    scanned: usize,
    done: bool,
}

/// POSTs `body` to `path` at `addr` (`host:port`) and returns the answer's
/// head checked (2xx), its body left to read; `timeout` bounds connecting,
/// sending and the head.
pub(crate) async fn post(
    addr: &str,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Answer, HttpError> {
    tokio::time::timeout(timeout, start(addr, path, body))
        .await
        .map_err(|_| HttpError::Timeout {
            addr: addr.to_owned(),
            timeout,
        })?
}

/// POSTs and reads the whole answer as one JSON value, within `timeout`.
pub(crate) async fn call(
    addr: &str,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Value, HttpError> {
    let whole = async {
        let mut answer = start(addr, path, body).await?;
        let bytes = answer.rest().await?;
        serde_json::from_slice(&bytes).map_err(|err| answer.malformed(format!("not JSON: {err}")))
    };
    tokio::time::timeout(timeout, whole)
        .await
        .map_err(|_| HttpError::Timeout {
            addr: addr.to_owned(),
            timeout,
        })?
}

async fn start(addr: &str, path: &str, body: &Value) -> Result<Answer, HttpError> {
    let io = |source| HttpError::Io {
        addr: addr.to_owned(),
        source,
    };
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    // A watch's connection is quiet for long stretches: keep-alive probes
    // find a member that died without a word (in about 25 s).
    keep_alive(&stream);
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut answer = Answer {
        addr: addr.to_owned(),
        reader: BufReader::new(stream),
        framing: Framing::Close,
        pending: Vec::new(),
        scanned: 0,
        done: false,
    };
    answer.read_head().await?;
    Ok(answer)
}

/// TCP keep-alive on `stream`: first probe after 10 s idle, then every
/// 5 s, given up after 3 unanswered.
fn keep_alive(stream: &TcpStream) {
    use rustix::net::sockopt;
    let fd = std::os::fd::AsFd::as_fd(stream);
    let _ = sockopt::set_socket_keepalive(fd, true);
    let _ = sockopt::set_tcp_keepidle(fd, Duration::from_secs(10));
    let _ = sockopt::set_tcp_keepintvl(fd, Duration::from_secs(5));
    let _ = sockopt::set_tcp_keepcnt(fd, 3);
}

impl Answer {
    fn malformed(&self, why: impl Into<String>) -> HttpError {
        HttpError::Malformed {
            addr: self.addr.clone(),
            why: why.into(),
        }
    }

    fn io(&self, source: std::io::Error) -> HttpError {
        HttpError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Reads and checks the status line and headers.
    async fn read_head(&mut self) -> Result<(), HttpError> {
        let mut head = Vec::new();
        loop {
            let before = head.len();
            let read = (&mut self.reader)
                .take((MAX_HEAD - before) as u64)
                .read_until(b'\n', &mut head)
                .await
                .map_err(|err| self.io(err))?;
            if read == 0 {
                return Err(self.malformed(if head.len() >= MAX_HEAD {
                    "its head is over 16 KiB"
                } else {
                    "the connection closed before the head ended"
                }));
            }
            if head.ends_with(b"\r\n\r\n") || head[before..] == *b"\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(self.malformed("its head is incomplete")),
            Err(err) => return Err(self.malformed(format!("its head does not parse: {err}"))),
        }
        let code = response.code.unwrap_or(0);
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        self.framing = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            Framing::Chunked(None)
        } else if let Some(length) = header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| self.malformed(format!("Content-Length {length:?}")))?;
            if length > MAX_BODY {
                return Err(self.malformed(format!("its body of {length} bytes is over 4 MiB")));
            }
            Framing::Length(length)
        } else {
            Framing::Close
        };
        if !(200..300).contains(&code) {
            let body = self.rest().await.unwrap_or_default();
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(HttpError::Refused {
                addr: self.addr.clone(),
                code,
                message,
            });
        }
        Ok(())
    }

    /// The next bytes of the body into `pending`; false at its end.
    async fn fill(&mut self) -> Result<bool, HttpError> {
        if self.done {
            return Ok(false);
        }
        loop {
            let want = match &mut self.framing {
                Framing::Length(0) => {
                    self.done = true;
                    return Ok(false);
                }
                Framing::Length(left) => *left,
                Framing::Close => usize::MAX,
                Framing::Chunked(Some(0)) => {
                    // The CRLF after a chunk's data.
                    self.read_line().await?;
                    self.framing = Framing::Chunked(None);
                    continue;
                }
                Framing::Chunked(Some(left)) => *left,
                Framing::Chunked(None) => {
                    let line = self.read_line().await?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size, 16)
                        .map_err(|_| self.malformed(format!("chunk size {size:?}")))?;
                    if size == 0 {
                        self.done = true;
                        return Ok(false);
                    }
                    self.framing = Framing::Chunked(Some(size));
                    continue;
                }
            };
            let buf = match self.reader.fill_buf().await {
                Ok(buf) => buf,
                Err(source) => {
                    return Err(HttpError::Io {
                        addr: self.addr.clone(),
                        source,
                    });
                }
            };
            if buf.is_empty() {
                return match self.framing {
                    Framing::Close => {
                        self.done = true;
                        Ok(false)
                    }
                    _ => Err(self.malformed("the connection closed mid-body")),
                };
            }
            let n = buf.len().min(want);
            if self.pending.len() + n > MAX_BODY {
                return Err(self.malformed("one object of its body is over 4 MiB"));
            }
            self.pending.extend_from_slice(&buf[..n]);
            self.reader.consume(n);
            match &mut self.framing {
                Framing::Length(left) | Framing::Chunked(Some(left)) => *left -= n,
                _ => {}
            }
            return Ok(true);
        }
    }

    /// One CRLF-ended line of chunk framing.
    async fn read_line(&mut self) -> Result<String, HttpError> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(256)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|err| self.io(err))?;
        if read == 0 || !line.ends_with(b"\n") {
            return Err(self.malformed("a chunk's framing line is cut or over 256 bytes"));
        }
        Ok(String::from_utf8_lossy(&line).trim().to_owned())
    }

    /// The rest of the body.
    async fn rest(&mut self) -> Result<Vec<u8>, HttpError> {
        while self.fill().await? {}
        Ok(std::mem::take(&mut self.pending))
    }

    /// The next JSON object of a streaming answer (one per line); `None`
    /// when the answer ends.
    pub(crate) async fn next_line(&mut self) -> Result<Option<Value>, HttpError> {
        loop {
            if let Some(at) = self.pending[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
            {
                let end = self.scanned + at;
                self.scanned = 0;
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|err| self.malformed(format!("a line is not JSON: {err}")));
            }
            self.scanned = self.pending.len();
            if !self.fill().await? {
                self.scanned = 0;
                if self.pending.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.pending);
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|err| self.malformed(format!("a line is not JSON: {err}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers one request with `answer`, returning what it
    /// was sent.
    async fn serve_once(answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let n = stream.read(&mut request).await.unwrap();
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_length_delimited_answer_is_one_value() {
        let (addr, task) =
            serve_once("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n").await;
        let body = serde_json::json!({"key": "eA=="});
        let value = call(&addr, "/v3/kv/range", &body, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(value["a"], 1);
        let request = task.await.unwrap();
        assert!(
            request.starts_with("POST /v3/kv/range HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with("{\"key\":\"eA==\"}"), "{request}");
    }

    #[tokio::test]
    async fn a_chunked_stream_gives_one_value_per_line_across_chunks() {
        let (addr, _task) = serve_once(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\n{\"a\":\r\n4\r\n1}\n{\r\n6\r\n\"a\":2}\r\n1\r\n\n\r\n0\r\n\r\n",
        )
        .await;
        let mut answer = post(&addr, "/v3/watch", &Value::Null, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answer.next_line().await.unwrap().unwrap()["a"], 1);
        assert_eq!(answer.next_line().await.unwrap().unwrap()["a"], 2);
        assert!(answer.next_line().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_error_answer_gives_etcds_message() {
        let (addr, _task) = serve_once(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 45\r\n\r\n\
             {\"message\":\"requested lease not found\",\"x\":1}",
        )
        .await;
        let err = call(&addr, "/v3/kv/put", &Value::Null, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HttpError::Refused { code: 404, message, .. } if message == "requested lease not found"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_is_malformed_not_a_panic() {
        let (addr, _task) = serve_once("SSH-2.0-OpenSSH\r\n\r\n").await;
        let err = call(&addr, "/v3/kv/range", &Value::Null, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Malformed { .. }), "{err}");
        let (addr, _task) =
            serve_once("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await;
        let err = call(&addr, "/v3/kv/range", &Value::Null, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("chunk size"), "{err}");
    }
}
