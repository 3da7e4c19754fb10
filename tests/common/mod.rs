//! What the tests of real clusters share: running the harness binary while
//! remembering its pid, and finding what those runs left behind.
//!
//! Leftovers are looked for by the pids of this test's own runs only: a run
//! directory is named `reapi-conformance-<kind>-<pid>-<id>`, and every process
//! a cluster starts names its run directory. Another harness running on the
//! machine at the same time (a second test binary, a developer's run) is not
//! this test's leftover.

#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

static RUNS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Runs `cmd` to completion like `Command::output`, remembering its pid.
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    RUNS.lock().unwrap_or_else(|p| p.into_inner()).push(child.id());
    child.wait_with_output()
}

/// Processes still running and run directories still present of this test's
/// finished `kind` runs (`buildgrid`, `buildbarn`, `buildfarm`, …).
pub fn leftovers(kind: &str) -> Vec<String> {
    let prefixes: Vec<String> = RUNS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|pid| format!("reapi-conformance-{kind}-{pid}-"))
        .collect();
    let ours = |text: &str| prefixes.iter().any(|p| text.contains(p.as_str()));
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if ours(&cmd) {
                found.push(cmd);
            }
        }
    }
    for base in [std::env::temp_dir(), PathBuf::from("/tmp")] {
        for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
            if prefixes.iter().any(|p| entry.file_name().to_string_lossy().starts_with(p.as_str())) {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}
