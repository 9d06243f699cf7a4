//! A normal service: plain, `Result` and no-argument methods, a one-way
//! method, an implementation with `async fn`, and the generated types in use.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
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
    /// How many calls so far.
    async fn calls(&self) -> u64;
}

#[derive(Default)]
struct Simple {
    calls: std::sync::atomic::AtomicU64,
}

impl Calculator for Simple {
    async fn add(&self, a: i64, b: i64) -> i64 {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 { Err(MathError::DivideByZero) } else { Ok(a / b) }
    }

    async fn log(&self, line: String) {
        println!("{line}");
    }

    async fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn server() -> CalculatorServer<Simple> {
    let server = CalculatorServer::new(Simple::default());
    let _shared: CalculatorServer<Simple> = CalculatorServer::from_arc(std::sync::Arc::new(Simple::default()));
    let _builder = switchyard::Server::builder().add_service(server.clone());
    server
}

async fn client() -> Result<(), switchyard::Status> {
    let client: CalculatorClient = CalculatorClient::connect("calculator").await?;
    let client = client.with_timeout(std::time::Duration::from_secs(1)).with_metadata("k", "v");
    let sum: i64 = client.add(1, 2).await?;
    let quotient: Result<i64, MathError> = client.div(sum, 0).await?;
    assert_eq!(quotient, Err(MathError::DivideByZero));
    let (): () = client.log("hi".to_owned()).await?;
    let _calls: u64 = client.calls().await?;
    let _selection: switchyard::Selection = client.selection();
    let _channel: &switchyard::Channel = client.channel();
    let _again = CalculatorClient::new(client.channel().clone());
    Ok(())
}

fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}

fn main() {
    assert_traits::<CalculatorClient>();
    assert_traits::<CalculatorServer<Simple>>();
    let descriptor: &'static switchyard::ServiceDescriptor = &CALCULATOR_DESCRIPTOR;
    assert_eq!(descriptor.name, "Calculator");
    assert_eq!(descriptor.methods.len(), 4);
    assert_eq!(descriptor.methods[0].signature, "add(i64,i64) -> i64");
    assert_eq!(descriptor.methods[0].id, switchyard::descriptor::method_id("Calculator.add"));
    assert!(descriptor.methods[2].oneway);
    let _ = server();
    let _ = client();
}
