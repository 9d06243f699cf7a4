//! Stable method ids and signature fingerprints.
//!
//! Both are FNV-1a hashes, computed here at compile time and specified in the
//! wire protocol so other implementations can derive the same values:
//!
//! - method id: 32-bit FNV-1a of `"{service}.{method}"`;
//! - method fingerprint: 64-bit FNV-1a of the [signature text](signature);
//! - service fingerprint: 64-bit FNV-1a of all signatures, in declaration
//!   order, joined with `;`.

use quote::ToTokens;

/// 32-bit FNV-1a (offset basis `0x811c9dc5`, prime `0x01000193`).
pub fn fnv1a32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
pub fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The id of `method` in `service`: [`fnv1a32`] of `"{service}.{method}"`.
pub fn method_id(service: &str, method: &str) -> u32 {
    fnv1a32(&full_name(service, method))
}

/// `"{service}.{method}"`, the string a method id is hashed from.
pub fn full_name(service: &str, method: &str) -> String {
    format!("{service}.{method}")
}

/// A type as signature text: its tokens printed by `quote` with all
/// whitespace removed, e.g. `Result<i64,MathError>`.
pub fn type_text(ty: &impl ToTokens) -> String {
    let mut text = ty.to_token_stream().to_string();
    text.retain(|c| !c.is_whitespace());
    text
}

/// The signature text of a method: `name(T1,T2) -> R`, with `()` for a unit
/// return and an `oneway ` prefix for one-way methods, e.g.
/// `add(i64,i64) -> i64` or `oneway log(String) -> ()`.
pub fn signature(name: &str, arg_types: &[String], output: Option<&str>, oneway: bool) -> String {
    format!(
        "{prefix}{name}({args}) -> {output}",
        prefix = if oneway { "oneway " } else { "" },
        args = arg_types.join(","),
        output = output.unwrap_or("()"),
    )
}

/// The fingerprint of a whole service: [`fnv1a64`] of the method signatures
/// joined with `;`, in declaration order.
pub fn service_fingerprint<'a>(signatures: impl IntoIterator<Item = &'a str>) -> u64 {
    fnv1a64(&signatures.into_iter().collect::<Vec<_>>().join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_matches_published_vectors() {
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn fnv1a64_matches_published_vectors() {
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn type_text_drops_all_whitespace() {
        let ty: syn::Type = syn::parse_quote!(Result<i64, MathError>);
        assert_eq!(type_text(&ty), "Result<i64,MathError>");
        let ty: syn::Type = syn::parse_quote!(Option<(u8, String)>);
        assert_eq!(type_text(&ty), "Option<(u8,String)>");
    }

    #[test]
    fn signature_text() {
        let i64s = ["i64".to_owned(), "i64".to_owned()];
        assert_eq!(
            signature("add", &i64s, Some("i64"), false),
            "add(i64,i64) -> i64"
        );
        let string = ["String".to_owned()];
        assert_eq!(
            signature("log", &string, None, true),
            "oneway log(String) -> ()"
        );
        assert_eq!(signature("ping", &[], None, false), "ping() -> ()");
    }

    #[test]
    fn streams_change_the_signature_and_fingerprint() {
        let args = ["String".to_owned(), "u64".to_owned()];
        let unary = signature("tail", &args, Some("Line"), false);
        let streaming = signature("tail", &args, Some("Streaming<Line>"), false);
        assert_eq!(streaming, "tail(String,u64) -> Streaming<Line>");
        assert_ne!(fnv1a64(&unary), fnv1a64(&streaming));
        let client = signature("put", &["Streaming<u8>".to_owned()], None, false);
        let unary = signature("put", &["u8".to_owned()], None, false);
        assert_ne!(fnv1a64(&client), fnv1a64(&unary));
    }

    #[test]
    fn service_fingerprint_joins_with_semicolons() {
        assert_eq!(
            service_fingerprint(["a() -> ()", "b() -> ()"]),
            fnv1a64("a() -> ();b() -> ()")
        );
        assert_eq!(service_fingerprint([]), fnv1a64(""));
    }

    #[test]
    fn method_id_hashes_the_full_name() {
        assert_eq!(method_id("Calculator", "add"), fnv1a32("Calculator.add"));
    }

    /// Finds two short method names whose ids collide in service `Collide`;
    /// the pair is used by the `id_collision` UI test. Run with
    /// `cargo test -p switchyard-codegen --lib -- --ignored find_collision --nocapture`.
    #[test]
    #[ignore = "a one-off search, not a check"]
    fn find_collision() {
        const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
        const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
        let mut seen = std::collections::HashMap::new();
        let mut names: Vec<String> = FIRST.iter().map(|&c| char::from(c).to_string()).collect();
        for _ in 0..5 {
            let mut longer = Vec::new();
            for name in &names {
                let id = method_id("Collide", name);
                if let Some(other) = seen.insert(id, name.clone()) {
                    println!("`{other}` and `{name}` collide: {id:#010x}");
                    return;
                }
                longer.extend(REST.iter().map(|&c| format!("{name}{}", char::from(c))));
            }
            names = longer;
        }
        panic!("no collision among names of up to five characters");
    }
}
