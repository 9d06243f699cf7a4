//! Golden-file tests: each `tests/fixtures/<case>/input.rs` expands to
//! `expected.rs`. Run with `UPDATE_EXPECT=1` to rewrite the expected files.

use std::fs;
use std::path::Path;

use switchyard_codegen::Builder;

#[test]
fn fixtures_expand_to_their_expected_output() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut cases: Vec<_> = fs::read_dir(&fixtures)
        .expect("tests/fixtures exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.join("input.rs").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 3,
        "expected at least three fixtures in {}",
        fixtures.display()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let input = fs::read_to_string(case.join("input.rs")).expect("readable input.rs");
        let actual = Builder::new()
            .emit_rerun_if_changed(false)
            .expand_str(&input)
            .unwrap_or_else(|err| panic!("{}: {err}", case.display()));
        let expected_path = case.join("expected.rs");
        if update {
            fs::write(&expected_path, &actual).expect("writable expected.rs");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{} differs from the expansion (rerun with UPDATE_EXPECT=1 to accept):\n{}",
                expected_path.display(),
                first_difference(&expected, &actual)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn first_difference(expected: &str, actual: &str) -> String {
    let mut expected_lines = expected.lines();
    let mut actual_lines = actual.lines();
    for line in 1.. {
        match (expected_lines.next(), actual_lines.next()) {
            (None, None) => break,
            (e, a) if e == a => {}
            (e, a) => {
                return format!(
                    "line {line}:\n  expected: {}\n  actual:   {}",
                    e.unwrap_or("<end of file>"),
                    a.unwrap_or("<end of file>")
                );
            }
        }
    }
    "(identical lines; trailing newline differs)".to_owned()
}
