//! The generated server adapter, driven in-process: arguments are decoded
//! from the wire tuple, the implementation is called and its result encoded.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchyard::__private::{Request, Service};
use switchyard::{Bincode, Code, Codec};

/// Why a division failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivideByZero,
}

/// Arithmetic.
#[switchyard::service]
pub trait Calculator {
    /// Adds.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Logs; no reply.
    #[switchyard(oneway)]
    async fn log(&self, line: String);
    /// Counts the lines logged so far.
    async fn lines(&self) -> u64;
    /// The size of an image that is compressed already.
    #[switchyard(compress = false)]
    async fn image_size(&self, png: Vec<u8>) -> u64;
}

#[derive(Debug, Default)]
struct Simple {
    lines: std::sync::atomic::AtomicU64,
}

impl Calculator for Simple {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }

    async fn log(&self, _line: String) {
        self.lines.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    async fn lines(&self) -> u64 {
        self.lines.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn image_size(&self, png: Vec<u8>) -> u64 {
        png.len() as u64
    }
}

fn encode<T: Serialize>(value: &T) -> Request {
    let mut buf = Vec::new();
    Bincode::encode(value, &mut buf).unwrap();
    Request::new(Bytes::from(buf))
}

async fn call<Resp: serde::de::DeserializeOwned>(
    server: &CalculatorServer<Simple>,
    method: usize,
    request: Request,
) -> Result<Resp, switchyard::Status> {
    let id = CALCULATOR_DESCRIPTOR.methods[method].id;
    let reply = server.call(id, request).expect("a known method").await?;
    Ok(Bincode::decode(reply.payload()).unwrap())
}

#[tokio::test]
async fn calls_reach_the_implementation() {
    let server = CalculatorServer::new(Simple::default());
    assert_eq!(
        call::<i64>(&server, 0, encode(&(2_i64, 3_i64)))
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        call::<Result<i64, MathError>>(&server, 1, encode(&(1_i64, 0_i64)))
            .await
            .unwrap(),
        Err(MathError::DivideByZero)
    );
    call::<()>(&server, 2, encode(&("hello".to_owned(),)))
        .await
        .unwrap();
    assert_eq!(call::<u64>(&server, 3, encode(&())).await.unwrap(), 1);
    assert_eq!(
        call::<u64>(&server, 4, encode(&(vec![0x89_u8, b'P', b'N', b'G'],)))
            .await
            .unwrap(),
        4
    );
}

#[tokio::test]
async fn bad_arguments_and_unknown_methods() {
    let server = CalculatorServer::new(Simple::default());
    let status = call::<i64>(&server, 0, encode(&"not two numbers"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("Calculator.add"), "{status:?}");
    assert!(server.call(0xdead_beef, encode(&())).is_none());
}

#[test]
fn the_descriptor_matches_the_runtime_hashes() {
    let descriptor = server_descriptor();
    assert_eq!(descriptor.name, "Calculator");
    for method in descriptor.methods {
        assert_eq!(
            method.id,
            switchyard::descriptor::method_id(method.full_name)
        );
        assert_eq!(
            method.fingerprint,
            switchyard::descriptor::fingerprint(method.signature)
        );
    }
    let joined: Vec<&str> = descriptor.methods.iter().map(|m| m.signature).collect();
    assert_eq!(
        descriptor.fingerprint,
        switchyard::descriptor::fingerprint(&joined.join(";"))
    );
    assert_eq!(
        descriptor.methods[1].signature,
        "div(i64,i64) -> Result<i64,MathError>"
    );
    assert_eq!(descriptor.methods[2].signature, "oneway log(String) -> ()");
}

#[test]
fn compress_false_reaches_the_descriptor_only() {
    let compress: Vec<(&str, bool)> = server_descriptor()
        .methods
        .iter()
        .map(|m| (m.name, m.compress))
        .collect();
    assert_eq!(
        compress,
        [
            ("add", true),
            ("div", true),
            ("log", true),
            ("lines", true),
            ("image_size", false),
        ]
    );
    // Not part of the contract: the signature is what it would be without it.
    assert_eq!(
        CALCULATOR_DESCRIPTOR.methods[4].signature,
        "image_size(Vec<u8>) -> u64"
    );
}

fn server_descriptor() -> &'static switchyard::ServiceDescriptor {
    CalculatorServer::new(Simple::default()).descriptor()
}
