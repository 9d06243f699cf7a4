#[switchyard::service(timeout = 5)]
pub trait Echo {
    async fn echo(&self, text: String) -> String;
}

fn main() {}
