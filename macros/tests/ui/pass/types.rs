//! Complex owned types, a user type named like the generic parameters, and a
//! raw identifier.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct C;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct T(u8);

#[switchyard::service]
pub trait UserStore {
    async fn put(&self, user: User, tags: Vec<String>) -> Option<(u8, String)>;
    async fn get_many(&self, ids: Vec<u64>) -> BTreeMap<u64, Option<User>>;
    async fn r#match(&self, r#type: String, pair: (User, [u8; 4])) -> Result<T, C>;
}

struct Memory;

impl UserStore for Memory {
    async fn put(&self, user: User, _tags: Vec<String>) -> Option<(u8, String)> {
        Some((1, user.name))
    }
    async fn get_many(&self, _ids: Vec<u64>) -> BTreeMap<u64, Option<User>> {
        BTreeMap::new()
    }
    async fn r#match(&self, _type: String, _pair: (User, [u8; 4])) -> Result<T, C> {
        Ok(T(0))
    }
}

async fn call(client: UserStoreClient) -> Result<(), switchyard::Status> {
    let _: Result<T, C> = client.r#match("t".into(), (User { id: 1, name: "a".into() }, [0; 4])).await?;
    Ok(())
}

fn main() {
    assert_eq!(USER_STORE_DESCRIPTOR.methods[2].name, "match");
    let _ = UserStoreServer::new(Memory);
    let _ = call;
}
