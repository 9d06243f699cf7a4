use quote::quote;

use super::*;
use crate::model::Receiver;

fn parse_ok(attr: TokenStream, item: TokenStream) -> Service {
    parse(attr, item, &syn::parse_quote!(::switchyard)).expect("parses")
}

#[test]
fn status_results_are_told_from_typed_errors() {
    let ty = |text: &str| syn::parse_str::<syn::Type>(text).unwrap();
    let ok = |text: &str| status_result(&ty(text)).map(|t| t.map(|t| ids::type_text(&t)));
    assert_eq!(ok("Result<u64, Status>"), Some(Some("u64".into())));
    assert_eq!(
        ok("std::result::Result<Vec<u8>, switchyard::Status>"),
        Some(Some("Vec<u8>".into()))
    );
    assert_eq!(ok("Result<(), ::switchyard::Status>"), Some(None));
    assert_eq!(ok("Result<u64, MathError>"), None);
    assert_eq!(ok("Result<u64, StatusCode>"), None);
    assert_eq!(ok("Option<Status>"), None);
    assert_eq!(ok("u64"), None);
}

#[test]
fn streams_are_told_by_the_last_segment_and_one_type_argument() {
    let ty = |text: &str| syn::parse_str::<syn::Type>(text).unwrap();
    let item = |text: &str| stream_item(&ty(text)).map(ids::type_text);
    assert_eq!(item("Streaming<Line>"), Some("Line".into()));
    assert_eq!(
        item("switchyard::Streaming<Vec<u8>>"),
        Some("Vec<u8>".into())
    );
    assert_eq!(item("::switchyard::Streaming<u8>"), Some("u8".into()));
    assert_eq!(
        item("crate::x::Streaming<(u8,String)>"),
        Some("(u8,String)".into())
    );
    assert_eq!(item("Streaming"), None);
    assert_eq!(item("Streaming<A, B>"), None);
    assert_eq!(item("Streaming<'a>"), None);
    assert_eq!(item("Streaming::Item<u8>"), None);
    assert_eq!(item("<X as Y>::Streaming<u8>"), None);
    assert_eq!(item("Vec<Streaming<u8>>"), None);
    assert_eq!(item("Result<Streaming<u8>, Status>"), None);
}

#[test]
fn reads_stream_arguments_and_results() {
    let service = parse_ok(
        quote!(),
        quote! {
            pub trait Files {
                async fn tail(&self, path: String, from: u64) -> switchyard::Streaming<Line>;
                async fn upload(&self, name: String, chunks: Streaming<Bytes>) -> Result<Digest, Status>;
                async fn chat(&self, incoming: Streaming<Msg>) -> ::switchyard::Streaming<Msg>;
                async fn watch(&self, key: String) -> Result<Streaming<Event>, switchyard::Status>;
                async fn refuse(&self) -> Result<Streaming<Event>, MyError>;
                async fn stat(&self, path: String) -> u64;
            }
        },
    );
    let streams: Vec<_> = service
        .methods
        .iter()
        .map(|method| {
            (
                method
                    .client_stream
                    .as_ref()
                    .map(|stream| (stream.index, ids::type_text(&stream.item))),
                method.server_stream.as_ref().map(ids::type_text),
            )
        })
        .collect();
    assert_eq!(
        streams,
        [
            (None, Some("Line".into())),
            (Some((1, "Bytes".into())), None),
            (Some((0, "Msg".into())), Some("Msg".into())),
            (None, Some("Event".into())),
            (None, None),
            (None, None),
        ]
    );
    let watch = &service.methods[3];
    assert!(watch.returns_status);
    assert_eq!(
        watch.status_ok.as_ref().map(ids::type_text),
        Some("Streaming<Event>".into())
    );
    let upload = &service.methods[1];
    let request: Vec<_> = upload
        .request_args()
        .map(|arg| arg.name.to_string())
        .collect();
    assert_eq!(request, ["name"]);
}

#[test]
fn stream_signatures_name_streams_however_spelled() {
    let service = parse_ok(
        quote!(),
        quote! {
            pub trait Files {
                async fn tail(&self, path: String, from: u64) -> switchyard::Streaming<Line>;
                async fn upload(&self, name: String, chunks: ::switchyard::Streaming<Bytes>) -> Result<Digest, Status>;
                async fn chat(&self, incoming: Streaming<Msg>) -> Streaming<Msg>;
                async fn watch(&self, key: String) -> Result<crate::x::Streaming<Event>, Status>;
            }
        },
    );
    let signatures: Vec<_> = service
        .methods
        .iter()
        .map(|m| m.signature.as_str())
        .collect();
    assert_eq!(
        signatures,
        [
            "tail(String,u64) -> Streaming<Line>",
            "upload(String,Streaming<Bytes>) -> Result<Digest,Status>",
            "chat(Streaming<Msg>) -> Streaming<Msg>",
            "watch(String) -> Result<Streaming<Event>,Status>",
        ]
    );
}

#[test]
fn reads_options_methods_and_docs() {
    let service = parse_ok(
        quote!(crate = "::renamed", name = "Calc"),
        quote! {
            /// A calculator.
            pub trait Calculator {
                /// Adds.
                async fn add(&self, a: i64, b: i64) -> i64;
                #[switchyard(oneway)]
                async fn log(&self, line: String) -> ();
            }
        },
    );
    assert_eq!(service.name, "Calc");
    assert_eq!(ids::type_text(&service.crate_path), "::renamed");
    assert_eq!(service.docs, ["A calculator."]);
    let [add, log] = &service.methods[..] else {
        panic!("two methods")
    };
    assert_eq!(add.docs, ["Adds."]);
    assert_eq!(add.id, ids::fnv1a32("Calc.add"));
    assert_eq!(add.signature, "add(i64,i64) -> i64");
    assert!(matches!(add.syntax.receiver, Receiver::Ref));
    assert!(log.oneway && log.output.is_none());
    assert_eq!(log.signature, "oneway log(String) -> ()");
    assert!(service.syntax.errors.is_empty());
    assert!(service.syntax.item.items.iter().all(|item| match item {
        syn::TraitItem::Fn(f) => f.attrs.iter().all(|a| !is_switchyard_attr(a)),
        _ => true,
    }));
}

#[test]
fn records_unknown_options_instead_of_failing() {
    let service = parse_ok(
        quote!(timeout = 5),
        quote! {
            #[switchyard(retries = 3)]
            trait T { #[switchyard(fast)] async fn f(&self); }
        },
    );
    assert_eq!(service.syntax.errors.len(), 2);
    assert_eq!(service.methods[0].syntax.errors.len(), 1);
}

#[test]
fn keeps_odd_receivers_and_patterns_for_validation() {
    let service = parse_ok(
        quote!(),
        quote!(
            trait T {
                async fn f(&mut self, (a, b): (u8, u8));
                async fn g(x: u8);
            }
        ),
    );
    assert!(matches!(
        service.methods[0].syntax.receiver,
        Receiver::Other(_)
    ));
    assert_eq!(service.methods[0].args[0].name, "arg0");
    assert!(matches!(
        service.methods[1].syntax.receiver,
        Receiver::Missing
    ));
}

#[test]
fn rejects_non_traits() {
    let err = parse(
        quote!(),
        quote!(
            struct S;
        ),
        &syn::parse_quote!(::switchyard),
    )
    .unwrap_err();
    assert!(err.to_string().contains("applies to traits only"));
}

#[test]
fn reads_compress_alone_and_with_other_options() {
    let service = parse_ok(
        quote!(),
        quote! {
            trait Images {
                async fn name(&self) -> String;
                #[switchyard(compress = false)]
                async fn png(&self, id: u64) -> Vec<u8>;
                #[switchyard(oneway, compress = false, priority = 3)]
                async fn store(&self, archive: Vec<u8>);
                #[switchyard(oneway)]
                #[switchyard(compress = true)]
                async fn note(&self, text: String);
            }
        },
    );
    let options: Vec<_> = service
        .methods
        .iter()
        .map(|m| {
            (
                m.oneway,
                m.priority,
                m.compress,
                m.syntax.compress_span.is_some(),
            )
        })
        .collect();
    assert_eq!(
        options,
        [
            (false, 0, true, false),
            (false, 0, false, true),
            (true, 3, false, true),
            (true, 0, true, true),
        ]
    );
    assert!(service.methods.iter().all(|m| m.syntax.errors.is_empty()));
    // A transport hint, not part of the contract: the signature is the same.
    assert_eq!(service.methods[1].signature, "png(u64) -> Vec<u8>");
}

#[test]
fn records_malformed_compress_options() {
    let service = parse_ok(
        quote!(),
        quote! {
            trait T {
                #[switchyard(compress = "no")]
                async fn a(&self);
                #[switchyard(compress = 0)]
                async fn b(&self);
                #[switchyard(compress)]
                async fn c(&self);
                #[switchyard(compress = false, compress = true)]
                async fn d(&self);
                #[switchyard(compress(false))]
                async fn e(&self);
            }
        },
    );
    for method in &service.methods {
        assert_eq!(method.syntax.errors.len(), 1, "{}", method.name);
    }
    // The first of two stays.
    assert!(!service.methods[3].compress);
}
