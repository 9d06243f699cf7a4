// A stand-in for `switchyard::Streaming`: the macro tells a stream by the
// last segment of its path.
pub struct Streaming<T>(T);

#[switchyard::service]
pub trait Files {
    async fn upload(&self, name: String, chunks: Streaming) -> u64;
    async fn pairs(&self) -> Streaming<String, u64>;
}

fn main() {}
