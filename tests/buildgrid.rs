//! BuildGrid as a real server (`--cluster buildgrid[:host]`): PostgreSQL,
//! BuildGrid and the harness's Bots-API worker, for every BuildGrid release
//! this machine can provision (0.9.1 needs a Python >= 3.13; 0.4.4 runs on
//! 3.11), each against its own expectation files. Needs Debian's
//! `postgresql` and `bubblewrap`; BuildGrid itself is provisioned into the
//! harness cache on first use (see docs/buildgrid.md).

use std::process::Command;

mod common;

fn fixture(path: &str) -> String {
    format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// Releases and the prefix of their expectation files.
const VERSIONS: &[(&str, &str)] = &[("0.9.1", "buildgrid"), ("0.4.4", "buildgrid-v0.4")];

fn run_against(cluster: &str, version: &str, expectations: &str, json: &std::path::Path) -> (i32, String) {
    let out = common::output(
        Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
            .args(["run", "--cluster", cluster, "--buildgrid-version", version, "--profile", "all"])
            .args(["--expect", &fixture(expectations), "--json"])
            .arg(json),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn buildgrid_with_buildbox_run_and_on_the_host_get_their_expected_verdicts() {
    let mut ran = Vec::new();
    for (version, prefix) in VERSIONS {
        let dir = tempfile::tempdir().unwrap();

        let json = dir.path().join("bwrap.json");
        let (code, text) = run_against("buildgrid", version, &format!("expectations/{prefix}-bwrap.yaml"), &json);
        if *version != "0.4.4" && text.contains("needs Python >=") {
            eprintln!("BuildGrid {version} not tested: this machine cannot provision it:\n{text}");
            continue;
        }
        assert_eq!(code, 0, "BuildGrid {version}: {text}");
        assert!(text.contains("all verdicts as expected"), "{text}");
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        // The report names the release that ran, and so does the recognised server.
        assert!(report["target"].as_str().unwrap().contains(&format!("BuildGrid {version} ")), "{}", report["target"]);
        assert!(report["server"].as_str().unwrap().contains(&format!("BuildGrid {version}:")), "{}", report["server"]);
        let scheduler_passes = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["suite"] == "scheduler" && r["verdict"]["kind"] == "PASS")
            .count();
        assert_eq!(scheduler_passes, 2, "the scheduler suite runs against BuildGrid's Bots API: {text}");

        let json = dir.path().join("host.json");
        let (code, text) = run_against("buildgrid:host", version, &format!("expectations/{prefix}-host.yaml"), &json);
        assert_eq!(code, 0, "BuildGrid {version}: {text}");
        // The evidence shows the worker host's filesystem, not the input root.
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let root = report["results"].as_array().unwrap().iter().find(|r| r["id"] == "input-root.root-entries").unwrap();
        assert_eq!(root["verdict"]["kind"], "FAIL");
        let observed = root["verdict"]["evidence"][0]["observed"].as_str().unwrap();
        assert!(observed.contains("\"bin\"") || observed.contains("\"home\""), "{observed}");
        ran.push(*version);
    }
    eprintln!("BuildGrid releases tested: {ran:?}");
    assert!(ran.contains(&"0.4.4"), "0.4.4 runs wherever python3 does");

    let left = common::leftovers("buildgrid");
    assert!(left.is_empty(), "left behind: {left:?}");
}
