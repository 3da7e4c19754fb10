//! The harness never hangs, panics or lies: faults of the server are ERROR
//! (never PASS or FAIL), TLS, mutual TLS and bearer tokens work, the token
//! never shows, and an interrupted run cancels what it started.

use std::process::Command;
use std::time::{Duration, Instant};

use defect_server::{Defect, DefectServer, ServerOptions};
use reapi_conformance::action::Vars;
use reapi_conformance::cluster::endpoint::Endpoint;
use reapi_conformance::connection::ConnectOptions;
use reapi_conformance::runner::RunOptions;
use reapi_conformance::session::{execute, select_checks, Profile, RunEnd, Selection};
use reapi_conformance::verdict::{RunSummary, VerdictKind};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn quick_options() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(3),
        queue_wait: Duration::from_secs(1),
        rpc_timeout: Duration::from_secs(1),
        jobs: 8,
        buildbox_dir: None,
        idle_stream: None,
    }
}

/// Runs the checks whose id contains `filter` against `server` in-process.
async fn run(server: &DefectServer, filter: &str, options: RunOptions) -> RunSummary {
    let select = Selection { profile: Profile::All, filters: vec![filter.into()], ..Default::default() };
    let (_, checks) = select_checks(&select).unwrap();
    assert!(!checks.is_empty(), "no check matches {filter}");
    let mut cluster = Endpoint { options: ConnectOptions::endpoint(server.endpoint()) };
    match execute(&mut cluster, &checks, options, Vars::for_host(), |_| {}, std::future::pending::<i32>())
        .await
        .expect("run")
    {
        RunEnd::Finished(summary) => summary,
        RunEnd::Interrupted(signal) => panic!("interrupted by signal {signal}"),
    }
}

fn kinds(summary: &RunSummary) -> Vec<(String, VerdictKind, String)> {
    summary.results.iter().map(|r| (r.id.clone(), r.verdict.kind, r.verdict.reason.clone())).collect()
}

#[test]
fn hanging_server_is_error_for_every_check_within_the_budget() {
    let rt = runtime();
    rt.block_on(async {
        let server = DefectServer::start(&[Defect::Hang]).await.unwrap();
        let start = Instant::now();
        let summary = run(&server, "", quick_options()).await;
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
        assert!(summary.results.iter().all(|r| r.verdict.kind == VerdictKind::Error), "{:?}", kinds(&summary));
        assert_eq!(summary.exit_code(), 2);
        server.stop().await;
    });
}

#[test]
fn refusals_prove_nothing_on_a_cluster_that_runs_nothing() {
    let rt = runtime();
    rt.block_on(async {
        // Every Execute refused: a negative check alone would PASS ("rejected").
        let server = DefectServer::start(&[Defect::ExecutesNothing]).await.unwrap();
        let summary = run(&server, "platform.", quick_options()).await;
        let (_, checks) = select_checks(&Selection {
            profile: Profile::All,
            filters: vec!["platform.".into()],
            ..Default::default()
        })
        .unwrap();
        for (r, c) in summary.results.iter().zip(&checks) {
            if c.control {
                assert_eq!(r.verdict.kind, VerdictKind::Error, "{}: {}", r.id, r.verdict.reason);
                assert!(r.verdict.reason.contains("positive control"), "{}: {}", r.id, r.verdict.reason);
            } else {
                assert_ne!(r.verdict.kind, VerdictKind::Pass, "{}: {}", r.id, r.verdict.reason);
            }
        }
        server.stop().await;
    });
}

#[test]
fn slow_server_beyond_the_rpc_deadline_is_error() {
    let rt = runtime();
    rt.block_on(async {
        let server = DefectServer::start(&[Defect::Slow]).await.unwrap();
        let summary = run(&server, "platform.native", quick_options()).await;
        let (_, kind, reason) = &kinds(&summary)[0];
        assert_eq!(*kind, VerdictKind::Error, "{reason}");
        assert!(reason.contains("no answer within") || reason.contains("Timeout expired"), "{reason}");
        server.stop().await;
    });
}

#[test]
fn garbage_response_is_error_not_a_verdict_on_the_server() {
    let rt = runtime();
    rt.block_on(async {
        let server = DefectServer::start(&[Defect::Garbage]).await.unwrap();
        let summary = run(&server, "input-root.", quick_options()).await;
        for (id, kind, reason) in kinds(&summary) {
            assert_eq!(kind, VerdictKind::Error, "{id}: {reason}");
            assert!(reason.contains("does not decode"), "{id}: {reason}");
        }
        server.stop().await;
    });
}

#[test]
fn cut_stream_is_resumed_with_wait_execution_never_judged_as_a_failure() {
    let rt = runtime();
    rt.block_on(async {
        let server = DefectServer::start(&[Defect::StreamCut]).await.unwrap();
        let summary = run(&server, "input-root.", quick_options()).await;
        for r in &summary.results {
            // Either the harness resumed (as BuildStream does) and judged the
            // server on its result, or it could not decide; a cut is never a FAIL.
            assert!(matches!(r.verdict.kind, VerdictKind::Pass | VerdictKind::Error), "{}: {:?}", r.id, r.verdict);
        }
        let resumed =
            summary.results.iter().any(|r| r.verdict.evidence.iter().any(|e| e.label == "wait_execution_calls"));
        let errored = summary.results.iter().any(|r| r.verdict.kind == VerdictKind::Error);
        assert!(resumed || errored, "{:?}", kinds(&summary));
        server.stop().await;
    });
}

#[test]
fn wrong_digests_never_pass_off_as_good_data() {
    let rt = runtime();
    rt.block_on(async {
        let server = DefectServer::start(&[Defect::WrongDigests]).await.unwrap();
        let summary = run(
            &server,
            "",
            RunOptions { rpc_timeout: Duration::from_secs(5), timeout: Duration::from_secs(20), ..quick_options() },
        )
        .await;
        for (id, kind, reason) in kinds(&summary) {
            // Checks that read outputs from the CAS cannot trust what comes back.
            if [
                "outputs.escaping-paths",
                "outputs.whole-input-root",
                "outputs.root-directory-digest",
                "cas.bytestream-roundtrip",
            ]
            .contains(&id.as_str())
            {
                assert!(
                    matches!(kind, VerdictKind::Error | VerdictKind::Fail | VerdictKind::Warn),
                    "{id}: {kind}: {reason}"
                );
            }
        }
        let roundtrip = kinds(&summary).into_iter().find(|(id, ..)| id == "cas.bytestream-roundtrip").unwrap();
        assert_eq!(roundtrip.1, VerdictKind::Fail, "{}", roundtrip.2);
        server.stop().await;
    });
}

struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    server: (String, String),
}

impl Pki {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// A CA, a server certificate for localhost and a client certificate, on disk.
fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client =
        CertificateParams::new(vec!["conformance-client".to_string()]).unwrap().signed_by(&client_key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
    Pki { dir, ca: ca.pem(), server: (server.pem(), server_key.serialize_pem()) }
}

const TOKEN: &str = "s3cret-token-value-7f3a";

#[test]
fn mutual_tls_and_bearer_token_work_and_the_token_never_shows() {
    let rt = runtime();
    let pki = make_pki();
    std::fs::write(pki.path("token"), format!("{TOKEN}\n")).unwrap();
    let options = ServerOptions {
        tls: Some((pki.server.0.clone().into_bytes(), pki.server.1.clone().into_bytes())),
        client_ca: Some(pki.ca.clone().into_bytes()),
        token: Some(TOKEN.into()),
        listen: None,
    };
    let server = rt.block_on(DefectServer::start_with(&[], &options)).unwrap();
    let report = pki.path("report.json");
    let junit = pki.path("report.xml");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
            .args(["run", "--endpoint", &server.endpoint(), "--filter", "platform.native", "--server-cert"])
            .arg(pki.path("ca.pem"))
            .args(extra)
            .output()
            .unwrap()
    };
    let (cert, key, token) = (pki.path("client.pem"), pki.path("client.key"), pki.path("token"));
    let full = [
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ];
    let out = run(&full);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("PASS  platform.native"), "{text}");
    for doc in [text.clone(), std::fs::read_to_string(&report).unwrap(), std::fs::read_to_string(&junit).unwrap()] {
        assert!(!doc.contains(TOKEN), "the token leaked: {doc}");
    }

    // Without the token: the server says UNAUTHENTICATED, which is an ERROR.
    let out = run(&full[..4]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("Unauthenticated"), "{text}");

    // Without a client certificate the TLS handshake fails: ERROR again.
    let out = run(&full[4..6]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    rt.block_on(server.stop());
}

#[test]
fn execute_unavailable_is_error_after_retries_never_a_failure() {
    let rt = runtime();
    rt.block_on(async {
        let server = DefectServer::start(&[Defect::ExecuteUnavailable]).await.unwrap();
        let summary = run(&server, "platform.", quick_options()).await;
        for (id, kind, reason) in kinds(&summary) {
            assert!(matches!(kind, VerdictKind::Error | VerdictKind::Skip), "{id}: {kind} {reason}");
        }
        // The evidence says how many retries the verdict outlived.
        let native = summary.results.iter().find(|r| r.id == "platform.native").unwrap();
        assert!(native.verdict.reason.contains("after 4 retries"), "{:?}", native.verdict);
        assert!(native.verdict.evidence.iter().any(|e| e.label == "retries" && e.observed.contains("UNAVAILABLE ×4")));
        server.stop().await;
    });
}

/// Spawns `run` with `args`, waits `after`, sends SIGINT, and returns the
/// child for the caller to watch.
fn interrupted_run(args: &[&str], after: Duration) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .arg("run")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    // SAFETY: signalling a child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child
}

/// Waits for `child` at most `within`; its exit code and stderr.
fn ended_within(mut child: std::process::Child, within: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("still running {within:?} after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn interrupt_while_capabilities_hang_exits_at_once() {
    let rt = runtime();
    let server = rt.block_on(DefectServer::start(&[Defect::Hang])).unwrap();
    // The server never answers GetCapabilities; --rpc-timeout is 20 s.
    let child = interrupted_run(&["--endpoint", &server.endpoint()], Duration::from_millis(700));
    let (code, stderr) = ended_within(child, Duration::from_secs(3));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted while connecting"), "{stderr}");
    rt.block_on(server.stop());
}

#[test]
fn interrupt_does_not_wait_for_a_cancel_that_never_answers() {
    let rt = runtime();
    let server = rt.block_on(DefectServer::start(&[Defect::UnmatchedPlatformQueued, Defect::CancelHangs])).unwrap();
    let args = ["--endpoint", &server.endpoint(), "--filter", "platform.foreign-isa", "--queue-wait", "60"];
    let child = interrupted_run(&args, Duration::from_millis(1500));
    // CancelOperation gets 2 s in all, whatever --rpc-timeout says.
    let (code, stderr) = ended_within(child, Duration::from_secs(5));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("asked the server to cancel 1 operation(s); 0 confirmed"), "{stderr}");
    // A second signal during that wait ends the process at once.
    let child = interrupted_run(&args, Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling a child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let (code, stderr) = ended_within(child, Duration::from_secs(2));
    assert_eq!(code, Some(143), "{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");
    assert!(start.elapsed() < Duration::from_millis(1500), "{:?}", start.elapsed());
    rt.block_on(server.stop());
}

#[test]
fn interrupt_cancels_in_flight_operations_and_exits_130() {
    use bazel_remote_apis::google::longrunning::{operations_client::OperationsClient, ListOperationsRequest};
    let rt = runtime();
    // A foreign ISA stays queued for the whole --queue-wait on a server that
    // waits for a worker (the faithful one refuses it at once).
    let server = rt.block_on(DefectServer::start(&[Defect::UnmatchedPlatformQueued])).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--endpoint", &server.endpoint(), "--filter", "platform.foreign-isa", "--queue-wait", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling a child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelled 1 operation"), "{stderr}");
    let ops = rt.block_on(async {
        let mut client = OperationsClient::connect(server.endpoint()).await.unwrap();
        client.list_operations(ListOperationsRequest::default()).await.unwrap().into_inner().operations
    });
    assert!(!ops.is_empty());
    assert!(ops.iter().all(|op| op.done), "operations still running after the interrupt: {ops:?}");
    rt.block_on(server.stop());
}

#[test]
fn buildstream_config_points_the_run_at_its_services() {
    let rt = runtime();
    let server = rt.block_on(DefectServer::start(&[])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("buildstream.conf");
    let url = server.endpoint();
    std::fs::write(
        &conf,
        format!("remote-execution:\n  execution-service:\n    url: {url}\n    instance-name: main\n  storage-service:\n    url: {url}\n    instance-name: main\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--filter", "input-root.working-directory", "--buildstream-config"])
        .arg(&conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("PASS  input-root.working-directory"), "{stdout}");
    assert!(stdout.contains("(instance `main`)"), "{stdout}");
    rt.block_on(server.stop());
}

#[test]
fn a_leaked_worker_environment_reaches_no_report_but_its_names_are_judged() {
    let rt = runtime();
    let server = rt.block_on(DefectServer::start(&[Defect::WorkerEnvLeak])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (json, junit) = (dir.path().join("report.json"), dir.path().join("report.xml"));
    let out = Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
        .args(["run", "--endpoint", &server.endpoint(), "--filter", "sandbox.environment-exact", "--json"])
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    rt.block_on(server.stop());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("FAIL  sandbox.environment-exact"), "{stdout}");
    // The worker's LANG=C.UTF-8 and WORKER_NAME=defect-server: names shown, values not.
    for doc in [stdout, std::fs::read_to_string(&json).unwrap(), std::fs::read_to_string(&junit).unwrap()] {
        assert!(doc.contains("WORKER_NAME") && doc.contains("LANG"), "{doc}");
        assert!(!doc.contains("C.UTF-8") && !doc.contains("\"defect-server\""), "a value leaked: {doc}");
        assert!(doc.contains("values of variables the action was not given are not reported"), "{doc}");
    }
}
