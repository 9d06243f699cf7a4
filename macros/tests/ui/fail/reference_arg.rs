#[switchyard::service]
pub trait Echo {
    async fn echo(&self, text: &str) -> String;
    async fn sum(&self, values: Vec<&[u8]>) -> u64;
}

fn main() {}
