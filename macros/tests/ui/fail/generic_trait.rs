#[switchyard::service]
pub trait Store<V> {
    async fn put(&self, key: String);
}

#[switchyard::service]
pub trait Cache
where
    Self: Sized,
{
    async fn get(&self, key: String) -> String;
}

fn main() {}
