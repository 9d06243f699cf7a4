//! Syntax -> [model](crate::model): reads the attribute arguments and the
//! trait, without judging them. Anything the model cannot express is kept
//! in its `syntax` fields for [`validate`](crate::validate) to reject.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprLit, Lit, Meta, Token};

use crate::ids;
use crate::model::{Arg, ClientStream, Method, MethodSyntax, Receiver, Service, ServiceSyntax};

/// The options of `#[switchyard(...)]` on a method, told apart from service
/// options when they are put on the trait.
const METHOD_OPTIONS: &[&str] = &["oneway", "priority", "compress", "idempotent"];

/// How to write the `compress` option, for its error messages.
const COMPRESS_HINT: &str = "write `compress = false` for a method whose payloads are already \
                             compressed (images, archives), so that links that compress leave \
                             them alone; `compress = true` is the default";

/// Options for the service as a whole, from `#[switchyard::service(...)]` and
/// from `#[switchyard(...)]` on the trait.
#[derive(Default)]
struct ServiceArgs {
    crate_path: Option<(syn::Path, Span)>,
    name: Option<(String, Span)>,
    errors: Vec<syn::Error>,
}

/// Parses `#[switchyard::service(attr)] item` into a [`Service`].
///
/// Fails only if `item` is not a trait; every other problem is recorded in
/// the model for validation to report, so that all are reported at once.
pub(crate) fn parse(
    attr: TokenStream,
    item: TokenStream,
    default_crate: &syn::Path,
) -> syn::Result<Service> {
    let item = match syn::parse2::<syn::Item>(item)? {
        syn::Item::Trait(item) => item,
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "`#[switchyard::service]` applies to traits only: declare the service as \
                 `pub trait Name { async fn method(&self, arg: T) -> R; }`",
            ));
        }
    };
    let mut args = ServiceArgs::default();
    parse_service_args(attr, &mut args);

    let (switchyard_attrs, attrs) = split_attrs(&item.attrs);
    for attr in switchyard_attrs {
        match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
            Ok(metas) => metas
                .into_iter()
                .for_each(|meta| service_option(meta, &mut args)),
            Err(err) => args.errors.push(err),
        }
    }

    let (name, name_span) = match args.name {
        Some((name, span)) => (name, Some(span)),
        None => (syn::ext::IdentExt::unraw(&item.ident).to_string(), None),
    };
    let crate_path = match args.crate_path {
        Some((path, _)) => path,
        None => default_crate.clone(),
    };

    let mut clean = item.clone();
    clean.attrs.retain(|attr| !is_switchyard_attr(attr));
    let mut methods = Vec::new();
    for trait_item in &mut clean.items {
        if let syn::TraitItem::Fn(function) = trait_item {
            methods.push(parse_method(function, &name));
            function.attrs.retain(|attr| !is_switchyard_attr(attr));
        }
    }
    let fingerprint = ids::service_fingerprint(methods.iter().map(|m| m.signature.as_str()));

    Ok(Service {
        name,
        trait_ident: item.ident.clone(),
        vis: item.vis.clone(),
        crate_path,
        docs: docs(&attrs),
        fingerprint,
        methods,
        syntax: ServiceSyntax {
            attrs,
            item: clean,
            name_span,
            errors: args.errors,
        },
    })
}

fn parse_service_args(attr: TokenStream, args: &mut ServiceArgs) {
    match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr) {
        Ok(metas) => metas
            .into_iter()
            .for_each(|meta| service_option(meta, args)),
        Err(err) => args.errors.push(syn::Error::new(
            err.span(),
            format!("{err}; write the options as `crate = \"::path\", name = \"Name\"`"),
        )),
    }
}

fn service_option(meta: Meta, args: &mut ServiceArgs) {
    let key = meta.path().clone();
    let span = meta.span();
    let value = match &meta {
        Meta::NameValue(nv) => Some(&nv.value),
        _ => None,
    };
    if key.is_ident("crate") {
        let path = value.and_then(|value| match value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => lit.parse::<syn::Path>().ok(),
            Expr::Path(path) if path.qself.is_none() => Some(path.path.clone()),
            _ => None,
        });
        match path {
            None => args.errors.push(syn::Error::new(
                span,
                "write `crate = \"::path::to::switchyard\"` (the path to the switchyard crate)",
            )),
            Some(_) if args.crate_path.is_some() => {
                args.errors
                    .push(syn::Error::new(span, "`crate` is given twice: keep one"));
            }
            Some(path) => args.crate_path = Some((path, span)),
        }
    } else if key.is_ident("name") {
        match value {
            Some(Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            })) if args.name.is_some() => {
                args.errors.push(syn::Error::new_spanned(
                    lit,
                    "`name` is given twice: keep one",
                ));
            }
            Some(Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            })) => {
                args.name = Some((lit.value(), lit.span()));
            }
            _ => args.errors.push(syn::Error::new(
                span,
                "write `name = \"Name\"` (the service name used on the wire)",
            )),
        }
    } else if METHOD_OPTIONS.iter().any(|option| key.is_ident(option)) {
        args.errors.push(syn::Error::new_spanned(
            &key,
            format!(
                "`{}` is a method option, not a service option: write `#[switchyard({})]` \
                 on each method it applies to",
                ids::type_text(&key),
                meta.to_token_stream()
            ),
        ));
    } else {
        args.errors.push(syn::Error::new_spanned(
            &key,
            format!(
                "unknown service option `{}`: the options are `crate = \"::path\"` and \
                 `name = \"Name\"`",
                ids::type_text(&key)
            ),
        ));
    }
}

fn parse_method(function: &syn::TraitItemFn, service: &str) -> Method {
    let (switchyard_attrs, attrs) = split_attrs(&function.attrs);
    let mut oneway_span = None;
    let mut idempotent_span = None;
    let mut priority = None;
    let mut compress = None;
    let mut errors = Vec::new();
    for attr in switchyard_attrs {
        let metas = match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
            Ok(metas) => metas,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        for meta in metas {
            match &meta {
                Meta::Path(path) if path.is_ident("oneway") => oneway_span = Some(path.span()),
                Meta::Path(path) if path.is_ident("idempotent") => {
                    idempotent_span = Some(path.span());
                }
                Meta::NameValue(nv) if nv.path.is_ident("priority") => match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(int), ..
                    }) => match int.base10_parse::<u32>() {
                        Ok(value) => priority = Some((value, nv.path.span())),
                        Err(_) => errors.push(syn::Error::new_spanned(
                            int,
                            "the priority must be a whole number from 0 to 32767",
                        )),
                    },
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "write `priority = N` with N a whole number from 0 to 32767",
                    )),
                },
                Meta::NameValue(nv) if nv.path.is_ident("compress") => {
                    compress_option(nv, &mut compress, &mut errors);
                }
                _ if meta.path().is_ident("oneway") => {
                    errors.push(syn::Error::new_spanned(
                        meta,
                        "write `#[switchyard(oneway)]`",
                    ));
                }
                _ if meta.path().is_ident("idempotent") => errors.push(syn::Error::new_spanned(
                    meta,
                    "write `#[switchyard(idempotent)]`: it takes no value",
                )),
                _ if meta.path().is_ident("compress") => errors.push(syn::Error::new_spanned(
                    meta,
                    format!("`compress` needs a value: {COMPRESS_HINT}"),
                )),
                _ => errors.push(syn::Error::new_spanned(
                    meta.path(),
                    format!(
                        "unknown method option `{}`: the method options are `oneway`, \
                         `priority = N` (for one-way methods), `idempotent` and \
                         `compress = false`",
                        ids::type_text(meta.path())
                    ),
                )),
            }
        }
    }

    let sig = &function.sig;
    let receiver = match sig.receiver() {
        Some(r) if is_plain_ref(r) => Receiver::Ref,
        Some(r) => Receiver::Other(r.clone()),
        None => Receiver::Missing,
    };
    let args: Vec<Arg> = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            syn::FnArg::Typed(typed) => Some(typed),
            syn::FnArg::Receiver(_) => None,
        })
        .enumerate()
        .map(|(i, typed)| Arg {
            name: match &*typed.pat {
                syn::Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                    pat.ident.clone()
                }
                other => syn::Ident::new(&format!("arg{i}"), other.span()),
            },
            ty: (*typed.ty).clone(),
            pat: (*typed.pat).clone(),
        })
        .collect();
    let output = match &sig.output {
        syn::ReturnType::Default => None,
        syn::ReturnType::Type(_, ty) if is_unit(ty) => None,
        syn::ReturnType::Type(_, ty) => Some((**ty).clone()),
    };

    let status_result = output.as_ref().and_then(status_result);
    let client_stream = args.iter().enumerate().find_map(|(index, arg)| {
        stream_item(&arg.ty).map(|item| ClientStream {
            index,
            item: item.clone(),
        })
    });
    let server_stream = output
        .as_ref()
        .and_then(|output| stream_item(output).or_else(|| stream_item(status_ok(output)?)))
        .cloned();
    let name = syn::ext::IdentExt::unraw(&sig.ident).to_string();
    // `Result<T, Status>` and `Streaming<T>` are one contract however
    // `Status` and `Streaming` are spelled.
    let arg_types: Vec<String> = args.iter().map(|arg| signature_type(&arg.ty)).collect();
    let output_text = match &status_result {
        Some(ok) => Some(format!(
            "Result<{},Status>",
            ok.as_ref().map_or_else(|| "()".to_owned(), signature_type)
        )),
        None => output.as_ref().map(signature_type),
    };
    let oneway = oneway_span.is_some();
    let signature = ids::signature(&name, &arg_types, output_text.as_deref(), oneway);
    Method {
        name: sig.ident.clone(),
        docs: docs(&attrs),
        args,
        output,
        returns_status: status_result.is_some(),
        status_ok: status_result.flatten(),
        client_stream,
        server_stream,
        oneway,
        priority: priority.map_or(0, |(value, _)| value),
        compress: compress.is_none_or(|(value, _)| value),
        idempotent: idempotent_span.is_some(),
        id: ids::method_id(service, &name),
        fingerprint: ids::fnv1a64(&signature),
        signature,
        syntax: MethodSyntax {
            attrs,
            sig: sig.clone(),
            receiver,
            default_body: function.default.clone(),
            oneway_span,
            priority_span: priority.map(|(_, span)| span),
            compress_span: compress.map(|(_, span)| span),
            idempotent_span,
            errors,
        },
    }
}

/// Reads `compress = <bool>` into `compress` (the value and the span of
/// `compress`), or records why it cannot.
fn compress_option(
    nv: &syn::MetaNameValue,
    compress: &mut Option<(bool, Span)>,
    errors: &mut Vec<syn::Error>,
) {
    let value = match &nv.value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(value),
            ..
        }) => value.value,
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) if matches!(text.value().as_str(), "true" | "false") => {
            errors.push(syn::Error::new_spanned(
                text,
                format!(
                    "`compress` takes a bool, not a string: write `compress = {}` without quotes",
                    text.value()
                ),
            ));
            return;
        }
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                format!("`compress` takes `true` or `false`: {COMPRESS_HINT}"),
            ));
            return;
        }
    };
    if compress.is_some() {
        errors.push(syn::Error::new_spanned(
            nv,
            "`compress` is given twice: keep one",
        ));
        return;
    }
    *compress = Some((value, nv.path.span()));
}

/// `&self`: a shared reference, no lifetime, no explicit type.
fn is_plain_ref(receiver: &syn::Receiver) -> bool {
    matches!(&receiver.reference, Some((_, None)))
        && receiver.mutability.is_none()
        && receiver.colon_token.is_none()
}

fn is_unit(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Tuple(tuple) => tuple.elems.is_empty(),
        syn::Type::Paren(paren) => is_unit(&paren.elem),
        _ => false,
    }
}

/// Whether `attr` is `#[switchyard(...)]` (consumed by the macro).
pub(crate) fn is_switchyard_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("switchyard")
}

/// Splits attributes into `#[switchyard(...)]` ones and the rest.
fn split_attrs(attrs: &[Attribute]) -> (Vec<&Attribute>, Vec<Attribute>) {
    let (ours, rest): (Vec<&Attribute>, Vec<&Attribute>) =
        attrs.iter().partition(|attr| is_switchyard_attr(attr));
    (ours, rest.into_iter().cloned().collect())
}

/// The lines of `#[doc = "..."]` attributes, without the leading space.
fn docs(attrs: &[Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(lit), ..
                }) => Some(lit.value()),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|doc| doc.lines().map(str::to_owned).collect::<Vec<_>>())
        .map(|line| line.strip_prefix(' ').map(str::to_owned).unwrap_or(line))
        .collect()
}

/// A type as signature text ([`ids::type_text`]), with a stream written
/// `Streaming<T>` however its path is spelled.
fn signature_type(ty: &syn::Type) -> String {
    match stream_item(ty) {
        Some(item) => format!("Streaming<{}>", ids::type_text(item)),
        None => ids::type_text(ty),
    }
}

/// Whether `path` names a stream type: no `<T as Trait>::` and a last
/// segment `Streaming`, whatever its arguments (`Streaming<T>`,
/// `switchyard::Streaming<T>`, but also a malformed `Streaming`).
pub(crate) fn is_streaming_path(path: &syn::TypePath) -> bool {
    path.qself.is_none()
        && path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "Streaming")
}

/// `T` of a stream type `Streaming<T>`: a [streaming path](is_streaming_path)
/// with exactly one generic argument, a type.
fn stream_item(ty: &syn::Type) -> Option<&syn::Type> {
    match ty {
        syn::Type::Path(path) => path_stream_item(path),
        _ => None,
    }
}

/// [`stream_item`] of a path type.
pub(crate) fn path_stream_item(path: &syn::TypePath) -> Option<&syn::Type> {
    if !is_streaming_path(path) {
        return None;
    }
    let last = path.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(item)) if args.args.len() == 1 => Some(item),
        _ => None,
    }
}

/// For `Result<T, Status>` (any path ending in `Result` whose error type's
/// path ends in `Status`): `Some(Some(T))`, or `Some(None)` when `T` is `()`.
fn status_result(ty: &syn::Type) -> Option<Option<syn::Type>> {
    status_ok(ty).map(|ok| (!is_unit(ok)).then(|| ok.clone()))
}

/// `T` of `Result<T, Status>` (see [`status_result`]), `()` included.
pub(crate) fn status_ok(ty: &syn::Type) -> Option<&syn::Type> {
    let syn::Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let (Some(ok), Some(syn::Type::Path(err)), None) = (types.next(), types.next(), types.next())
    else {
        return None;
    };
    let err = err.path.segments.last()?;
    if err.ident != "Status" || !err.arguments.is_none() {
        return None;
    }
    Some(ok)
}

#[cfg(test)]
mod tests;
