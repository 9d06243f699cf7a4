#[switchyard::service]
pub trait Echo {
    async fn echo(&self, text: impl Into<String>) -> String;
}

fn main() {}
