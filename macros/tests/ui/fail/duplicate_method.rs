#[switchyard::service]
pub trait Echo {
    async fn echo(&self, text: String) -> String;
    async fn echo(&self, text: String, times: u32) -> String;
}

fn main() {}
