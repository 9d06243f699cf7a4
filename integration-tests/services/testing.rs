/// What the `Testing` service's `fail` method returns as its error.
#[derive(Debug, Clone, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize)]
pub struct TestError {
    /// A message that must survive the trip byte for byte.
    pub message: String,
}

/// One request of `full_duplex_call` (gRPC's `StreamingOutputCallRequest`
/// with one response parameter).
#[derive(Debug, Clone, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize)]
pub struct DuplexRequest {
    /// Bytes of the payload to answer with.
    pub response_size: u64,
    /// Instead of answering, end the stream with this status (code,
    /// message).
    pub end_with: Option<(u16, String)>,
}

/// A service whose methods exercise the runtime: payloads, deadlines,
/// cancellation, metadata, errors, panics and one-way calls.
#[switchyard::service]
pub trait Testing {
    /// Returns its argument.
    async fn echo(&self, payload: Vec<u8>) -> Vec<u8>;
    /// Adds.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Sleeps, then returns how many milliseconds it slept.
    async fn sleep(&self, millis: u64) -> u64;
    /// Sleeps; if dropped before finishing (cancelled), creates `marker`.
    async fn sleep_or_mark(&self, millis: u64, marker: String) -> bool;
    /// The first value of metadata `key`, as text.
    async fn metadata(&self, key: String) -> Option<String>;
    /// Milliseconds left until the call's deadline, as the handler sees it.
    async fn deadline_left(&self) -> Option<u64>;
    /// Fails with `message`.
    async fn fail(&self, message: String) -> Result<(), TestError>;
    /// Panics.
    async fn panic(&self);
    /// Requests this server has started handling so far.
    async fn requests_seen(&self) -> u64;
    /// Appends `line` to the file named `path` (one-way).
    #[switchyard(oneway)]
    async fn record(&self, path: String, line: String);
    /// Appends `line` to `path`, ahead of queued `record` calls (one-way,
    /// priority 5).
    #[switchyard(oneway, priority = 5)]
    async fn record_urgent(&self, path: String, line: String);
    /// Returns a payload of `len` bytes.
    async fn payload(&self, len: u64) -> Vec<u8>;
    /// The serving process's id; idempotent, so a channel retries it.
    #[switchyard(idempotent)]
    async fn pid(&self) -> u32;
    /// The trace id of this call, as the handler sees it.
    async fn trace_id(&self) -> Option<String>;
    /// Calls `trace_id` and `deadline_left` on the server at `target` from
    /// inside this handler: (this call's trace id, the downstream call's
    /// trace id, the downstream call's remaining deadline in ms).
    async fn forward(&self, target: String) -> (Option<String>, Option<String>, Option<u64>);
    /// The first value of metadata `key`, as bytes (binary metadata).
    async fn metadata_bin(&self, key: String) -> Option<Vec<u8>>;
    /// gRPC's `UnaryCall`: takes a payload and answers with a digest of
    /// it (length, FNV-1a 64) and a payload of `response_size` bytes (see
    /// `payload_pattern`).
    async fn unary_call(&self, payload: switchyard::Bytes, response_size: u64) -> (u64, u64, switchyard::Bytes);
    /// Fails with the status `code` and `message`: the handler's own
    /// status is the call's.
    async fn status(&self, code: u16, message: String) -> Result<(), switchyard::Status>;
    /// gRPC's `StreamingOutputCall`: one message per entry of `sizes`, a
    /// payload of that many bytes (see `payload_pattern`, seeded with the
    /// message's index), `interval_ms` apart; then the end, or `end_with`'s
    /// status.
    async fn streaming_output_call(
        &self,
        sizes: Vec<u64>,
        interval_ms: u64,
        end_with: Option<(u16, String)>,
    ) -> switchyard::Streaming<switchyard::Bytes>;
    /// gRPC's `StreamingInputCall`: the payloads' total size, their count
    /// and a 64-bit FNV-1a over all their bytes in order.
    async fn streaming_input_call(
        &self,
        payloads: switchyard::Streaming<switchyard::Bytes>,
    ) -> Result<(u64, u64, u64), switchyard::Status>;
    /// gRPC's `FullDuplexCall`: answers each request with a payload of
    /// its size as it comes (or ends with its status).
    async fn full_duplex_call(
        &self,
        requests: switchyard::Streaming<DuplexRequest>,
    ) -> switchyard::Streaming<switchyard::Bytes>;
}
