//! The service model: what a `#[switchyard::service]` trait describes.
//!
//! Plain data, built by the parser and checked by the validator before code is
//! emitted from it. It serializes to JSON (see [`describe`](crate::describe)),
//! with types and paths as normalized strings; the syntax the validator needs
//! to point at the user's tokens is kept in fields skipped by serde.

use proc_macro2::Span;
use quote::ToTokens;
use serde::{Serialize, Serializer};

/// A service: one trait carrying `#[switchyard::service]`.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// The service name used on the wire: `name = "..."` or the trait's name.
    pub name: String,
    /// The trait's name.
    #[serde(serialize_with = "tokens")]
    pub trait_ident: syn::Ident,
    /// The trait's visibility, reused for everything emitted.
    #[serde(serialize_with = "tokens")]
    pub vis: syn::Visibility,
    /// Path to the switchyard crate in generated code, `::switchyard` by default.
    #[serde(serialize_with = "tokens")]
    pub crate_path: syn::Path,
    /// The trait's doc comment, one entry per line.
    pub docs: Vec<String>,
    /// [`service_fingerprint`](crate::ids::service_fingerprint) of the method signatures.
    pub fingerprint: u64,
    /// The methods, in declaration order.
    pub methods: Vec<Method>,
    /// Syntax kept for validation and emission.
    #[serde(skip)]
    pub syntax: ServiceSyntax,
}

/// The parts of a service trait that are not part of its meaning but are
/// needed to validate it and to re-emit it.
#[derive(Debug, Clone)]
pub struct ServiceSyntax {
    /// The trait's attributes other than `#[switchyard(...)]` (doc comments,
    /// `#[allow]`, ...), passed through to the emitted trait.
    pub attrs: Vec<syn::Attribute>,
    /// The trait as written (minus `#[switchyard(...)]` attributes), emitted
    /// alone when validation fails so that other code does not cascade errors.
    pub item: syn::ItemTrait,
    /// The span of `name = "..."`, if given.
    pub name_span: Option<Span>,
    /// Options that could not be understood: keys and malformed values.
    pub errors: Vec<syn::Error>,
}

/// One method of a service.
#[derive(Debug, Clone, Serialize)]
pub struct Method {
    /// The method's name.
    #[serde(serialize_with = "unraw")]
    pub name: syn::Ident,
    /// The doc comment, one entry per line.
    pub docs: Vec<String>,
    /// The arguments after `&self`.
    pub args: Vec<Arg>,
    /// The return type; `None` for `()`.
    #[serde(serialize_with = "opt_type")]
    pub output: Option<syn::Type>,
    /// When the return type is `Result<T, Status>`: `T` (`None` for `()`).
    /// Such a method answers with `T`, or with the `Status` as the call's
    /// own status (its code and message reach the caller as they were set),
    /// and its client method returns `Result<T, Status>`, not nested.
    #[serde(serialize_with = "opt_type")]
    pub status_ok: Option<syn::Type>,
    /// Whether the return type is `Result<T, Status>` (see `status_ok`).
    pub returns_status: bool,
    /// The argument of type `Streaming<T>`, if any: the caller sends a
    /// stream of `T` after the other arguments (client streaming).
    pub client_stream: Option<ClientStream>,
    /// When the return type is `Streaming<T>` or `Result<Streaming<T>,
    /// Status>`: `T`, the item type of the stream the handler answers with
    /// (server streaming).
    #[serde(serialize_with = "opt_type")]
    pub server_stream: Option<syn::Type>,
    /// Whether the method is `#[switchyard(oneway)]`: no reply is sent.
    pub oneway: bool,
    /// `#[switchyard(oneway, priority = N)]`: the message-queue priority of
    /// a one-way call (higher is delivered first); 0 by default.
    pub priority: u32,
    /// Whether the method's payloads (arguments, result, stream messages) may
    /// be compressed on links that compress: `true` unless the method says
    /// `#[switchyard(compress = false)]`. Not part of the signature: each
    /// end decides for what it sends.
    pub compress: bool,
    /// Whether the method is `#[switchyard(idempotent)]`: making it twice
    /// does no harm, so a client may retry it on a retryable failure (and
    /// hedge it). Not part of the signature: only the client acts on it.
    pub idempotent: bool,
    /// The method id, [`method_id`](crate::ids::method_id).
    pub id: u32,
    /// The signature text, [`signature`](crate::ids::signature).
    pub signature: String,
    /// [`fnv1a64`](crate::ids::fnv1a64) of [`signature`](Self::signature).
    pub fingerprint: u64,
    /// Syntax kept for validation and emission.
    #[serde(skip)]
    pub syntax: MethodSyntax,
}

/// The parts of a method that validation looks at.
#[derive(Debug, Clone)]
pub struct MethodSyntax {
    /// Attributes other than `#[switchyard(...)]`, passed through to the trait.
    pub attrs: Vec<syn::Attribute>,
    /// The signature as written.
    pub sig: syn::Signature,
    /// What the receiver is.
    pub receiver: Receiver,
    /// The default body, if the trait gives one.
    pub default_body: Option<syn::Block>,
    /// The span of `oneway` in `#[switchyard(oneway)]`.
    pub oneway_span: Option<Span>,
    /// The span of `priority` in `#[switchyard(priority = N)]`.
    pub priority_span: Option<Span>,
    /// The span of `compress = ...` in `#[switchyard(compress = false)]`.
    pub compress_span: Option<Span>,
    /// The span of `idempotent` in `#[switchyard(idempotent)]`.
    pub idempotent_span: Option<Span>,
    /// Options that could not be understood: keys and malformed values.
    pub errors: Vec<syn::Error>,
}

/// The first parameter of a method.
#[derive(Debug, Clone)]
pub enum Receiver {
    /// `&self`, the only receiver allowed.
    Ref,
    /// Some other receiver (`&mut self`, `self`, `self: Box<Self>`, `&'a self`).
    Other(syn::Receiver),
    /// No receiver at all (an associated function).
    Missing,
}

/// One argument of a method.
#[derive(Debug, Clone, Serialize)]
pub struct Arg {
    /// The argument's name; a placeholder (`argN`) if the pattern is not an
    /// identifier.
    #[serde(serialize_with = "unraw")]
    pub name: syn::Ident,
    /// The argument's type.
    #[serde(serialize_with = "type_str")]
    pub ty: syn::Type,
    /// The pattern as written (validation rejects anything but an identifier).
    #[serde(skip)]
    pub pat: syn::Pat,
}

/// The stream argument of a client-streaming method.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStream {
    /// The argument's position in [`Method::args`].
    pub index: usize,
    /// `T` of the argument's `Streaming<T>`.
    #[serde(serialize_with = "type_str")]
    pub item: syn::Type,
}

impl Service {
    /// The name of the emitted descriptor static, e.g. `CALCULATOR_DESCRIPTOR`.
    pub fn descriptor_ident(&self) -> syn::Ident {
        let name = format!("{}_DESCRIPTOR", upper_snake(&self.trait_name()));
        syn::Ident::new(&name, self.trait_ident.span())
    }

    /// The name of an emitted type: the trait's name plus `suffix`.
    pub fn suffixed_ident(&self, suffix: &str) -> syn::Ident {
        syn::Ident::new(
            &format!("{}{suffix}", self.trait_name()),
            self.trait_ident.span(),
        )
    }

    /// The trait's name without any `r#`.
    pub fn trait_name(&self) -> String {
        syn::ext::IdentExt::unraw(&self.trait_ident).to_string()
    }
}

impl Method {
    /// The method's name without any `r#`.
    pub fn name_str(&self) -> String {
        syn::ext::IdentExt::unraw(&self.name).to_string()
    }

    /// The arguments sent as the request payload: all but the stream
    /// argument, in declaration order.
    pub fn request_args(&self) -> impl Iterator<Item = &Arg> {
        let stream = self.client_stream.as_ref().map(|stream| stream.index);
        self.args
            .iter()
            .enumerate()
            .filter(move |(index, _)| Some(*index) != stream)
            .map(|(_, arg)| arg)
    }
}

/// `HTTPProxy` -> `HTTP_PROXY`, `Calculator` -> `CALCULATOR`, `Echo2` -> `ECHO2`.
pub fn upper_snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.extend(c.to_uppercase());
    }
    out
}

fn tokens<T: ToTokens, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::ids::type_text(value))
}

fn unraw<S: Serializer>(ident: &syn::Ident, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&syn::ext::IdentExt::unraw(ident).to_string())
}

fn type_str<S: Serializer>(ty: &syn::Type, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::ids::type_text(ty))
}

fn opt_type<S: Serializer>(ty: &Option<syn::Type>, serializer: S) -> Result<S::Ok, S::Error> {
    match ty {
        Some(ty) => serializer.serialize_some(&crate::ids::type_text(ty)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::upper_snake;

    #[test]
    fn upper_snake_cases() {
        assert_eq!(upper_snake("Calculator"), "CALCULATOR");
        assert_eq!(upper_snake("KeyValueStore"), "KEY_VALUE_STORE");
        assert_eq!(upper_snake("HTTPProxy"), "HTTP_PROXY");
        assert_eq!(upper_snake("Echo2Server"), "ECHO2_SERVER");
        assert_eq!(upper_snake("A"), "A");
    }
}
