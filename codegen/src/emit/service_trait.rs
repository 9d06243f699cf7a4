//! The trait the user implements, with each `async fn` rewritten to return
//! `impl Future + Send` so the server can spawn the calls.

use proc_macro2::TokenStream;
use quote::quote;

use crate::emit::declared_output;
use crate::model::Service;

/// `pub trait Calculator: Send + Sync + 'static { fn add(&self, ..) -> impl Future<..> + Send; }`.
pub(crate) fn emit(service: &Service) -> TokenStream {
    let attrs = &service.syntax.attrs;
    let vis = &service.vis;
    let ident = &service.trait_ident;
    let item = &service.syntax.item;
    let trait_token = &item.trait_token;
    let supertraits = item.supertraits.iter();
    let methods = service.methods.iter().map(|method| {
        let attrs = &method.syntax.attrs;
        let name = &method.name;
        let arg_names = method.args.iter().map(|arg| &arg.name);
        let arg_types = method.args.iter().map(|arg| &arg.ty);
        let output = declared_output(method);
        quote! {
            #(#attrs)*
            fn #name(&self, #(#arg_names: #arg_types),*)
                -> impl ::core::future::Future<Output = #output> + ::core::marker::Send;
        }
    });
    quote! {
        #(#attrs)*
        #vis #trait_token #ident:
            #(#supertraits +)* ::core::marker::Send + ::core::marker::Sync + 'static
        {
            #(#methods)*
        }
    }
}
