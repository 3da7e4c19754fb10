//! Build steps that need no system tools beyond the Rust toolchain:
//! 1. the probe, a static executable that runs inside actions (no loader, no
//!    libc in the input root), compiled with the same rustc as this crate;
//! 2. the suite files, bundled so the binary works from any directory.
//!
//! The Remote Workers API protos are compiled by the `reapi-worker` crate.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    build_probe(&out);
    bundle_suites(&out);
}

fn build_probe(out: &Path) {
    println!("cargo:rerun-if-changed=probe/main.rs");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let dest = out.join("reapi-probe");
    let status = Command::new(&rustc)
        .args(["--edition=2021", "--crate-type=bin", "--crate-name=reapi_probe", "--target", &target])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "codegen-units=1", "-C", "strip=symbols"])
        .args(["-C", "target-feature=+crt-static"])
        .arg("probe/main.rs")
        .arg("-o")
        .arg(&dest)
        // Flags meant for this crate (e.g. coverage) must not leak into the probe.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc} to build the probe: {e}"));
    if !status.success() {
        panic!(
            "building the static probe failed; a static C library is needed \
             (on Debian: apt-get install libc6-dev)"
        );
    }
}

fn bundle_suites(out: &Path) {
    println!("cargo:rerun-if-changed=suites");
    let mut names: Vec<String> = fs::read_dir("suites")
        .expect("suites/ directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    let mut code = String::from("&[\n");
    for n in &names {
        println!("cargo:rerun-if-changed=suites/{n}");
        let abs = fs::canonicalize(Path::new("suites").join(n)).expect("suite path");
        code.push_str(&format!("    ({n:?}, include_str!({:?})),\n", abs.display().to_string()));
    }
    code.push(']');
    fs::write(out.join("bundled_suites.rs"), code).expect("write bundled_suites.rs");
}
