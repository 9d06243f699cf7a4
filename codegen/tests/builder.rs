//! The build-script [`Builder`] and the JSON description of services.

use std::fs;

use quote::quote;
use switchyard_codegen::{BuildError, Builder, describe, ids};

const ECHO: &str = r#"//! Inner docs are dropped: they cannot be `include!`d.
#![allow(dead_code)]

/// Kept as is.
pub const LIMIT: usize = 4;

#[switchyard::service]
pub trait Echo {
    async fn echo(&self, text: String) -> String;
}

mod nested {
    #[service(name = "Inner")]
    pub trait Ping {
        async fn ping(&self);
    }
}
"#;

#[test]
fn writes_the_expansion_into_out_dir() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("echo.rs");
    fs::write(&input, ECHO).unwrap();
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();

    Builder::new()
        .file(&input)
        .out_dir(&out_dir)
        .crate_path("::my_switchyard")
        .emit_rerun_if_changed(false)
        .build()
        .unwrap();

    let output = fs::read_to_string(out_dir.join("echo.rs")).unwrap();
    syn::parse_file(&output).expect("the output is valid Rust");
    assert!(!output.contains("#!["), "{output}");
    assert!(!output.contains("#[switchyard::service]"), "{output}");
    assert!(output.contains("pub const LIMIT: usize = 4;"), "{output}");
    assert!(output.contains("pub struct EchoClient<"), "{output}");
    assert!(output.contains("pub struct EchoServer<"), "{output}");
    assert!(
        output.contains("::my_switchyard::__private::ServiceDescriptor"),
        "{output}"
    );
    assert!(output.contains("mod nested {"), "{output}");
    assert!(output.contains("pub static PING_DESCRIPTOR"), "{output}");
    assert!(output.contains(r#"full_name: "Inner.ping""#), "{output}");
}

#[test]
fn missing_files_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Builder::new()
        .file(dir.path().join("absent.rs"))
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::Io { .. }), "{err}");
}

#[test]
fn files_with_the_same_name_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        fs::create_dir(dir.path().join(sub)).unwrap();
        fs::write(dir.path().join(sub).join("svc.rs"), "").unwrap();
    }
    let err = Builder::new()
        .file(dir.path().join("a/svc.rs"))
        .file(dir.path().join("b/svc.rs"))
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::DuplicateOutput { .. }), "{err}");
}

#[test]
fn describe_gives_the_model_as_json() {
    let json = describe(
        quote!(name = "Calc"),
        quote! {
            /// Arithmetic.
            pub trait Calculator {
                #[switchyard(idempotent)]
                async fn add(&self, a: i64, b: i64) -> i64;
                async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
                #[switchyard(oneway, priority = 7)]
                async fn log(&self, line: String);
            }
        },
    )
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let signatures = [
        "add(i64,i64) -> i64",
        "div(i64,i64) -> Result<i64,MathError>",
        "oneway log(String) -> ()",
    ];
    assert_eq!(
        value,
        serde_json::json!({
            "name": "Calc",
            "trait_ident": "Calculator",
            "vis": "pub",
            "crate_path": "::switchyard",
            "docs": ["Arithmetic."],
            "fingerprint": ids::service_fingerprint(signatures),
            "methods": [
                {
                    "name": "add",
                    "docs": [],
                    "args": [{"name": "a", "ty": "i64"}, {"name": "b", "ty": "i64"}],
                    "output": "i64",
                    "status_ok": null,
                    "returns_status": false,
                    "client_stream": null,
                    "server_stream": null,
                    "oneway": false,
                    "priority": 0,
                    "compress": true,
                    "idempotent": true,
                    "id": ids::fnv1a32("Calc.add"),
                    "signature": signatures[0],
                    "fingerprint": ids::fnv1a64(signatures[0]),
                },
                {
                    "name": "div",
                    "docs": [],
                    "args": [{"name": "a", "ty": "i64"}, {"name": "b", "ty": "i64"}],
                    "output": "Result<i64,MathError>",
                    "status_ok": null,
                    "returns_status": false,
                    "client_stream": null,
                    "server_stream": null,
                    "oneway": false,
                    "priority": 0,
                    "compress": true,
                    "idempotent": false,
                    "id": ids::fnv1a32("Calc.div"),
                    "signature": signatures[1],
                    "fingerprint": ids::fnv1a64(signatures[1]),
                },
                {
                    "name": "log",
                    "docs": [],
                    "args": [{"name": "line", "ty": "String"}],
                    "output": null,
                    "status_ok": null,
                    "returns_status": false,
                    "client_stream": null,
                    "server_stream": null,
                    "oneway": true,
                    "priority": 7,
                    "compress": true,
                    "idempotent": false,
                    "id": ids::fnv1a32("Calc.log"),
                    "signature": signatures[2],
                    "fingerprint": ids::fnv1a64(signatures[2]),
                },
            ],
        })
    );
}

#[test]
fn describe_gives_the_streams_of_each_method() {
    let json = describe(
        quote!(),
        quote! {
            pub trait Files {
                async fn tail(&self, path: String) -> switchyard::Streaming<Line>;
                async fn upload(&self, name: String, chunks: Streaming<Vec<u8>>) -> Result<u64, Status>;
                async fn chat(&self, incoming: Streaming<Msg>) -> Result<Streaming<Msg>, Status>;
            }
        },
    )
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let streams: Vec<_> = value["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|method| {
            (
                method["signature"].clone(),
                method["client_stream"].clone(),
                method["server_stream"].clone(),
            )
        })
        .collect();
    assert_eq!(
        streams,
        [
            (
                serde_json::json!("tail(String) -> Streaming<Line>"),
                serde_json::Value::Null,
                serde_json::json!("Line"),
            ),
            (
                serde_json::json!("upload(String,Streaming<Vec<u8>>) -> Result<u64,Status>"),
                serde_json::json!({"index": 1, "item": "Vec<u8>"}),
                serde_json::Value::Null,
            ),
            (
                serde_json::json!("chat(Streaming<Msg>) -> Result<Streaming<Msg>,Status>"),
                serde_json::json!({"index": 0, "item": "Msg"}),
                serde_json::json!("Msg"),
            ),
        ]
    );
}

#[test]
fn describe_rejects_invalid_services() {
    let err = describe(
        quote!(),
        quote!(
            trait T {
                fn f(&self);
            }
        ),
    )
    .unwrap_err();
    assert!(err.to_string().contains("must be async"), "{err}");
}

#[test]
fn describe_file_lists_every_service() {
    let json = Builder::new().describe_str(ECHO).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|service| service["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Echo", "Inner"]);
}
