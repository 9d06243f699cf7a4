#[switchyard::service]
pub struct Calculator;

fn main() {}
