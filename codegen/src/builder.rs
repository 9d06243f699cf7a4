//! [`Builder`]: the service expansion for build scripts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs, io};

use quote::ToTokens;

use crate::model::Service;

/// Expands the service traits of Rust source files into `OUT_DIR`, for
/// `build.rs`.
///
/// Each file `dir/name.rs` becomes `<OUT_DIR>/name.rs`: every trait carrying
/// `#[switchyard::service]` (or `#[service]`) is expanded exactly as the
/// attribute macro would, other items are copied through, and the whole is
/// formatted with `prettyplease`. Include it with
/// `include!(concat!(env!("OUT_DIR"), "/name.rs"));`.
///
/// ```no_run
/// // build.rs
/// switchyard_codegen::Builder::new()
///     .file("src/services/echo.rs")
///     .build()
///     .expect("switchyard codegen");
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    files: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    crate_path: String,
    all_traits: bool,
    rerun_if_changed: bool,
}

/// Why [`Builder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file is not valid Rust.
    #[error("{}:{line}:{column}: cannot parse: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser reported.
        message: String,
    },
    /// Service traits in a file are invalid.
    #[error("{}", format_diagnostics(path, diagnostics))]
    Validation {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        diagnostics: Vec<Diagnostic>,
    },
    /// The crate path given to [`Builder::crate_path`] is not a path.
    #[error("crate path {0:?} is not a Rust path like `::switchyard`")]
    CratePath(String),
    /// Neither [`Builder::out_dir`] nor the `OUT_DIR` variable says where to write.
    #[error("OUT_DIR is not set: call `Builder::out_dir` or run from a build script")]
    NoOutDir,
    /// Two input files have the same name, so their outputs would collide.
    #[error("{} and {} would both be written to {}.rs: rename one", first.display(), second.display(), stem)]
    DuplicateOutput {
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
        /// Their common file stem.
        stem: String,
    },
}

/// One problem in a service trait, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what to do about it.
    pub message: String,
}

fn format_diagnostics(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, diagnostic) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let Diagnostic {
            line,
            column,
            message,
        } = diagnostic;
        let _ = write!(out, "{}:{line}:{column}: {message}", path.display());
    }
    out
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with no files, writing to `OUT_DIR`, with crate path `::switchyard`.
    pub fn new() -> Self {
        Self {
            files: Vec::new(),
            out_dir: None,
            crate_path: crate::DEFAULT_CRATE_PATH.to_owned(),
            all_traits: false,
            rerun_if_changed: true,
        }
    }

    /// Adds a source file to expand.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Where to write the output; defaults to the `OUT_DIR` environment variable.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The path to the switchyard crate in generated code, `::switchyard` by
    /// default. A `crate = "..."` option on a trait takes precedence.
    pub fn crate_path(mut self, path: impl Into<String>) -> Self {
        self.crate_path = path.into();
        self
    }

    /// Whether to treat every trait in the files as a service, attribute or not.
    pub fn all_traits(mut self, all: bool) -> Self {
        self.all_traits = all;
        self
    }

    /// Whether [`build`](Self::build) prints `cargo:rerun-if-changed` for each
    /// file (the default).
    pub fn emit_rerun_if_changed(mut self, emit: bool) -> Self {
        self.rerun_if_changed = emit;
        self
    }

    /// Expands every file and writes `<out_dir>/<file_stem>.rs`.
    pub fn build(&self) -> Result<(), BuildError> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(BuildError::NoOutDir)?,
        };
        let mut stems: Vec<(String, &Path)> = Vec::new();
        for path in &self.files {
            if self.rerun_if_changed {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some((_, first)) = stems.iter().find(|(seen, _)| *seen == stem) {
                return Err(BuildError::DuplicateOutput {
                    first: first.to_path_buf(),
                    second: path.clone(),
                    stem,
                });
            }
            let source = read(path)?;
            let expanded = self.expand(&source, path)?;
            let out = out_dir.join(format!("{stem}.rs"));
            fs::write(&out, expanded).map_err(|source| BuildError::Io { path: out, source })?;
            stems.push((stem, path));
        }
        Ok(())
    }

    /// Expands Rust source text as [`build`](Self::build) would expand a file,
    /// returning the formatted output.
    pub fn expand_str(&self, source: &str) -> Result<String, BuildError> {
        self.expand(source, Path::new("<string>"))
    }

    /// The services of a source file as a pretty-printed JSON array of their
    /// [models](crate::model::Service).
    pub fn describe_file(&self, path: impl AsRef<Path>) -> Result<String, BuildError> {
        let path = path.as_ref();
        self.describe_str_at(&read(path)?, path)
    }

    /// [`describe_file`](Self::describe_file) for source text.
    pub fn describe_str(&self, source: &str) -> Result<String, BuildError> {
        self.describe_str_at(source, Path::new("<string>"))
    }

    fn describe_str_at(&self, source: &str, path: &Path) -> Result<String, BuildError> {
        let mut file = parse_file(source, path)?;
        let services = self.transform(&mut file.items, path)?;
        Ok(serde_json::to_string_pretty(&services).expect("the model serializes to JSON"))
    }

    fn expand(&self, source: &str, path: &Path) -> Result<String, BuildError> {
        let mut file = parse_file(source, path)?;
        self.transform(&mut file.items, path)?;
        // Inner attributes and `//!` docs cannot appear in an `include!`d file.
        file.attrs.clear();
        file.shebang = None;
        Ok(prettyplease::unparse(&file))
    }

    /// Replaces every service trait in `items` (recursively through inline
    /// modules) by its expansion; returns the services' models.
    fn transform(
        &self,
        items: &mut Vec<syn::Item>,
        path: &Path,
    ) -> Result<Vec<Service>, BuildError> {
        let crate_path: syn::Path = syn::parse_str(&self.crate_path)
            .map_err(|_| BuildError::CratePath(self.crate_path.clone()))?;
        let mut services = Vec::new();
        let mut diagnostics = Vec::new();
        self.transform_items(items, &crate_path, &mut services, &mut diagnostics);
        if diagnostics.is_empty() {
            Ok(services)
        } else {
            Err(BuildError::Validation {
                path: path.to_path_buf(),
                diagnostics,
            })
        }
    }

    fn transform_items(
        &self,
        items: &mut Vec<syn::Item>,
        crate_path: &syn::Path,
        services: &mut Vec<Service>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let mut out = Vec::with_capacity(items.len());
        for mut item in items.drain(..) {
            match &mut item {
                syn::Item::Trait(item_trait) => {
                    let attr_index = item_trait
                        .attrs
                        .iter()
                        .position(|a| is_service_attr(a, crate_path));
                    let args = match attr_index {
                        Some(index) => match item_trait.attrs.remove(index).meta {
                            syn::Meta::List(list) => list.tokens,
                            _ => proc_macro2::TokenStream::new(),
                        },
                        None if self.all_traits => proc_macro2::TokenStream::new(),
                        None => {
                            out.push(item);
                            continue;
                        }
                    };
                    match crate::service(args, item_trait.to_token_stream(), crate_path) {
                        Ok(service) => {
                            let file: syn::File = syn::parse2(crate::emit::emit(&service))
                                .expect("the expansion of a valid service parses as items");
                            out.extend(file.items);
                            services.push(service);
                        }
                        Err((_, error)) => diagnostics.extend(error.into_iter().map(|error| {
                            let start = error.span().start();
                            Diagnostic {
                                line: start.line,
                                column: start.column + 1,
                                message: error.to_string(),
                            }
                        })),
                    }
                    continue;
                }
                syn::Item::Mod(module) => {
                    if let Some((_, content)) = &mut module.content {
                        self.transform_items(content, crate_path, services, diagnostics);
                    }
                }
                _ => {}
            }
            out.push(item);
        }
        *items = out;
    }
}

/// `#[service]`, `#[switchyard::service]`, `#[::switchyard::service]` or
/// `#[<crate path>::service]`.
fn is_service_attr(attr: &syn::Attribute, crate_path: &syn::Path) -> bool {
    let segments: Vec<String> = attr
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let crate_last = crate_path.segments.last().map(|s| s.ident.to_string());
    match segments.as_slice() {
        [last] => last == "service",
        [first, last] => {
            last == "service" && (first == "switchyard" || Some(first) == crate_last.as_ref())
        }
        _ => false,
    }
}

fn read(path: &Path) -> Result<String, BuildError> {
    fs::read_to_string(path).map_err(|source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_file(source: &str, path: &Path) -> Result<syn::File, BuildError> {
    syn::parse_file(source).map_err(|error| {
        let start = error.span().start();
        BuildError::Parse {
            path: path.to_path_buf(),
            line: start.line,
            column: start.column + 1,
            message: error.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_service_attributes() {
        let krate: syn::Path = syn::parse_quote!(::renamed);
        let attrs: Vec<syn::Attribute> = vec![
            syn::parse_quote!(#[service]),
            syn::parse_quote!(#[switchyard::service(name = "x")]),
            syn::parse_quote!(#[::switchyard::service]),
            syn::parse_quote!(#[renamed::service]),
            syn::parse_quote!(#[other::service]),
            syn::parse_quote!(#[derive(Debug)]),
        ];
        let found: Vec<bool> = attrs.iter().map(|a| is_service_attr(a, &krate)).collect();
        assert_eq!(found, [true, true, true, true, false, false]);
    }

    #[test]
    fn reports_every_problem_with_its_location() {
        let source =
            "#[switchyard::service]\ntrait T {\n    fn f(&self);\n    async fn g(&mut self);\n}\n";
        let err = Builder::new().expand_str(source).unwrap_err();
        let BuildError::Validation { diagnostics, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(diagnostics.len(), 2, "{err}");
        assert_eq!((diagnostics[0].line, diagnostics[0].column), (3, 5));
        assert_eq!((diagnostics[1].line, diagnostics[1].column), (4, 16));
        assert!(
            err.to_string()
                .starts_with("<string>:3:5: service methods must be async"),
            "{err}"
        );
    }

    #[test]
    fn reports_parse_errors_with_their_location() {
        let err = Builder::new().expand_str("fn f( {}").unwrap_err();
        assert!(matches!(err, BuildError::Parse { line: 1, .. }), "{err}");
    }

    #[test]
    fn leaves_plain_traits_alone_unless_asked() {
        let source = "trait T { async fn f(&self); }";
        let plain = Builder::new().expand_str(source).unwrap();
        assert!(!plain.contains("TClient"), "{plain}");
        let all = Builder::new().all_traits(true).expand_str(source).unwrap();
        assert!(
            all.contains("pub struct TClient") || all.contains("struct TClient"),
            "{all}"
        );
    }
}
