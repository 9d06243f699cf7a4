#[switchyard::service(compress = false)]
#[switchyard(oneway)]
pub trait Gallery {
    async fn thumbnail(&self, id: u64) -> Vec<u8>;
}

fn main() {}
