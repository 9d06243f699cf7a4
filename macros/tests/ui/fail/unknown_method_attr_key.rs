#[switchyard::service]
pub trait Logger {
    #[switchyard(one_way)]
    async fn log(&self, line: String);
}

fn main() {}
