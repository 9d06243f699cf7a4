// A stand-in for `switchyard::Streaming`: the macro tells a stream by the
// last segment of its path.
pub struct Streaming<T>(T);

#[switchyard::service]
pub trait Sync {
    async fn merge(&self, left: Streaming<u64>, label: String, right: Streaming<u64>) -> u64;
}

fn main() {}
