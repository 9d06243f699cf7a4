#[switchyard::service]
pub trait Limits {
    const MAX: usize;
    type Item;
    async fn max(&self) -> u64;
}

fn main() {}
