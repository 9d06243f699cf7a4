//! A log line per call through `tracing` ([`RequestLog`]).

use std::time::Instant;

use super::{Call, Layer, LayerFuture, Next};
use crate::protocol::status::Code;

/// Logs one line per call when it ends (`switchyard::layers::log` target,
/// INFO; failures at WARN): side, method, transport, status code, time
/// taken and sizes. Never metadata values (tokens travel there).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLog {
    errors_only: bool,
}

impl RequestLog {
    /// Logs every call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs only the calls that fail.
    pub fn errors_only() -> Self {
        Self { errors_only: true }
    }
}

impl Layer for RequestLog {
    fn name(&self) -> &str {
        "request-log"
    }

    fn call<'a>(&'a self, call: Call, next: Next<'a>) -> LayerFuture<'a> {
        let started = Instant::now();
        let side = call.side().as_str();
        let method = call.method().full_name;
        let transport = call.transport().map_or("-", |t| t.as_str());
        let request_bytes = call.request_payload().map(|p| p.len());
        let errors_only = self.errors_only;
        LayerFuture::new(async move {
            let result = next.run(call).await;
            let took_us = started.elapsed().as_micros() as u64;
            match &result {
                Ok(response) if !errors_only => tracing::info!(
                    target: "switchyard::layers::log",
                    side,
                    method,
                    transport,
                    code = Code::Ok.as_str(),
                    took_us,
                    request_bytes,
                    response_bytes = response.encoded_len(),
                    "call"
                ),
                Ok(_) => {}
                Err(status) => tracing::warn!(
                    target: "switchyard::layers::log",
                    side,
                    method,
                    transport,
                    code = status.code().as_str(),
                    took_us,
                    request_bytes,
                    message = status.message(),
                    "call failed"
                ),
            }
            result
        })
    }
}
