//! The model -> Rust code, one module per artefact.
//!
//! Everything emitted names items through absolute paths (`::core::...` and
//! `<crate>::__private::...`) so that it compiles under
//! `#![no_implicit_prelude]` and with the switchyard crate renamed.

mod client;
mod descriptor;
mod server;
mod service_trait;

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::visit::Visit;

use crate::model::{Method, Service};

/// The names shared by the emitters.
pub(crate) struct Names {
    /// `<crate>::__private`.
    pub(crate) private: TokenStream,
    /// e.g. `CALCULATOR_DESCRIPTOR`.
    pub(crate) descriptor: syn::Ident,
    /// e.g. `CalculatorClient`.
    pub(crate) client: syn::Ident,
    /// e.g. `CalculatorServer`.
    pub(crate) server: syn::Ident,
    /// The implementation type parameter of the server, `T`.
    pub(crate) imp: syn::Ident,
    /// The codec type parameter, `C`.
    pub(crate) codec: syn::Ident,
    /// The parameter of `with_codec`, `C2`.
    pub(crate) codec2: syn::Ident,
}

impl Names {
    fn new(service: &Service) -> Self {
        let crate_path = &service.crate_path;
        // The user's types must not be shadowed by the generic parameters.
        let taken = idents_in(service);
        let pick = |short: &str, long: &str| {
            let name = if taken.contains(short) { long } else { short };
            syn::Ident::new(name, Span::call_site())
        };
        Self {
            private: quote!(#crate_path::__private),
            descriptor: call_site(service.descriptor_ident()),
            client: call_site(service.suffixed_ident("Client")),
            server: call_site(service.suffixed_ident("Server")),
            imp: pick("T", "__SwitchyardImpl"),
            codec: pick("C", "__SwitchyardCodec"),
            codec2: pick("C2", "__SwitchyardCodec2"),
        }
    }
}

fn call_site(mut ident: syn::Ident) -> syn::Ident {
    ident.set_span(Span::call_site());
    ident
}

/// Every identifier in the trait's name and its argument and return types.
fn idents_in(service: &Service) -> HashSet<String> {
    struct Collect(HashSet<String>);
    impl<'ast> Visit<'ast> for Collect {
        fn visit_ident(&mut self, ident: &'ast syn::Ident) {
            self.0.insert(ident.to_string());
        }
    }
    let mut collect = Collect(HashSet::new());
    collect.0.insert(service.trait_ident.to_string());
    for method in &service.methods {
        method
            .args
            .iter()
            .for_each(|arg| collect.visit_type(&arg.ty));
        method.output.iter().for_each(|ty| collect.visit_type(ty));
    }
    collect.0
}

/// Everything for a valid service: trait, descriptor, client and server.
pub(crate) fn emit(service: &Service) -> TokenStream {
    let names = Names::new(service);
    let mut out = service_trait::emit(service);
    out.extend(descriptor::emit(service, &names));
    out.extend(client::emit(service, &names));
    out.extend(server::emit(service, &names));
    out
}

/// For an invalid service: the trait as written, minus what would only add
/// errors of its own (`#[switchyard]` attributes, duplicate methods,
/// patterns in a body-less declaration), so that only the macro's errors show.
pub(crate) fn fallback(service: &Service) -> TokenStream {
    let mut item = service.syntax.item.clone();
    let mut seen = HashSet::new();
    item.items.retain(|trait_item| match trait_item {
        syn::TraitItem::Fn(function) => seen.insert(function.sig.ident.to_string()),
        _ => true,
    });
    for trait_item in &mut item.items {
        if let syn::TraitItem::Fn(function) = trait_item {
            for input in &mut function.sig.inputs {
                let syn::FnArg::Typed(typed) = input else {
                    continue;
                };
                match &mut *typed.pat {
                    syn::Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                        pat.mutability = None;
                    }
                    pat => {
                        let span = syn::spanned::Spanned::span(pat);
                        *pat = syn::Pat::Wild(syn::PatWild {
                            attrs: Vec::new(),
                            underscore_token: syn::Token![_](span),
                        });
                    }
                }
            }
        }
    }
    quote! {
        #[allow(async_fn_in_trait)]
        #item
    }
}

/// The type of the request payload: the method's arguments but a stream,
/// as a tuple: `()`, `(T,)` or `(T1, T2)`.
pub(crate) fn args_tuple_type(method: &Method) -> TokenStream {
    let types = method.request_args().map(|arg| &arg.ty);
    quote!((#(#types,)*))
}

/// The method's return type as declared, `()` for none.
pub(crate) fn declared_output(method: &Method) -> TokenStream {
    match &method.output {
        Some(ty) => ty.to_token_stream(),
        None => quote!(()),
    }
}

/// What the method's response carries: its return type, or `T` of a
/// `Result<T, Status>`; `()` for none.
pub(crate) fn output_type(method: &Method) -> TokenStream {
    let wire = if method.returns_status {
        &method.status_ok
    } else {
        &method.output
    };
    match wire {
        Some(ty) => ty.to_token_stream(),
        None => quote!(()),
    }
}

/// The doc attributes of a method, or `default` if it has none.
pub(crate) fn doc_attrs(method: &Method, default: &str) -> TokenStream {
    let docs: Vec<_> = method
        .syntax
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .collect();
    if docs.is_empty() {
        quote!(#[doc = #default])
    } else {
        quote!(#(#docs)*)
    }
}

/// `0x0123_abcd_u32`-style literals, readable in expanded code.
pub(crate) fn hex_u32(value: u32) -> syn::LitInt {
    hex(&format!("{value:08x}"), "u32")
}

/// `0x0123_4567_89ab_cdef_u64`-style literals.
pub(crate) fn hex_u64(value: u64) -> syn::LitInt {
    hex(&format!("{value:016x}"), "u64")
}

fn hex(digits: &str, suffix: &str) -> syn::LitInt {
    let groups: Vec<&str> = digits
        .as_bytes()
        .chunks(4)
        .map(|group| std::str::from_utf8(group).expect("hex digits are ASCII"))
        .collect();
    let text = format!("0x{}_{suffix}", groups.join("_"));
    syn::LitInt::new(&text, Span::call_site())
}
