//! Generates the `Testing` service with `switchyard_codegen::Builder`, so the
//! build.rs path of the code generator is exercised as well as the macro.

fn main() {
    if let Err(err) = switchyard_codegen::Builder::new()
        .file("services/testing.rs")
        .build()
    {
        panic!("generating services/testing.rs failed: {err}");
    }
}
