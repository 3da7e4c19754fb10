//! The binary as a user runs it: against the local cluster (buildbox-casd +
//! bubblewrap), an unreachable endpoint, and broken suite files.

use std::process::Command;
use std::time::{Duration, Instant};

use quick_xml::events::Event;
use reapi_conformance::verdict::VerdictKind;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
}

fn fixture(path: &str) -> String {
    format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// (testcase name, child element kinds) of a JUnit document.
fn junit_cases(xml: &str) -> Vec<(String, Vec<String>)> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut cases = Vec::new();
    loop {
        match reader.read_event().expect("JUnit parses as XML") {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                let name = e
                    .attributes()
                    .filter_map(Result::ok)
                    .find(|a| a.key.as_ref() == b"name")
                    .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                    .expect("testcase has a name");
                cases.push((name, Vec::new()));
            }
            Event::Start(e) | Event::Empty(e) => {
                let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if let Some(last) = cases.last_mut() {
                    if ["failure", "error", "skipped"].contains(&tag.as_str()) {
                        last.1.push(tag);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    cases
}

#[test]
fn local_cluster_verdicts_reports_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("report.xml");
    let json = dir.path().join("report.json");
    let out = bin()
        .args(["run", "--cluster", "local", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // buildbox-casd fails one MUST check (missing inputs), so the run exits 1.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("checks:"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["format_version"], 1);
    let verdict = |id: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["verdict"]["kind"].as_str().unwrap().parse::<VerdictKind>().unwrap())
            .unwrap_or_else(|| panic!("{id} missing from the JSON report"))
    };
    for id in [
        "input-root.root-entries",
        "input-root.marker-file",
        "input-root.path-lookup",
        "input-root.working-directory",
        "platform.native",
        "platform.foreign-isa",
    ] {
        assert_eq!(verdict(id), VerdictKind::Pass, "{id}\n{stdout}");
    }
    assert_eq!(verdict("platform.unknown-property"), VerdictKind::Warn, "{stdout}");
    assert_eq!(verdict("protocol.missing-input-code"), VerdictKind::Fail, "{stdout}");
    // Evidence travels with non-PASS verdicts.
    let warn = report["results"].as_array().unwrap().iter().find(|r| r["id"] == "platform.unknown-property").unwrap();
    assert!(!warn["verdict"]["evidence"].as_array().unwrap().is_empty());

    let cases = junit_cases(&std::fs::read_to_string(&junit).unwrap());
    assert_eq!(cases.len(), report["results"].as_array().unwrap().len());
    let failing: Vec<&String> = cases.iter().filter(|(_, kinds)| !kinds.is_empty()).map(|(n, _)| n).collect();
    assert_eq!(failing, ["protocol.missing-input-code"], "{cases:?}");
    assert!(cases.iter().any(|(name, _)| name == "platform.foreign-isa"));
}

#[test]
fn expectation_file_gates_on_deviation() {
    let out = bin().args(["run", "--expect", &fixture("expectations/local.yaml")]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("all verdicts as expected"), "{stdout}");

    // An expectation that is wrong on purpose makes the run deviate.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(&wrong, "target: local\nexpectations: {}\n").unwrap();
    let out = bin().args(["run", "--expect"]).arg(&wrong).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("regressions against expectations"), "{stdout}");
    assert!(stdout.contains("platform.unknown-property expected PASS, got WARN"), "{stdout}");
}

#[test]
fn unreachable_endpoint_is_error_for_every_check_quickly() {
    // Port 1 on loopback: nothing listens there.
    let start = Instant::now();
    let out = bin().args(["run", "--endpoint", "http://127.0.0.1:1"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains('.') && !l.contains("checks:")).collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l.starts_with("ERROR")), "{stdout}");
    assert!(stdout.contains("does not answer GetCapabilities"), "{stdout}");
}

#[test]
fn malformed_suite_names_file_and_line() {
    let out = bin().args(["list", "--suites-dir", &fixture("suites-bad")]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("broken.yaml:14"), "{stderr}");
    assert!(stderr.contains("unknown field `expcet`"), "{stderr}");
}

#[test]
fn bad_endpoint_url_is_a_clear_error() {
    let out = bin().args(["run", "--endpoint", "localhost:8980"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("invalid endpoint `localhost:8980`"), "{text}");
}
