//! Semantic checks on the [model](crate::model). Every problem becomes a
//! compile error spanned on the user's offending tokens, saying what to do;
//! all of them are reported at once.

use std::collections::HashMap;

use proc_macro2::Span;
use quote::ToTokens;
use syn::visit::Visit;

use crate::model::{Arg, Method, Receiver, Service};
use crate::parse::{is_streaming_path, path_stream_item, status_ok};

fn spanned(errors: &mut Vec<syn::Error>, tokens: impl ToTokens, message: impl std::fmt::Display) {
    errors.push(syn::Error::new_spanned(tokens, message));
}

fn at(errors: &mut Vec<syn::Error>, span: Span, message: impl std::fmt::Display) {
    errors.push(syn::Error::new(span, message));
}

/// Names of the methods the generated client has besides the service's own.
const CLIENT_METHODS: &[&str] = &[
    "connect",
    "new",
    "from_core",
    "with_codec",
    "with_timeout",
    "with_metadata",
    "with_all_metadata",
    "selection",
    "channel",
];

/// Checks `service`; returns every problem found, combined into one error.
pub(crate) fn validate(service: &Service) -> syn::Result<()> {
    let mut errors: Vec<syn::Error> = service.syntax.errors.clone();
    check_trait(service, &mut errors);
    let mut names: HashMap<String, &Method> = HashMap::new();
    let mut ids: HashMap<u32, &Method> = HashMap::new();
    for method in &service.methods {
        check_method(service, method, &mut errors);
        let name = method.name_str();
        if let Some(first) = names.get(&name) {
            let _ = first;
            errors.push(syn::Error::new(
                method.name.span(),
                format!(
                    "duplicate method `{name}`: method names must be unique in a service \
                     because they identify the method on the wire; rename one of them"
                ),
            ));
            continue;
        }
        names.insert(name.clone(), method);
        if let Some(first) = ids.get(&method.id) {
            errors.push(syn::Error::new(
                method.name.span(),
                format!(
                    "method id collision: `{service}.{name}` and `{service}.{first}` both hash \
                     to id {id:#010x} (32-bit FNV-1a of `Service.method`); rename one of the \
                     two methods",
                    service = service.name,
                    first = first.name_str(),
                    id = method.id,
                ),
            ));
        } else {
            ids.insert(method.id, method);
        }
    }

    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(mut first) => {
            errors.for_each(|err| first.combine(err));
            Err(first)
        }
    }
}

fn check_trait(service: &Service, errors: &mut Vec<syn::Error>) {
    let item = &service.syntax.item;
    if let Some(name_span) = service.syntax.name_span {
        let name = &service.name;
        if name.is_empty() || name.contains(|c: char| c == '.' || c.is_whitespace()) {
            at(
                errors,
                name_span,
                format!(
                    "service name {name:?} is not usable on the wire: it must be non-empty and \
                     contain no `.` or whitespace, e.g. `name = \"Calculator\"`"
                ),
            );
        }
    }
    if let Some(unsafety) = &item.unsafety {
        spanned(
            errors,
            unsafety,
            "service traits cannot be `unsafe`: remove `unsafe`".to_owned(),
        );
    }
    if let Some(auto) = &item.auto_token {
        spanned(
            errors,
            auto,
            "service traits cannot be `auto` traits: remove `auto`".to_owned(),
        );
    }
    if !item.generics.params.is_empty() {
        spanned(
            errors,
            &item.generics,
            "service traits cannot be generic: remove the generic parameters; argument and \
             return types must be concrete so that both ends agree on the wire format"
                .to_owned(),
        );
    }
    if let Some(where_clause) = &item.generics.where_clause {
        spanned(
            errors,
            where_clause,
            "service traits cannot have a `where` clause: remove it".to_owned(),
        );
    }
    for trait_item in &item.items {
        let what = match trait_item {
            syn::TraitItem::Fn(_) => continue,
            syn::TraitItem::Const(_) => "associated constants",
            syn::TraitItem::Type(_) => "associated types",
            syn::TraitItem::Macro(_) => "macro invocations",
            _ => "items other than methods",
        };
        spanned(
            errors,
            trait_item,
            format!(
                "{what} are not allowed in a service trait: it may only declare methods like \
                 `async fn name(&self, arg: T) -> R;`; move this item out of the trait"
            ),
        );
    }
}

fn check_method(service: &Service, method: &Method, errors: &mut Vec<syn::Error>) {
    let sig = &method.syntax.sig;
    let name = method.name_str();
    for err in &method.syntax.errors {
        errors.push(err.clone());
    }
    if sig.asyncness.is_none() {
        spanned(
            errors,
            sig.fn_token,
            format!("service methods must be async: write `async fn {name}(...)`"),
        );
    }
    if let Some(constness) = &sig.constness {
        spanned(
            errors,
            constness,
            "service methods cannot be `const`: remove `const`".to_owned(),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        spanned(
            errors,
            unsafety,
            "service methods cannot be `unsafe`: remove `unsafe`".to_owned(),
        );
    }
    if let Some(abi) = &sig.abi {
        spanned(
            errors,
            abi,
            "service methods cannot have an ABI: remove `extern`".to_owned(),
        );
    }
    if !sig.generics.params.is_empty() {
        spanned(
            errors,
            &sig.generics,
            format!(
                "service methods cannot be generic (this includes lifetime parameters): remove \
                 the parameters from `{name}` and use concrete, owned types"
            ),
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        spanned(
            errors,
            where_clause,
            "service methods cannot have a `where` clause: remove it".to_owned(),
        );
    }
    if let Some(variadic) = &sig.variadic {
        spanned(
            errors,
            variadic,
            "service methods cannot be variadic: remove `...`".to_owned(),
        );
    }
    match &method.syntax.receiver {
        Receiver::Ref => {}
        Receiver::Other(receiver) => {
            let message = if receiver.colon_token.is_some() {
                "service methods take `&self` with no explicit type: write `&self`"
            } else if receiver.mutability.is_some() && receiver.reference.is_some() {
                "service methods take `&self`, not `&mut self`: the server runs calls \
                 concurrently on one shared value; keep mutable state behind a lock \
                 (e.g. `Mutex`) and write `&self`"
            } else if receiver.reference.is_none() {
                "service methods take `&self`, not `self`: the server keeps the implementation \
                 and shares it between calls; write `&self`"
            } else {
                "service methods take `&self` without a lifetime: write `&self`"
            };
            spanned(errors, receiver, message.to_owned());
        }
        Receiver::Missing => at(
            errors,
            sig.paren_token.span.join(),
            format!(
                "service methods take `&self` as their first parameter: write `async fn \
                 {name}(&self, ...)`"
            ),
        ),
    }
    for arg in &method.args {
        if !matches!(&arg.pat, syn::Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none())
        {
            spanned(
                errors,
                &arg.pat,
                "arguments must be plain names like `point: Point`, not patterns; destructure \
                 the value inside your implementation instead"
                    .to_owned(),
            );
        }
        check_owned(&arg.ty, "arguments", errors);
    }
    if let Some(span) = method.syntax.priority_span {
        if !method.oneway {
            at(
                errors,
                span,
                format!(
                    "`priority` orders one-way calls in a message queue, so it needs `oneway`: \
                     write `#[switchyard(oneway, priority = {})]` or remove the priority",
                    method.priority
                ),
            );
        } else if method.priority > 32767 {
            at(
                errors,
                span,
                format!(
                    "priority {} is out of range: POSIX message queues take 0 to 32767",
                    method.priority
                ),
            );
        }
    }
    if let Some(span) = method.syntax.idempotent_span {
        let why = if method.oneway {
            Some("a one-way call gets no reply, so nothing tells the client to make it again")
        } else if method.client_stream.is_some() || method.server_stream.is_some() {
            Some(
                "retries make unary calls again, and a stream's messages are not kept to be \
                 sent twice",
            )
        } else {
            None
        };
        if let Some(why) = why {
            at(
                errors,
                span,
                format!(
                    "`idempotent` lets a client retry `{name}`, but {why}: remove `idempotent`"
                ),
            );
        }
    }
    check_streams(method, errors);
    if let Some(output) = &method.output {
        check_owned(output, "return types", errors);
        // A stream result in a one-way method has an error of its own.
        if method.oneway && streaming_paths(output).is_empty() {
            spanned(
                errors,
                output,
                format!(
                    "a `#[switchyard(oneway)]` method cannot return a value because no reply is \
                     sent: remove `-> {}`, or remove `oneway` to make `{name}` a normal call",
                    display(output)
                ),
            );
        }
    }
    if let Some(body) = &method.syntax.default_body {
        at(
            errors,
            body.brace_token.span.join(),
            format!(
                "service methods cannot have a default body: end the declaration with `;` and \
                 implement `{name}` in your `impl {} for ...` instead",
                service.trait_ident
            ),
        );
    }
    for attr in &method.syntax.attrs {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            spanned(
                errors,
                attr,
                "`#[cfg]` is not supported on service methods: both ends must agree on the \
                 methods, so declare the method unconditionally (and return an error from \
                 the implementation where it does not apply)",
            );
        }
    }
    if CLIENT_METHODS.contains(&name.as_str()) {
        spanned(
            errors,
            &method.name,
            format!(
                "a method named `{name}` would clash with `{name}` of the generated client \
                 `{}Client`: rename the method",
                service.trait_name()
            ),
        );
    }
}

/// Checks where `Streaming` appears: as at most one argument's whole type,
/// as the whole return type or as `T` of `Result<T, Status>`, never in a
/// one-way method, and always with exactly one type argument.
fn check_streams(method: &Method, errors: &mut Vec<syn::Error>) {
    let name = method.name_str();
    let mut first_stream: Option<&Arg> = None;
    for arg in &method.args {
        for found in streaming_paths(&arg.ty) {
            if method.oneway {
                oneway_stream(found, &name, errors);
            } else if !is_whole(found, &arg.ty) {
                spanned(
                    errors,
                    found,
                    format!(
                        "a stream can only be an argument's whole type, as in `items: \
                         Streaming<T>`, not part of `{}`: its items are sent one by one after \
                         the other arguments; make the argument a `Streaming<T>`, or send the \
                         values together in an ordinary type such as `Vec<T>`",
                        display(&arg.ty)
                    ),
                );
            } else if check_arity(found, errors) {
                match first_stream {
                    Some(first) => spanned(
                        errors,
                        found,
                        format!(
                            "a method takes at most one stream argument; `{name}` already \
                             takes `{}: {}`: send both kinds of items in one stream (of an \
                             enum or a tuple), or split `{name}` into two methods",
                            first.name,
                            display(&first.ty)
                        ),
                    ),
                    None => first_stream = Some(arg),
                }
            }
        }
    }
    let Some(output) = &method.output else {
        return;
    };
    let ok = status_ok(output);
    for found in streaming_paths(output) {
        if method.oneway {
            oneway_stream(found, &name, errors);
        } else if is_whole(found, output) || ok.is_some_and(|ok| is_whole(found, ok)) {
            check_arity(found, errors);
        } else {
            spanned(
                errors,
                found,
                format!(
                    "a stream can only be the whole return type, `-> Streaming<T>`, or the \
                     `Ok` type of `-> Result<Streaming<T>, Status>` (to refuse the call before \
                     streaming), not part of `{}`: return one of these two",
                    display(output)
                ),
            );
        }
    }
}

fn oneway_stream(found: &syn::TypePath, name: &str, errors: &mut Vec<syn::Error>) {
    spanned(
        errors,
        found,
        format!(
            "a `#[switchyard(oneway)]` method cannot take or return a stream: a stream needs a \
             connection for its whole length, and one-way calls may go through a message \
             queue; remove `oneway` to make `{name}` a streaming call, or send each item as a \
             one-way call of its own"
        ),
    );
}

/// Whether `Streaming` in `found` has exactly one type argument; reports it
/// if not.
fn check_arity(found: &syn::TypePath, errors: &mut Vec<syn::Error>) -> bool {
    if path_stream_item(found).is_some() {
        return true;
    }
    let segment = found.path.segments.last();
    spanned(
        errors,
        segment,
        format!(
            "`Streaming` takes exactly one type argument, the type of its items: write \
             `Streaming<Item>` instead of `{}`",
            display(found)
        ),
    );
    false
}

/// Whether `found` is `ty` itself, not a part of it.
fn is_whole(found: &syn::TypePath, ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(path) if std::ptr::eq(path, found))
}

/// Every path in `ty` naming a stream type, outermost first.
fn streaming_paths(ty: &syn::Type) -> Vec<&syn::TypePath> {
    struct Finder<'ast>(Vec<&'ast syn::TypePath>);
    impl<'ast> Visit<'ast> for Finder<'ast> {
        fn visit_type_path(&mut self, path: &'ast syn::TypePath) {
            if is_streaming_path(path) {
                self.0.push(path);
            }
            syn::visit::visit_type_path(self, path);
        }
    }
    let mut finder = Finder(Vec::new());
    finder.visit_type(ty);
    finder.0
}

/// Rejects references and `impl Trait` anywhere in `ty`.
fn check_owned(ty: &syn::Type, what: &str, errors: &mut Vec<syn::Error>) {
    #[derive(Default)]
    struct Finder<'ast> {
        references: Vec<&'ast syn::TypeReference>,
        impls: Vec<&'ast syn::TypeImplTrait>,
        self_types: Vec<&'ast syn::Ident>,
    }
    impl<'ast> Visit<'ast> for Finder<'ast> {
        fn visit_path_segment(&mut self, segment: &'ast syn::PathSegment) {
            if segment.ident == "Self" {
                self.self_types.push(&segment.ident);
            }
            syn::visit::visit_path_segment(self, segment);
        }
        fn visit_type_reference(&mut self, reference: &'ast syn::TypeReference) {
            self.references.push(reference);
        }
        fn visit_type_impl_trait(&mut self, impl_trait: &'ast syn::TypeImplTrait) {
            self.impls.push(impl_trait);
        }
    }
    let mut finder = Finder::default();
    finder.visit_type(ty);
    for reference in finder.references {
        spanned(
            errors,
            reference,
            format!(
                "{what} must be owned types (they are decoded from bytes): replace `{}` with \
                 `{}`",
                display(reference),
                owned_suggestion(reference)
            ),
        );
    }
    for self_type in finder.self_types {
        spanned(
            errors,
            self_type,
            format!(
                "`Self` cannot appear in {what}: client and server have different `Self` types; \
                 name a concrete type"
            ),
        );
    }
    for impl_trait in finder.impls {
        spanned(
            errors,
            impl_trait,
            format!(
                "`impl Trait` is not allowed in {what}: use a concrete type that implements \
                 `serde::Serialize` and `serde::Deserialize`"
            ),
        );
    }
}

/// `&str` -> `String`, `&[T]` -> `Vec<T>`, `&Path` -> `PathBuf`, `&T` -> `T`.
fn owned_suggestion(reference: &syn::TypeReference) -> String {
    let elem = &reference.elem;
    match &**elem {
        syn::Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => {
            "String".to_owned()
        }
        syn::Type::Path(path) if path.qself.is_none() && path.path.is_ident("Path") => {
            "PathBuf".to_owned()
        }
        syn::Type::Slice(slice) => format!("Vec<{}>", display(&slice.elem)),
        other => display(other),
    }
}

/// Tokens as a user would write them: `&str`, not `& str` as `quote` prints.
fn display(tokens: &impl ToTokens) -> String {
    let mut text = tokens.to_token_stream().to_string();
    for (from, to) in [
        ("& ", "&"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        (" :: ", "::"),
        (":: ", "::"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        text = text.replace(from, to);
    }
    text
}

#[cfg(test)]
mod tests;
