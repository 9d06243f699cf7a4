#[switchyard::service]
pub trait Store {
    async fn put<V: serde::Serialize>(&self, value: V);
    async fn get<'a>(&self, key: String) -> String;
}

fn main() {}
