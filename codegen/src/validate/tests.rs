use proc_macro2::TokenStream;
use quote::quote;

use super::validate;
use crate::parse::parse;

/// The messages of all errors for `#[switchyard::service(attr)] item`.
fn errors(attr: TokenStream, item: TokenStream) -> Vec<String> {
    let service = parse(attr, item, &syn::parse_quote!(::switchyard)).expect("parses");
    match validate(&service) {
        Ok(()) => Vec::new(),
        Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn one_error(item: TokenStream) -> String {
    let errors = errors(quote!(), item);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn accepts_a_normal_service() {
    let errors = errors(
        quote!(name = "Calc", crate = "::sy"),
        quote! {
            /// Docs.
            pub trait Calculator: Clone {
                #[doc = "Adds."]
                async fn add(&self, a: i64, mut b: i64) -> i64;
                async fn div(&self, a: i64, b: i64) -> Result<i64, String>;
                #[switchyard(oneway)]
                async fn log(&self, line: String);
                async fn ping(&self) -> ();
                async fn stat(&self, key: Option<(u8, Vec<String>)>) -> std::collections::HashMap<String, u64>;
            }
        },
    );
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn non_async_method() {
    assert!(
        one_error(quote!(
            trait T {
                fn f(&self);
            }
        ))
        .contains("must be async: write `async fn f(...)`")
    );
}

#[test]
fn generic_method_and_trait() {
    assert!(
        one_error(quote!(
            trait T {
                async fn f<X>(&self, x: X);
            }
        ))
        .contains("cannot be generic")
    );
    assert!(
        one_error(quote!(
            trait T {
                async fn f<'a>(&self);
            }
        ))
        .contains("cannot be generic")
    );
    assert!(
        one_error(quote!(
            trait T {
                async fn f(&self)
                where
                    Self: Sized;
            }
        ))
        .contains("`where`")
    );
    assert!(
        one_error(quote!(
            trait T<X> {
                async fn f(&self);
            }
        ))
        .contains("traits cannot be generic")
    );
    assert!(
        one_error(quote!(
            trait T where
                Self: Sized,
            {
                async fn f(&self);
            }
        ))
        .contains("`where`")
    );
}

#[test]
fn receivers() {
    assert!(
        one_error(quote!(
            trait T {
                async fn f(&mut self);
            }
        ))
        .contains("not `&mut self`")
    );
    assert!(
        one_error(quote!(
            trait T {
                async fn f(self);
            }
        ))
        .contains("not `self`")
    );
    assert!(
        one_error(quote!(
            trait T {
                async fn f(self: Box<Self>);
            }
        ))
        .contains("no explicit type")
    );
    assert!(
        one_error(quote!(
            trait T {
                async fn f(x: u8);
            }
        ))
        .contains("take `&self` as their first")
    );
}

#[test]
fn arguments_must_be_owned_names() {
    let message = one_error(quote!(
        trait T {
            async fn f(&self, s: &str);
        }
    ));
    assert!(
        message.contains("must be owned") && message.contains("with `String`"),
        "{message}"
    );
    let message = one_error(quote!(
        trait T {
            async fn f(&self, s: Vec<&'static [u8]>);
        }
    ));
    assert!(
        message.contains("replace `&'static [u8]` with `Vec<u8>`"),
        "{message}"
    );
    let message = one_error(quote!(
        trait T {
            async fn f(&self, s: &Option<Vec<u8>>);
        }
    ));
    assert!(
        message.contains("replace `&Option<Vec<u8>>` with `Option<Vec<u8>>`"),
        "{message}"
    );
    let message = one_error(quote!(
        trait T {
            async fn f(&self, s: impl Into<String>);
        }
    ));
    assert!(
        message.contains("`impl Trait` is not allowed in arguments"),
        "{message}"
    );
    let message = one_error(quote!(
        trait T {
            async fn f(&self, (a, b): (u8, u8));
        }
    ));
    assert!(message.contains("plain names"), "{message}");
    let message = one_error(quote!(
        trait T {
            async fn f(&self) -> &'static str;
        }
    ));
    assert!(message.contains("return types must be owned"), "{message}");
}

#[test]
fn duplicate_methods() {
    let message = one_error(quote!(
        trait T {
            async fn f(&self);
            async fn f(&self, x: u8);
        }
    ));
    assert!(message.contains("duplicate method `f`"), "{message}");
}

#[test]
fn unknown_options() {
    let errors = errors(
        quote!(timeout = 5, crate),
        quote! {
            #[switchyard(retries = 3)]
            trait T { #[switchyard(fast, oneway = true)] async fn f(&self); }
        },
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(
        errors[0].contains("unknown service option `timeout`"),
        "{errors:#?}"
    );
    assert!(errors[1].contains("write `crate = "), "{errors:#?}");
    assert!(
        errors[2].contains("unknown service option `retries`"),
        "{errors:#?}"
    );
    assert!(
        errors[3].contains("unknown method option `fast`"),
        "{errors:#?}"
    );
    assert!(
        errors[4].contains("write `#[switchyard(oneway)]`"),
        "{errors:#?}"
    );
}

#[test]
fn bad_service_names() {
    let errors = errors(
        quote!(name = "a.b"),
        quote!(
            trait T {}
        ),
    );
    assert!(errors[0].contains("not usable on the wire"), "{errors:#?}");
}

#[test]
fn oneway_returning_a_value() {
    let message = one_error(quote!(
        trait T {
            #[switchyard(oneway)]
            async fn f(&self) -> u8;
        }
    ));
    assert!(message.contains("cannot return a value"), "{message}");
    let message = one_error(quote!(
        trait T {
            #[switchyard(oneway)]
            async fn f(&self) -> Result<u8, E>;
        }
    ));
    assert!(message.contains("remove `-> Result<u8, E>`"), "{message}");
}

#[test]
fn non_method_items_and_default_bodies() {
    assert!(
        one_error(quote!(
            trait T {
                const X: u8;
            }
        ))
        .contains("associated constants")
    );
    assert!(
        one_error(quote!(
            trait T {
                type X;
            }
        ))
        .contains("associated types")
    );
    let message = one_error(quote!(
        trait T {
            async fn f(&self) {}
        }
    ));
    assert!(message.contains("default body"), "{message}");
}

#[test]
fn clashes_with_client_methods() {
    let message = one_error(quote!(
        trait T {
            async fn connect(&self);
        }
    ));
    assert!(message.contains("clash"), "{message}");
}

#[test]
fn id_collisions() {
    // Found by `ids::tests::find_collision`.
    let message = one_error(quote!(
        trait Collide {
            async fn zma3(&self);
            async fn aa_0p(&self);
        }
    ));
    assert!(
        message.contains("`Collide.aa_0p` and `Collide.zma3` both hash to id 0x73cf6aec"),
        "{message}"
    );
}

#[test]
fn reports_every_problem_at_once() {
    let errors = errors(
        quote!(bogus = 1),
        quote!(
            trait T<X> {
                fn a(&mut self);
                async fn b(&self, x: &u8) -> impl Sized;
            }
        ),
    );
    assert_eq!(errors.len(), 6, "{errors:#?}");
}

#[test]
fn self_types_and_cfg() {
    let message = one_error(quote!(
        trait T {
            async fn f(&self) -> Option<Self>;
        }
    ));
    assert!(
        message.contains("`Self` cannot appear in return types"),
        "{message}"
    );
    let message = one_error(quote!(
        trait T {
            #[cfg(unix)]
            async fn f(&self);
        }
    ));
    assert!(message.contains("`#[cfg]` is not supported"), "{message}");
}

#[test]
fn accepts_every_stream_shape() {
    let errors = errors(
        quote!(),
        quote! {
            pub trait Files {
                async fn tail(&self, path: String, from: u64) -> switchyard::Streaming<Line>;
                async fn upload(&self, name: String, chunks: ::switchyard::Streaming<Bytes>) -> Result<Digest, Status>;
                async fn chat(&self, incoming: Streaming<Msg>) -> Streaming<Msg>;
                async fn watch(&self, key: String) -> Result<crate::x::Streaming<Event>, Status>;
                async fn put(&self, items: Streaming<Vec<u8>>);
            }
        },
    );
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn two_stream_arguments() {
    let message = one_error(quote!(
        trait T {
            async fn f(&self, a: Streaming<u8>, b: u8, c: switchyard::Streaming<u16>);
        }
    ));
    assert!(
        message.starts_with(
            "a method takes at most one stream argument; `f` already takes `a: Streaming<u8>`"
        ),
        "{message}"
    );
    let errors = errors(
        quote!(),
        quote!(
            trait T {
                async fn f(&self, a: Streaming<u8>, b: Streaming<u8>, c: Streaming<u8>);
            }
        ),
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn streams_in_oneway_methods() {
    for item in [
        quote!(
            trait T {
                #[switchyard(oneway)]
                async fn f(&self, items: Streaming<u8>);
            }
        ),
        quote!(
            trait T {
                #[switchyard(oneway)]
                async fn f(&self) -> Streaming<u8>;
            }
        ),
        quote!(
            trait T {
                #[switchyard(oneway)]
                async fn f(&self, items: Vec<Streaming<u8>>);
            }
        ),
    ] {
        let message = one_error(item);
        assert!(
            message.contains("`#[switchyard(oneway)]` method cannot take or return a stream")
                && message.contains("message queue")
                && message.contains("remove `oneway`"),
            "{message}"
        );
    }
}

#[test]
fn nested_streams() {
    for (item, ty) in [
        (
            quote!(
                trait T {
                    async fn f(&self, items: Vec<Streaming<u8>>);
                }
            ),
            "Vec<Streaming<u8>>",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self, items: Option<Streaming<u8>>);
                }
            ),
            "Option<Streaming<u8>>",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self, items: (Streaming<u8>, u8));
                }
            ),
            "(Streaming<u8>, u8)",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self, items: Streaming<Streaming<u8>>);
                }
            ),
            "Streaming<Streaming<u8>>",
        ),
    ] {
        let message = one_error(item);
        assert!(
            message.starts_with("a stream can only be an argument's whole type")
                && message.contains(&format!("not part of `{ty}`")),
            "{message}"
        );
    }
    for (item, ty) in [
        (
            quote!(
                trait T {
                    async fn f(&self) -> Vec<Streaming<u8>>;
                }
            ),
            "Vec<Streaming<u8>>",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self) -> Result<Streaming<u8>, MyError>;
                }
            ),
            "Result<Streaming<u8>, MyError>",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self) -> Result<Option<Streaming<u8>>, Status>;
                }
            ),
            "Result<Option<Streaming<u8>>, Status>",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self) -> Result<u8, Streaming<u8>>;
                }
            ),
            "Result<u8, Streaming<u8>>",
        ),
    ] {
        let message = one_error(item);
        assert!(
            message.starts_with("a stream can only be the whole return type")
                && message.contains("`-> Result<Streaming<T>, Status>`")
                && message.contains(&format!("not part of `{ty}`")),
            "{message}"
        );
    }
}

#[test]
fn streams_without_one_type_argument() {
    for (item, ty) in [
        (
            quote!(
                trait T {
                    async fn f(&self, items: Streaming);
                }
            ),
            "Streaming",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self, items: switchyard::Streaming<A, B>);
                }
            ),
            "switchyard::Streaming<A, B>",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self) -> Streaming<'static>;
                }
            ),
            "Streaming<'static>",
        ),
        (
            quote!(
                trait T {
                    async fn f(&self) -> Result<Streaming, Status>;
                }
            ),
            "Streaming",
        ),
    ] {
        let message = one_error(item);
        assert!(
            message.starts_with("`Streaming` takes exactly one type argument")
                && message.contains(&format!("write `Streaming<Item>` instead of `{ty}`")),
            "{message}"
        );
    }
}

#[test]
fn compress_options() {
    assert_eq!(
        errors(
            quote!(),
            quote! {
                trait T {
                    #[switchyard(compress = false)]
                    async fn a(&self, png: Vec<u8>) -> Vec<u8>;
                    #[switchyard(oneway, compress = false)]
                    async fn b(&self, archive: Vec<u8>);
                    #[switchyard(compress = true)]
                    async fn c(&self) -> Streaming<Vec<u8>>;
                }
            },
        ),
        Vec::<String>::new()
    );
    let errors = errors(
        quote!(),
        quote! {
            trait T {
                #[switchyard(compress = "no")]
                async fn a(&self);
                #[switchyard(compress = 0)]
                async fn b(&self);
                #[switchyard(compress)]
                async fn c(&self);
                #[switchyard(compress = false, compress = false)]
                async fn d(&self);
                #[switchyard(compress = "false")]
                async fn e(&self);
            }
        },
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
    for message in &errors[..2] {
        assert!(
            message.starts_with("`compress` takes `true` or `false`: write `compress = false`"),
            "{message}"
        );
    }
    assert!(
        errors[2].starts_with("`compress` needs a value: write `compress = false`"),
        "{}",
        errors[2]
    );
    assert_eq!(errors[3], "`compress` is given twice: keep one");
    assert_eq!(
        errors[4],
        "`compress` takes a bool, not a string: write `compress = false` without quotes"
    );
}

#[test]
fn method_options_on_the_trait() {
    let errors = errors(
        quote!(compress = false),
        quote! {
            #[switchyard(oneway)]
            trait T { async fn f(&self); }
        },
    );
    assert_eq!(
        errors,
        [
            "`compress` is a method option, not a service option: write \
             `#[switchyard(compress = false)]` on each method it applies to",
            "`oneway` is a method option, not a service option: write \
             `#[switchyard(oneway)]` on each method it applies to",
        ]
    );
}
