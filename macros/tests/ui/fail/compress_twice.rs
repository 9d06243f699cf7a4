#[switchyard::service]
pub trait Gallery {
    #[switchyard(compress = false, compress = true)]
    async fn thumbnail(&self, id: u64) -> Vec<u8>;
    #[switchyard(compress = false)]
    #[switchyard(oneway, compress = false)]
    async fn import(&self, archive: Vec<u8>);
}

fn main() {}
