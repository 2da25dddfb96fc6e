//! Tidy: the project's conventions that a program can check, as tests, so that
//! `cargo test --workspace` enforces them (style.md 4, 16, 22).
//!
//! - **Dependency edges.** A workspace crate depends (normal, dev or build) only on the
//!   project crates [`ALLOWED_EDGES`] lists for it: the layers of ARCHITECTURE.md.
//! - **Module docs.** Every `.rs` file under `crates/`, `benches/` and `xtask/` starts
//!   with a `//!` doc saying what it is for (inner attributes such as `#![allow(..)]`
//!   may come first). That includes integration tests, examples and build scripts:
//!   each is a crate root of its own, read by people who need to know what it checks or
//!   shows, and rustdoc's `missing_docs` lint does not look at them.
//! - **No leftovers.** No `dbg!`, `todo!` or `unimplemented!` call in those files
//!   (comment lines are not checked).
//! - **Unsafe code in one place.** The workspace denies `unsafe_code`; only the server
//!   binary's allocator setting may allow it.
//! - **Complete manifests.** Each library crate's `Cargo.toml` has description,
//!   license, repository, readme, keywords and categories, all non-empty, and the
//!   readme file exists.
//!
//! Each failure names the file and line to fix.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{cargo_metadata, project_root, LIBRARY_CRATES};

/// The project crates each workspace crate may depend on, names without the
/// `allsource-` prefix. Adding an edge here means updating ARCHITECTURE.md too.
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("core-types", &[]),
    ("index", &["core-types"]),
    ("projection", &["core-types"]),
    ("storage", &["core-types"]),
    ("core", &["core-types", "index", "projection", "storage"]),
    ("server", &["core", "core-types"]),
    ("benches", &["core", "server"]),
    ("xtask", &[]),
];

/// The folders whose `.rs` files the file checks read, relative to the root.
const CHECKED_FOLDERS: [&str; 3] = ["crates", "benches", "xtask"];

/// The manifest fields every library crate must set.
const LIBRARY_FIELDS: [&str; 6] =
    ["description", "license", "repository", "readme", "keywords", "categories"];

/// The one file that may allow `unsafe_code` (the workspace denies it): the server
/// binary's call to set an allocator option, which has no safe API.
const UNSAFE_ALLOWED_IN: &str = "crates/allsource-server/src/main.rs";

/// An attribute allowing unsafe code, spelled in two halves so that this file does not
/// match itself.
const ALLOW_UNSAFE: &str = concat!("allow(unsafe", "_code)");

/// Calls that must not be left in the code. Spelled in two halves so that this file
/// does not match itself.
const FORBIDDEN_CALLS: [&str; 3] =
    [concat!("dbg", "!("), concat!("todo", "!("), concat!("unimplemented", "!(")];

fn short_name(package: &str) -> &str {
    package.strip_prefix("allsource-").unwrap_or(package)
}

/// Fails with every problem found, one per line.
fn check_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "tidy: {what}:\n  {}\n", problems.join("\n  "));
}

/// The path of `path` relative to the project root, for messages.
fn relative(path: &Path) -> String {
    let root = project_root();
    path.strip_prefix(&root).unwrap_or(path).display().to_string()
}

fn metadata_packages() -> Vec<Value> {
    let metadata = cargo_metadata().expect("cargo metadata runs");
    metadata["packages"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Dependency edges.

#[test]
fn dependency_edges_follow_the_layers() {
    let packages = metadata_packages();
    let members: BTreeSet<String> =
        packages.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect();
    let mut problems = Vec::new();
    for package in &packages {
        problems.extend(edge_problems(package, &members));
    }
    check_no_problems("dependency edges outside the allowlist in xtask/src/tidy.rs", &problems);
}

/// The problems with one package's dependencies on other workspace members.
fn edge_problems(package: &Value, members: &BTreeSet<String>) -> Vec<String> {
    let name = package["name"].as_str().unwrap_or("?");
    let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or("?"));
    let manifest_text = std::fs::read_to_string(&manifest).unwrap_or_default();
    let Some((_, allowed)) = ALLOWED_EDGES.iter().find(|(crate_name, _)| *crate_name == short_name(name))
    else {
        return vec![format!(
            "{}: workspace crate `{name}` is not in ALLOWED_EDGES; add it with the crates it may depend on",
            relative(&manifest)
        )];
    };
    let mut problems = Vec::new();
    for dependency in package["dependencies"].as_array().into_iter().flatten() {
        let Some(dependency_name) = dependency["name"].as_str() else { continue };
        if !members.contains(dependency_name) || allowed.contains(&short_name(dependency_name)) {
            continue;
        }
        let kind = match dependency["kind"].as_str() {
            Some("dev") => "dev-dependency",
            Some("build") => "build-dependency",
            _ => "dependency",
        };
        let line = line_of(&manifest_text, dependency["rename"].as_str().unwrap_or(dependency_name));
        problems.push(format!(
            "{}:{line}: {name} -> {dependency_name} ({kind}) is not an allowed edge; {name} may depend on {}",
            relative(&manifest),
            if allowed.is_empty() { "no project crate".to_string() } else { allowed.join(", ") },
        ));
    }
    problems
}

/// The 1-based number of the first line of a manifest that declares `key` (as
/// `key = ..`, `key.workspace = ..` or `[...dependencies.key]`), or 1.
fn line_of(manifest_text: &str, key: &str) -> usize {
    manifest_text
        .lines()
        .position(|line| {
            let line = line.trim_start();
            let declares = |rest: &str| {
                let rest = rest.trim_start();
                rest.starts_with('=') || rest.starts_with('.') || rest.starts_with(']')
            };
            line.strip_prefix(key).is_some_and(declares) || line.contains(&format!("dependencies.{key}]"))
        })
        .map_or(1, |index| index + 1)
}

// ---------------------------------------------------------------------------------
// Rust files: module docs and leftovers.

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut problems = Vec::new();
    for path in rust_files() {
        let text = std::fs::read_to_string(&path).expect("a Rust file is UTF-8");
        problems.extend(module_doc_problem(&relative(&path), &text));
    }
    check_no_problems("files without a `//!` module doc (style.md 16)", &problems);
}

#[test]
fn no_debugging_or_unfinished_calls() {
    let mut problems = Vec::new();
    for path in rust_files() {
        let text = std::fs::read_to_string(&path).expect("a Rust file is UTF-8");
        problems.extend(leftover_problems(&relative(&path), &text));
    }
    check_no_problems("debugging or unfinished code left in", &problems);
}

#[test]
fn unsafe_code_is_allowed_in_one_file_only() {
    let mut problems = Vec::new();
    for path in rust_files() {
        let path = relative(&path);
        if path == UNSAFE_ALLOWED_IN {
            continue;
        }
        let text = std::fs::read_to_string(project_root().join(&path)).expect("a Rust file is UTF-8");
        for (index, line) in text.lines().enumerate() {
            if line.contains(ALLOW_UNSAFE) {
                problems.push(format!("{path}:{}: unsafe code allowed: {}", index + 1, line.trim()));
            }
        }
    }
    check_no_problems(&format!("unsafe code allowed outside {UNSAFE_ALLOWED_IN}"), &problems);
}

/// Every `.rs` file under [`CHECKED_FOLDERS`], skipping build output and hidden folders.
fn rust_files() -> Vec<PathBuf> {
    let root = project_root();
    let mut files = Vec::new();
    for folder in CHECKED_FOLDERS {
        collect_rust_files(&root.join(folder), &mut files);
    }
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("xtask/src/tidy.rs")), "tidy found no Rust files");
    files
}

fn collect_rust_files(folder: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(folder) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                collect_rust_files(&path, files);
            }
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
}

/// A problem when the first line that is neither blank nor an inner attribute is not
/// a `//!` doc line.
fn module_doc_problem(path: &str, text: &str) -> Option<String> {
    let first = text.lines().enumerate().find(|(_, line)| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with("#![")
    });
    match first {
        Some((_, line)) if line.trim_start().starts_with("//!") => None,
        Some((index, _)) => Some(format!(
            "{path}:{}: starts without a `//!` module doc; begin the file with one saying what it is for",
            index + 1
        )),
        None => Some(format!("{path}:1: is empty; give it a `//!` module doc or delete it")),
    }
}

/// One problem per forbidden call on a line that is not a comment.
fn leftover_problems(path: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for call in FORBIDDEN_CALLS {
            if line.contains(call) {
                problems.push(format!("{path}:{}: `{call}..)` left in: {}", index + 1, line.trim()));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------
// Library manifests.

#[test]
fn library_manifests_are_complete() {
    let packages = metadata_packages();
    let mut problems = Vec::new();
    for name in LIBRARY_CRATES {
        let Some(package) = packages.iter().find(|p| p["name"] == name) else {
            problems.push(format!(
                "Cargo.toml:1: library crate {name} is not in the workspace; update LIBRARY_CRATES in xtask"
            ));
            continue;
        };
        problems.extend(manifest_problems(package));
    }
    check_no_problems("library manifests without the fields crates.io shows", &problems);
}

/// The problems of one library package: each field must be declared in its
/// `[package]` table (cargo would otherwise infer a readme silently) and be non-empty
/// once workspace inheritance is resolved; the readme file must exist.
fn manifest_problems(package: &Value) -> Vec<String> {
    let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or("?"));
    let shown = relative(&manifest);
    let text = std::fs::read_to_string(&manifest).unwrap_or_default();
    let declared = package_table_keys(&text);
    let mut problems = Vec::new();
    for field in LIBRARY_FIELDS {
        let value = &package[field];
        let empty = match value {
            Value::String(s) => s.trim().is_empty(),
            Value::Array(items) => items.is_empty(),
            _ => true,
        };
        match declared.iter().find(|(key, _)| key == field) {
            None => {
                let line = line_of(&text, "[package").max(1);
                problems.push(format!("{shown}:{line}: [package] does not declare `{field}`"));
            }
            Some((_, line)) if empty => problems.push(format!("{shown}:{line}: `{field}` is empty")),
            Some(_) => {}
        }
    }
    if let Some(readme) = package["readme"].as_str() {
        let readme_path = manifest.parent().unwrap_or(Path::new(".")).join(readme);
        if !readme_path.is_file() {
            let line = declared.iter().find(|(k, _)| k == "readme").map_or(1, |(_, l)| *l);
            problems.push(format!("{shown}:{line}: readme {} does not exist", relative(&readme_path)));
        }
    }
    problems
}

/// The keys of the `[package]` table, each with its 1-based line: `key = ..` and
/// `key.workspace = true` alike.
fn package_table_keys(manifest_text: &str) -> Vec<(String, usize)> {
    let mut keys = Vec::new();
    let mut in_package = false;
    for (index, line) in manifest_text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package || line.starts_with('#') {
            continue;
        }
        let key: String =
            line.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        if !key.is_empty() {
            keys.push((key, index + 1));
        }
    }
    keys
}

// ---------------------------------------------------------------------------------
// The checkers themselves, on small inputs.

#[test]
fn checkers_find_what_they_should() {
    assert_eq!(module_doc_problem("a.rs", "//! Doc.\nfn f() {}\n"), None);
    assert_eq!(module_doc_problem("a.rs", "\n#![allow(x)]\n//! Doc.\n"), None);
    assert_eq!(
        module_doc_problem("a.rs", "\nuse std::io;\n").as_deref(),
        Some("a.rs:2: starts without a `//!` module doc; begin the file with one saying what it is for")
    );
    assert!(module_doc_problem("a.rs", "/// Item doc.\nfn f() {}\n").is_some());

    let dbg_call = FORBIDDEN_CALLS[0];
    let code = format!("//! Doc.\n// {dbg_call}x) in a comment is fine\nfn f() {{ {dbg_call}1); }}\n");
    let problems = leftover_problems("b.rs", &code);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("b.rs:3: "), "{problems:?}");

    let manifest = "[package]\nname = \"x\"\nreadme = \"README.md\"\nlicense.workspace = true\n\n[dependencies]\nkeywords = 1\n";
    let keys = package_table_keys(manifest);
    let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(names, ["name", "readme", "license"]);
    assert_eq!(
        line_of("[package]\n\n[dependencies]\nallsource-index.workspace = true\n", "allsource-index"),
        4
    );
    assert_eq!(line_of("[dev-dependencies.allsource-core]\npath = \"x\"\n", "allsource-core"), 1);

    let members: BTreeSet<String> = ["allsource-index", "allsource-storage"].map(String::from).into();
    let package = serde_json::json!({
        "name": "allsource-index",
        "manifest_path": "/nonexistent/Cargo.toml",
        "dependencies": [
            {"name": "allsource-storage", "kind": "dev", "rename": null},
            {"name": "dashmap", "kind": null, "rename": null}
        ]
    });
    let problems = edge_problems(&package, &members);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("allsource-index -> allsource-storage (dev-dependency)"), "{problems:?}");
}
