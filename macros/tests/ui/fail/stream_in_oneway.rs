// A stand-in for `switchyard::Streaming`: the macro tells a stream by the
// last segment of its path.
pub struct Streaming<T>(T);

#[switchyard::service]
pub trait Logger {
    #[switchyard(oneway)]
    async fn log_all(&self, lines: Streaming<String>);
    #[switchyard(oneway)]
    async fn follow(&self) -> Streaming<String>;
}

fn main() {}
