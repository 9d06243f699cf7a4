// A stand-in for `switchyard::Streaming`: the macro tells a stream by the
// last segment of its path.
pub struct Streaming<T>(T);

pub struct MyError;

#[switchyard::service]
pub trait Files {
    async fn upload_many(&self, files: Vec<Streaming<Vec<u8>>>);
    async fn maybe_tail(&self, path: String) -> Option<Streaming<String>>;
    async fn tail(&self, path: String) -> Result<Streaming<String>, MyError>;
}

fn main() {}
