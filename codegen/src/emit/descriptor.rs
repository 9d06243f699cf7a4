//! The static `ServiceDescriptor`: names, ids, signatures and fingerprints.

use proc_macro2::TokenStream;
use quote::quote;

use crate::emit::{Names, hex_u32, hex_u64};
use crate::ids;
use crate::model::Service;

/// `pub static CALCULATOR_DESCRIPTOR: ServiceDescriptor = ...;`.
pub(crate) fn emit(service: &Service, names: &Names) -> TokenStream {
    let Names {
        private,
        descriptor,
        ..
    } = names;
    let vis = &service.vis;
    let service_name = &service.name;
    let fingerprint = hex_u64(service.fingerprint);
    let methods = service.methods.iter().map(|method| {
        let name = method.name_str();
        let full_name = ids::full_name(service_name, &name);
        let id = hex_u32(method.id);
        let oneway = method.oneway;
        let priority = method.priority;
        let client_streaming = method.client_stream.is_some();
        let server_streaming = method.server_stream.is_some();
        let compress = method.compress;
        let idempotent = method.idempotent;
        let signature = &method.signature;
        let fingerprint = hex_u64(method.fingerprint);
        quote! {
            #private::MethodDescriptor {
                service: #service_name,
                name: #name,
                full_name: #full_name,
                id: #id,
                oneway: #oneway,
                priority: #priority,
                client_streaming: #client_streaming,
                server_streaming: #server_streaming,
                compress: #compress,
                idempotent: #idempotent,
                signature: #signature,
                fingerprint: #fingerprint,
            }
        }
    });
    let doc = format!(
        " Describes the `{service_name}` service: its methods with their ids, signatures and \
         fingerprints."
    );
    quote! {
        #[doc = #doc]
        #vis static #descriptor: #private::ServiceDescriptor = #private::ServiceDescriptor {
            name: #service_name,
            fingerprint: #fingerprint,
            methods: &[#(#methods),*],
        };
    }
}
