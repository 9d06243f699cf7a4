// Every problem is reported at once, and the user's trait is still emitted:
// the impl below adds no errors of its own.
#[switchyard::service(bogus)]
pub trait Calculator {
    fn add(&self, a: i64, b: i64) -> i64;
    async fn reset(&mut self);
    async fn name(&self, prefix: &str) -> String;
}

struct Simple;

impl Calculator for Simple {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn reset(&mut self) {}
    async fn name(&self, prefix: &str) -> String {
        prefix.to_owned()
    }
}

fn main() {}
