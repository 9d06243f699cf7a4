//! The server adapter: `FooServer<T, C>` implementing the runtime's
//! `Service` by decoding arguments, calling `T` and encoding the result.

use proc_macro2::TokenStream;
use quote::quote;

use crate::emit::{Names, args_tuple_type, hex_u32, output_type};
use crate::model::Service;

/// The server struct, its constructors, `Clone`/`Debug` and the `Service` impl.
pub(crate) fn emit(service: &Service, names: &Names) -> TokenStream {
    let Names {
        private,
        descriptor,
        server,
        imp,
        codec,
        codec2,
        ..
    } = names;
    let vis = &service.vis;
    let trait_ident = &service.trait_ident;
    let server_name = server.to_string();
    let struct_doc = format!(
        " Serves a `{}` implementation: pass it to `Server::builder().add_service(..)`.",
        service.trait_name()
    );
    let arms = service.methods.iter().enumerate().map(|(index, method)| {
        let id = hex_u32(method.id);
        let name = &method.name;
        let request = args_tuple_type(method);
        let output = output_type(method);
        let stream_index = method.client_stream.as_ref().map(|stream| stream.index);
        let decode = if method.request_args().next().is_none() {
            quote!(request.decode::<#codec, ()>(method)?;)
        } else {
            quote!(let args: #request = request.decode::<#codec, #request>(method)?;)
        };
        // A client stream follows the other arguments.
        let take_stream = method.client_stream.as_ref().map(|stream| {
            let item = &stream.item;
            quote! {
                let stream = #private::Request::take_stream::<#codec, #item>(&mut request, method)?;
            }
        });
        let mutable = take_stream
            .is_some()
            .then(|| quote!(let mut request = request;));
        let mut fields = (0..).map(syn::Index::from);
        let args = (0..method.args.len()).map(|arg| {
            if Some(arg) == stream_index {
                quote!(stream)
            } else {
                let field = fields.next();
                quote!(args.#field)
            }
        });
        let call = quote!(<#imp as #trait_ident>::#name(&*inner, #(#args),*).await);
        let reply = match &method.server_stream {
            Some(item) => quote!(#private::Reply::stream::<#codec, #item>(out, method)),
            None => quote!(#private::Reply::encode::<#codec, #output>(&out, method)),
        };
        // No `let out = ()` for unit results (clippy's `let_unit_value`).
        let call_and_encode = match &method.output {
            // The handler's status is the call's status.
            Some(_) if method.returns_status => quote! {
                match #call {
                    ::core::result::Result::Ok(out) => {
                        #reply
                    }
                    ::core::result::Result::Err(status) => ::core::result::Result::Err(status),
                }
            },
            Some(_) => quote! {
                let out = #call;
                #reply
            },
            None => quote! {
                #call;
                #private::Reply::encode::<#codec, ()>(&(), method)
            },
        };
        let index = proc_macro2::Literal::usize_unsuffixed(index);
        quote! {
            #id => {
                let inner = ::core::clone::Clone::clone(&self.inner);
                ::core::option::Option::Some(#private::box_handler(async move {
                    let method = &#descriptor.methods[#index];
                    #mutable
                    #decode
                    #take_stream
                    #call_and_encode
                }))
            }
        }
    });
    // `request` is unused when there are no methods.
    let request = if service.methods.is_empty() {
        quote!(_request)
    } else {
        quote!(request)
    };
    quote! {
        #[doc = #struct_doc]
        #vis struct #server<#imp, #codec = #private::DefaultCodec> {
            inner: #private::std::sync::Arc<#imp>,
            _codec: ::core::marker::PhantomData<fn() -> #codec>,
        }

        impl<#imp: #trait_ident> #server<#imp> {
            /// Serves `inner`.
            #[must_use]
            #vis fn new(inner: #imp) -> Self {
                Self::from_arc(#private::std::sync::Arc::new(inner))
            }

            /// Serves an implementation that is shared with other code.
            #[must_use]
            #vis fn from_arc(inner: #private::std::sync::Arc<#imp>) -> Self {
                Self {
                    inner,
                    _codec: ::core::marker::PhantomData,
                }
            }
        }

        impl<#imp: #trait_ident, #codec: #private::Codec> #server<#imp, #codec> {
            /// This server with another codec; clients must use the same one.
            #[must_use]
            #vis fn with_codec<#codec2: #private::Codec>(self) -> #server<#imp, #codec2> {
                #server {
                    inner: self.inner,
                    _codec: ::core::marker::PhantomData,
                }
            }

            /// The implementation being served.
            #[must_use]
            #vis fn get_ref(&self) -> &#imp {
                &self.inner
            }
        }

        #[automatically_derived]
        impl<#imp, #codec> ::core::clone::Clone for #server<#imp, #codec> {
            fn clone(&self) -> Self {
                Self {
                    inner: ::core::clone::Clone::clone(&self.inner),
                    _codec: ::core::marker::PhantomData,
                }
            }
        }

        #[automatically_derived]
        impl<#imp, #codec> ::core::fmt::Debug for #server<#imp, #codec> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#server_name).finish_non_exhaustive()
            }
        }

        #[automatically_derived]
        impl<#imp: #trait_ident, #codec: #private::Codec> #private::Service for #server<#imp, #codec> {
            fn descriptor(&self) -> &'static #private::ServiceDescriptor {
                &#descriptor
            }

            fn call(
                &self,
                method_id: u32,
                #request: #private::Request,
            ) -> ::core::option::Option<#private::HandlerFuture> {
                match method_id {
                    #(#arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }
    }
}
