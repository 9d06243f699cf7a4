#[switchyard::service]
pub trait Events {
    #[switchyard(priority = 5)]
    async fn record(&self, line: String);
    #[switchyard(oneway, priority = 40000)]
    async fn urgent(&self, line: String);
}

fn main() {}
