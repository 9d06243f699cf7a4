#[switchyard::service]
pub trait Gallery {
    #[switchyard(compress = "no")]
    async fn caption(&self, id: u64) -> String;
    #[switchyard(compress = 0)]
    async fn thumbnail(&self, id: u64) -> Vec<u8>;
    #[switchyard(compress = "false")]
    async fn original(&self, id: u64) -> Vec<u8>;
}

fn main() {}
