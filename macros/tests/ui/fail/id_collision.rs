// `Collide.zma3` and `Collide.aa_0p` have the same 32-bit FNV-1a hash.
#[switchyard::service]
pub trait Collide {
    async fn zma3(&self);
    async fn aa_0p(&self);
}

fn main() {}
