#[switchyard::service]
pub trait Gallery {
    #[switchyard(compress)]
    async fn thumbnail(&self, id: u64) -> Vec<u8>;
    #[switchyard(oneway, compress(false))]
    async fn import(&self, archive: Vec<u8>);
}

fn main() {}
