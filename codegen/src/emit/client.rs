//! The client: `FooClient<C>`, one `async fn` per method over `ClientCore`.

use proc_macro2::TokenStream;
use quote::quote;

use crate::emit::{Names, args_tuple_type, doc_attrs, output_type};
use crate::model::Service;

/// The client struct, its `Clone`/`Debug` impls and its methods.
pub(crate) fn emit(service: &Service, names: &Names) -> TokenStream {
    let Names {
        private,
        descriptor,
        client,
        codec,
        codec2,
        ..
    } = names;
    let vis = &service.vis;
    let service_name = &service.name;
    let client_name = client.to_string();
    let struct_doc = format!(
        " Client for the `{service_name}` service. Cheap to clone; clones share one connection."
    );
    let methods = service.methods.iter().enumerate().map(|(index, method)| {
        let default_doc = format!(" Calls `{service_name}.{}`.", method.name_str());
        let docs = doc_attrs(method, &default_doc);
        let name = &method.name;
        let arg_names: Vec<_> = method.args.iter().map(|arg| &arg.name).collect();
        // A stream argument takes any stream of its items.
        let params = method.args.iter().enumerate().map(|(arg_index, arg)| {
            let arg_name = &arg.name;
            match &method.client_stream {
                Some(stream) if stream.index == arg_index => {
                    let item = &stream.item;
                    quote! {
                        #arg_name: impl #private::Stream<Item = #item> + ::core::marker::Send + 'static
                    }
                }
                _ => {
                    let ty = &arg.ty;
                    quote!(#arg_name: #ty)
                }
            }
        });
        let request = args_tuple_type(method);
        let request_names = method.request_args().map(|arg| &arg.name);
        let request_value = quote!((#(#request_names,)*));
        let output = output_type(method);
        let index = proc_macro2::Literal::usize_unsuffixed(index);
        let method_ref = quote!(&#descriptor.methods[#index]);
        let (call, output) = match (&method.client_stream, &method.server_stream) {
            (None, None) if method.oneway => (
                quote!(self.core.oneway::<#codec, #request>(#method_ref, #request_value).await),
                output,
            ),
            (None, None) => (
                quote!(self.core.call::<#codec, #request, #output>(#method_ref, #request_value).await),
                output,
            ),
            (None, Some(resp)) => (
                quote! {
                    self.core.server_streaming::<#codec, #request, #resp>(#method_ref, #request_value).await
                },
                quote!(#private::Streaming<#resp>),
            ),
            (Some(stream), None) => {
                let (items, item) = (&method.args[stream.index].name, &stream.item);
                (
                    quote! {
                        self.core.client_streaming::<#codec, #request, #item, #output, _>(
                            #method_ref, #request_value, #items,
                        ).await
                    },
                    output,
                )
            }
            (Some(stream), Some(resp)) => {
                let (items, item) = (&method.args[stream.index].name, &stream.item);
                (
                    quote! {
                        self.core.bidi_streaming::<#codec, #request, #item, #resp, _>(
                            #method_ref, #request_value, #items,
                        ).await
                    },
                    quote!(#private::Streaming<#resp>),
                )
            }
        };
        let try_form = method.oneway.then(|| {
            let try_name = quote::format_ident!("try_{}", method.name_str());
            let arg_types = method.args.iter().map(|arg| &arg.ty);
            let try_doc = format!(
                " Sends `{service_name}.{}` only if it can go at once: a full message queue \
                 is `RESOURCE_EXHAUSTED` instead of a wait.",
                method.name_str()
            );
            quote! {
                #[doc = #try_doc]
                #vis async fn #try_name(&self, #(#arg_names: #arg_types),*)
                    -> ::core::result::Result<(), #private::Status>
                {
                    self.core.try_oneway::<#codec, #request>(#method_ref, #request_value).await
                }
            }
        });
        quote! {
            #docs
            #vis async fn #name(&self, #(#params),*)
                -> ::core::result::Result<#output, #private::Status>
            {
                #call
            }
            #try_form
        }
    });
    quote! {
        #[doc = #struct_doc]
        #vis struct #client<#codec = #private::DefaultCodec> {
            core: #private::ClientCore,
            _codec: ::core::marker::PhantomData<fn() -> #codec>,
        }

        impl #client {
            /// Connects to `target`: a service name from the local registry,
            /// `unix:///path` or `tcp://host:port`.
            #vis async fn connect(
                target: &str,
            ) -> ::core::result::Result<Self, #private::Status> {
                let core = #private::ClientCore::connect(target, &#descriptor).await?;
                ::core::result::Result::Ok(Self::from_core(core))
            }

            /// A client that sends its calls over `channel`.
            #[must_use]
            #vis fn new(channel: #private::Channel) -> Self {
                Self::from_core(#private::ClientCore::new(channel, &#descriptor))
            }
        }

        impl<#codec: #private::Codec> #client<#codec> {
            fn from_core(core: #private::ClientCore) -> Self {
                Self {
                    core,
                    _codec: ::core::marker::PhantomData,
                }
            }

            /// This client with another codec; the server must use the same one.
            #[must_use]
            #vis fn with_codec<#codec2: #private::Codec>(self) -> #client<#codec2> {
                #client {
                    core: self.core,
                    _codec: ::core::marker::PhantomData,
                }
            }

            /// A client whose calls give up after `timeout`.
            #[must_use]
            #vis fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self::from_core(self.core.with_timeout(timeout))
            }

            /// A client that sends `key: value` as metadata with every call.
            #[must_use]
            #vis fn with_metadata(
                &self,
                key: impl #private::std::convert::Into<#private::std::string::String>,
                value: impl #private::std::convert::Into<#private::std::vec::Vec<u8>>,
            ) -> Self {
                Self::from_core(self.core.with_metadata(key, value))
            }

            /// A client that sends every entry of `metadata` with every call,
            /// after the entries it already sends.
            #[must_use]
            #vis fn with_all_metadata(&self, metadata: &#private::Metadata) -> Self {
                Self::from_core(self.core.with_all_metadata(metadata))
            }

            /// Which transport the client uses to reach its peer.
            #[must_use]
            #vis fn selection(&self) -> #private::Selection {
                self.core.selection()
            }

            /// The channel the calls go over.
            #[must_use]
            #vis fn channel(&self) -> &#private::Channel {
                self.core.channel()
            }

            #(#methods)*
        }

        #[automatically_derived]
        impl<#codec> ::core::clone::Clone for #client<#codec> {
            fn clone(&self) -> Self {
                Self {
                    core: ::core::clone::Clone::clone(&self.core),
                    _codec: ::core::marker::PhantomData,
                }
            }
        }

        #[automatically_derived]
        impl<#codec> ::core::fmt::Debug for #client<#codec> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#client_name).field("core", &self.core).finish()
            }
        }
    }
}
