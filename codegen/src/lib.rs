//! Code generation for switchyard services.
//!
//! A service is a trait carrying `#[switchyard::service]`. This crate turns it
//! into the trait the user implements, a static descriptor, a client and a
//! server adapter, in four steps, one module each:
//!
//! 1. `parse`: syntax -> [`model::Service`];
//! 2. `validate`: semantic checks, reported all at once as compile errors;
//! 3. `emit`: the model -> Rust code;
//! 4. [`Builder`]: the same expansion for build scripts, written to `OUT_DIR`.
//!
//! The `switchyard-macros` crate is a one-line shell over [`expand_service`].

#![forbid(unsafe_code)]

mod builder;
mod emit;
pub mod ids;
pub mod model;
mod parse;
mod validate;

use proc_macro2::TokenStream;

pub use builder::{BuildError, Builder, Diagnostic};

/// The default path to the switchyard crate in generated code.
pub const DEFAULT_CRATE_PATH: &str = "::switchyard";

/// Expands `#[switchyard::service(attr)] item`: what the proc macro returns.
///
/// On invalid input the output is the user's trait (so that code using it does
/// not cascade errors) followed by one `compile_error!` per problem.
pub fn expand_service(attr: TokenStream, item: TokenStream) -> TokenStream {
    match service(attr, item.clone(), &default_crate_path()) {
        Ok(service) => emit::emit(&service),
        Err((service, error)) => {
            let mut out = match service {
                Some(service) => emit::fallback(&service),
                None => item,
            };
            out.extend(error.to_compile_error());
            out
        }
    }
}

/// Parses and validates a service into its [model](model::Service).
///
/// `attr` is the attribute's arguments (`crate = "...", name = "..."`), `item`
/// the trait.
pub fn model(attr: TokenStream, item: TokenStream) -> syn::Result<model::Service> {
    service(attr, item, &default_crate_path()).map_err(|(_, error)| error)
}

/// The model of a service as pretty-printed JSON: name, fingerprint and, for
/// each method, its arguments, return type, streams, id, signature and
/// fingerprint.
pub fn describe(attr: TokenStream, item: TokenStream) -> syn::Result<String> {
    let service = model(attr, item)?;
    Ok(serde_json::to_string_pretty(&service).expect("the model serializes to JSON"))
}

/// Parse and validate; on failure also returns the model if there is one.
pub(crate) fn service(
    attr: TokenStream,
    item: TokenStream,
    crate_path: &syn::Path,
) -> Result<model::Service, (Option<Box<model::Service>>, syn::Error)> {
    let service = parse::parse(attr, item, crate_path).map_err(|error| (None, error))?;
    match validate::validate(&service) {
        Ok(()) => Ok(service),
        Err(error) => Err((Some(Box::new(service)), error)),
    }
}

pub(crate) fn default_crate_path() -> syn::Path {
    syn::parse_str(DEFAULT_CRATE_PATH).expect("a valid path")
}
