#[switchyard::service]
pub trait Logger {
    #[switchyard(oneway)]
    async fn log(&self, line: String) -> bool;
}

fn main() {}
