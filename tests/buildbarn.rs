//! Buildbarn as a real server (`--cluster buildbarn[:chroot|:plain]`): the
//! user's own bb_storage, bb_scheduler, bb_worker and bb_runner, found in
//! REAPI_BUILDBARN_DIR or on PATH. The project never builds or ships them
//! (docs/buildbarn.md), so where they are missing these tests report
//! themselves ignored with the reason, and `cargo test` stays green.

use std::path::PathBuf;
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

mod common;

const PROGRAMS: [&str; 4] = ["bb_storage", "bb_scheduler", "bb_worker", "bb_runner"];

/// Where the programs are, or why they are not there.
fn programs() -> Result<(), String> {
    if let Some(dir) = std::env::var_os("REAPI_BUILDBARN_DIR") {
        let dir = PathBuf::from(dir);
        let missing: Vec<&str> = PROGRAMS.iter().copied().filter(|p| !dir.join(p).is_file()).collect();
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("REAPI_BUILDBARN_DIR={} lacks {}", dir.display(), missing.join(", ")))
        };
    }
    let missing: Vec<&str> = PROGRAMS.iter().copied().filter(|p| which::which(p).is_err()).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{} not on PATH and REAPI_BUILDBARN_DIR not set", missing.join(", ")))
    }
}

fn fixture(path: &str) -> String {
    format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn run_against(cluster: &str, expectations: &str, json: &std::path::Path) -> Result<String, Failed> {
    let out = common::output(
        Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
            .args(["run", "--cluster", cluster, "--profile", "all", "--expect", &fixture(expectations), "--json"])
            .arg(json),
    )
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(0) || !text.contains("all verdicts as expected") {
        return Err(format!("{cluster}: exit {:?}\n{text}", out.status.code()).into());
    }
    Ok(text)
}

fn chroot_and_plain() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    let json = dir.path().join("chroot.json");
    let text = run_against("buildbarn", "expectations/buildbarn-chroot.yaml", &json)?;
    if !text.contains("server recognised: buildbarn") {
        return Err(format!("Buildbarn not recognised:\n{text}").into());
    }

    let json = dir.path().join("plain.json");
    run_against("buildbarn:plain", "expectations/buildbarn-plain.yaml", &json)?;
    // The evidence shows the worker host's filesystem, not the input root.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let results = report["results"].as_array().ok_or("no results in the JSON report")?;
    let root = results.iter().find(|r| r["id"] == "input-root.root-entries").ok_or("no input-root.root-entries")?;
    let observed = root["verdict"]["evidence"][0]["observed"].as_str().unwrap_or_default();
    if root["verdict"]["kind"] != "FAIL" || !(observed.contains("\"bin\"") || observed.contains("\"home\"")) {
        return Err(format!("input-root.root-entries on :plain does not show the worker's /: {root}").into());
    }

    let left = common::leftovers("buildbarn");
    if !left.is_empty() {
        return Err(format!("left behind: {left:?}").into());
    }
    Ok(())
}

fn missing_programs_are_one_line_and_exit_2() -> Result<(), Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--cluster", "buildbarn:plain", "--buildbarn-dir", "/nonexistent/reapi-conformance"])
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || err.trim().lines().count() != 1 || !err.contains("bb_storage") {
        return Err(
            format!("expected exit 2 and one line naming bb_storage, got {:?}: {err}", out.status.code()).into()
        );
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let found = programs();
    if let Err(why) = &found {
        eprintln!("Buildbarn tests need Buildbarn's programs: {why} (docs/buildbarn.md says how to get them)");
    }
    let trials = vec![
        Trial::test("buildbarn_chroot_and_plain_get_their_expected_verdicts", move || {
            // The binary under test finds them as this test did: REAPI_BUILDBARN_DIR or PATH.
            found.clone().map_err(|why| Failed::from(format!("ignored: {why}")))?;
            chroot_and_plain()
        })
        .with_ignored_flag(programs().is_err()),
        Trial::test("missing_programs_are_one_line_and_exit_2", missing_programs_are_one_line_and_exit_2),
    ];
    libtest_mimic::run(&args, trials).exit();
}
