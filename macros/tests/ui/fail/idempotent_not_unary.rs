use switchyard::Streaming;

#[switchyard::service]
pub trait Ledger {
    #[switchyard(oneway, idempotent)]
    async fn record(&self, line: String);
    #[switchyard(idempotent)]
    async fn tail(&self, from: u64) -> Streaming<String>;
    #[switchyard(idempotent = true)]
    async fn balance(&self) -> u64;
}

fn main() {}
