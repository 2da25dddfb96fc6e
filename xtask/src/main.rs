//! `cargo xtask`: the project's workflows, one command each (style.md 22).
//!
//! ```text
//! cargo xtask ci                 lint, then cargo test --workspace (what .ci/run runs)
//! cargo xtask lint               cargo fmt --check, cargo clippy -D warnings, cargo doc -D warnings
//! cargo xtask bench [-- ARGS..]  the criterion suites, then the durable bench, then the tables
//! cargo xtask bench durable [..] only the durable bench (e.g. `--quick`, a filter), then the tables
//! cargo xtask bench --report     only the tables, from the results already in target/
//! cargo xtask load [OPTIONS]     HTTP load against the release binary on loopback (`--help`)
//! cargo xtask release            the release binary, and a packaging dry run of the libraries
//! ```
//!
//! xtask depends on no project crate: it drives cargo and reads what cargo and
//! criterion write. The tidy test (`tidy.rs`) runs with `cargo test --workspace`.

mod bench;
mod load;
mod text;

#[cfg(test)]
mod tidy;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                  cargo xtask lint, then cargo test --workspace
  lint                cargo fmt --all -- --check; cargo clippy --workspace --all-targets -- -D warnings;
                      cargo doc --workspace --no-deps (rustdoc -D warnings)
  bench [-- ARGS..]   the criterion suites of allsource-benches, then its durable bench (each given
                      ARGS, e.g. `-- queries` to run only the queries), then print results against
                      the targets; ARGS before `--` (e.g. `--bench queries`) go to one
                      `cargo bench -p allsource-benches` as they are
  bench durable [ARGS..]
                      only the durable bench (`--quick` for short windows, a filter such as
                      `disk` or `64_writers`), then print results against the targets
  bench --report      print the tables from the results already under target/criterion and
                      target/durable-bench/results.json
  load [OPTIONS]      start the release binary on a loopback port and measure it over HTTP
                      (appends, batches, queries, state, snapshots, subscriptions) against the
                      targets; `--baseline` adds a trivial axum handler for comparison;
                      `cargo xtask load --help` lists the options
  release             cargo build --release -p allsource-server; package the library crates (dry run)
";

/// The library crates, published to crates.io; everything else is `publish = false`.
pub const LIBRARY_CRATES: [&str; 5] = [
    "allsource-core-types",
    "allsource-index",
    "allsource-projection",
    "allsource-storage",
    "allsource-core",
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    match command.as_deref() {
        Some("ci") => {
            no_arguments(&rest)?;
            lint()?;
            run_cargo(["test", "--workspace"])
        }
        Some("lint") => {
            no_arguments(&rest)?;
            lint()
        }
        Some("bench") => bench::run(&rest),
        Some("load") => load::run(&rest),
        // Not in the usage: `cargo xtask load --baseline` starts it as a process of its own.
        Some(load::baseline::SUBCOMMAND) => load::baseline::serve(&rest),
        Some("release") => {
            no_arguments(&rest)?;
            release()
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
        None => bail!("no command given\n\n{USAGE}"),
    }
}

fn no_arguments(rest: &[String]) -> Result<()> {
    if !rest.is_empty() {
        bail!("unexpected arguments {rest:?}\n\n{USAGE}");
    }
    Ok(())
}

fn lint() -> Result<()> {
    run_cargo(["fmt", "--all", "--", "--check"])?;
    run_cargo(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    // The API docs: a broken or private intra-doc link fails, as it would show on docs.rs.
    run_cargo(["doc", "--workspace", "--no-deps", "--config", r#"build.rustdocflags=["-D", "warnings"]"#])
}

fn release() -> Result<()> {
    run_cargo(["build", "--release", "-p", "allsource-server"])?;
    let metadata = cargo_metadata()?;
    let target_dir = target_directory(&metadata)?;
    let binaries = binary_names(&metadata, "allsource-server");
    if binaries.is_empty() {
        bail!("allsource-server has no binary target");
    }
    for name in binaries {
        let path = target_dir.join("release").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let size_bytes = std::fs::metadata(&path)
            .with_context(|| format!("the release binary {} is missing", path.display()))?
            .len();
        println!("release binary: {} ({})", path.display(), human_bytes(size_bytes));
    }

    // The packaging dry run. Each library crate depends on the ones below it by path
    // *and* version, and none is on crates.io yet, so `cargo package -p <one>` alone
    // cannot resolve its dependencies. Naming them all in one `cargo package` call
    // packages them in dependency order, resolving each against a temporary local
    // registry that holds the ones packaged before it (cargo >= 1.90): what
    // `cargo publish --workspace` would upload, checked without uploading.
    // `--no-verify` skips compiling each tarball on its own (the workspace build has
    // compiled the same sources); `--allow-dirty` lets it run on a work tree with
    // uncommitted changes.
    let mut package = vec!["package", "--no-verify", "--allow-dirty"];
    for name in LIBRARY_CRATES {
        package.extend(["-p", name]);
    }
    run_cargo(package)?;
    for name in LIBRARY_CRATES {
        let version = package_version(&metadata, name)?;
        let path = target_dir.join("package").join(format!("{name}-{version}.crate"));
        let size_bytes = std::fs::metadata(&path)
            .with_context(|| format!("cargo package did not write {}", path.display()))?
            .len();
        println!("package: {} ({})", path.display(), human_bytes(size_bytes));
    }
    Ok(())
}

/// The workspace root: xtask lives one folder below it.
pub fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The cargo that runs us (`CARGO` is set by `cargo run` and `cargo test`), else the
/// one on the `PATH`.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(project_root());
    command
}

/// Runs `cargo ARGS` in the workspace root, echoing it first; an error names it.
pub fn run_cargo<I, S>(args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = cargo();
    command.args(args);
    let shown = shown(&command);
    eprintln!("$ {shown}");
    let status = command.status().with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

fn shown(command: &Command) -> String {
    let mut words = vec!["cargo".to_string()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// `cargo metadata --format-version 1 --no-deps`, parsed.
pub fn cargo_metadata() -> Result<Value> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("could not run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("cargo metadata printed something that is not JSON")
}

/// Where cargo builds: the metadata's `target_directory`.
pub fn target_directory(metadata: &Value) -> Result<PathBuf> {
    metadata["target_directory"].as_str().map(PathBuf::from).context("cargo metadata has no target_directory")
}

fn package<'a>(metadata: &'a Value, name: &str) -> Option<&'a Value> {
    metadata["packages"].as_array()?.iter().find(|p| p["name"] == name)
}

fn package_version(metadata: &Value, name: &str) -> Result<String> {
    package(metadata, name)
        .and_then(|p| p["version"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no package {name} in the workspace"))
}

fn binary_names(metadata: &Value, package_name: &str) -> Vec<String> {
    let Some(targets) = package(metadata, package_name).and_then(|p| p["targets"].as_array()) else {
        return Vec::new();
    };
    targets
        .iter()
        .filter(|t| t["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "bin")))
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

fn human_bytes(n_bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n_bytes as f64 >= MIB {
        format!("{:.1} MiB", n_bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", n_bytes as f64 / 1024.0)
    }
}
