//! A misbehaving server: every RPC of every REAPI service the harness uses
//! answers with generated protobuf — random field numbers, wire types and
//! lengths, valid gRPC framing, random status codes and messages (control
//! characters included). The harness must never panic or hang beyond its
//! budgets, and its reports must stay well-formed.
//!
//! Reproducible: case N uses seed N. `REAPI_FUZZ_CASES` sets how many cases
//! run (default 16), `REAPI_FUZZ_SEED` runs one seed alone.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use reapi_conformance::action::Vars;
use reapi_conformance::cluster::endpoint::Endpoint;
use reapi_conformance::connection::ConnectOptions;
use reapi_conformance::report;
use reapi_conformance::runner::RunOptions;
use reapi_conformance::session::{execute, select_checks, Profile, RunEnd, Selection};
use reapi_conformance::verdict::VerdictKind;

/// xorshift64*: small, seedable, good enough to pick bytes.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Protobuf wire data: random fields (numbers 1..=20, where REAPI messages
/// keep theirs), varints, fixed values and length-delimited payloads that are
/// sometimes nested messages, sometimes text, sometimes huge claimed sizes.
fn wire_message(rng: &mut Rng, depth: u32, out: &mut Vec<u8>) {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    for _ in 0..rng.below(6) {
        let field = 1 + rng.below(20);
        match rng.below(5) {
            0 => {
                varint(field << 3, out);
                // Sizes and counts from the wire: sometimes absurd.
                let v = if rng.below(4) == 0 { u64::MAX >> rng.below(8) } else { rng.below(300) };
                varint(v, out);
            }
            1 => {
                varint(field << 3 | 1, out);
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
            2 if depth < 3 => {
                let mut inner = Vec::new();
                wire_message(rng, depth + 1, &mut inner);
                varint(field << 3 | 2, out);
                varint(inner.len() as u64, out);
                out.extend_from_slice(&inner);
            }
            3 => {
                let text: &[u8] = [
                    b"build.bazel.remote.execution.v2.ExecuteResponse".as_slice(),
                    b"type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata",
                    b"\x1b]0;owned\x07\x1b[31m",
                    b"0000000000000000000000000000000000000000000000000000000000000000",
                    b"",
                ][rng.below(5) as usize];
                varint(field << 3 | 2, out);
                varint(text.len() as u64, out);
                out.extend_from_slice(text);
            }
            _ => {
                // Random bytes, possibly not even valid wire format.
                varint(field << 3 | 2, out);
                let n = rng.below(40);
                varint(n, out);
                out.extend((0..n).map(|_| rng.next() as u8));
            }
        }
    }
}

/// ServerCapabilities that claim SHA-256, batches and execution.
fn sane_capabilities() -> Vec<u8> {
    use bazel_remote_apis::build::bazel::remote::execution::v2::{
        digest_function, CacheCapabilities, ExecutionCapabilities, ServerCapabilities,
    };
    use prost::Message;
    ServerCapabilities {
        cache_capabilities: Some(CacheCapabilities {
            digest_functions: vec![digest_function::Value::Sha256 as i32],
            max_batch_total_size_bytes: 4 << 20,
            ..Default::default()
        }),
        execution_capabilities: Some(ExecutionCapabilities {
            digest_function: digest_function::Value::Sha256 as i32,
            exec_enabled: true,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn frame(payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 5);
    f.push(0);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    Bytes::from(f)
}

/// The catch-all service: one generated answer per call, drawn from the
/// case's seed and a per-call counter.
#[derive(Clone)]
struct Garbage {
    seed: u64,
    calls: Arc<AtomicU64>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<tonic::body::Body>> for Garbage {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut rng =
            Rng(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n + 1).wrapping_mul(0xD1B5_4A32_D192_ED69) | 1);
        let capabilities = req.uri().path().ends_with("/GetCapabilities");
        Box::pin(async move {
            // Drain the request (client streams such as ByteStream.Write), bounded in time.
            let _ = tokio::time::timeout(Duration::from_millis(200), req.into_body().collect()).await;
            let mut frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = Vec::new();
            // Mostly usable capabilities (with some extra fields), so that the
            // checks get to run at all.
            let sane = capabilities && rng.below(4) != 0;
            if sane {
                let mut payload = sane_capabilities();
                wire_message(&mut rng, 1, &mut payload);
                frames.push(Ok(http_body::Frame::data(frame(&payload))));
            }
            for _ in 0..if sane { 0 } else { rng.below(4) } {
                let mut payload = Vec::new();
                wire_message(&mut rng, 0, &mut payload);
                frames.push(Ok(http_body::Frame::data(frame(&payload))));
            }
            let mut trailers = http::HeaderMap::new();
            // OK half of the time, otherwise any code with a hostile message.
            let code = if sane || rng.below(2) == 0 { 0 } else { rng.below(17) };
            trailers.insert("grpc-status", http::HeaderValue::from(code));
            if let Ok(v) = http::HeaderValue::from_bytes(b"garbage %1B]0;x%07 happened") {
                trailers.insert("grpc-message", v);
            }
            frames.push(Ok(http_body::Frame::trailers(trailers)));
            let body = StreamBody::new(tokio_stream::iter(frames));
            let response = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(tonic::body::Body::new(body))
                .unwrap_or_default();
            Ok(response)
        })
    }
}

macro_rules! named {
    ($($ty:ident = $name:literal),* $(,)?) => {$(
        #[derive(Clone)]
        struct $ty(Garbage);
        impl tonic::server::NamedService for $ty {
            const NAME: &'static str = $name;
        }
        impl tower::Service<http::Request<tonic::body::Body>> for $ty {
            type Response = http::Response<tonic::body::Body>;
            type Error = Infallible;
            type Future = <Garbage as tower::Service<http::Request<tonic::body::Body>>>::Future;
            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                self.0.poll_ready(cx)
            }
            fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
                self.0.call(req)
            }
        }
    )*};
}

named! {
    Capabilities = "build.bazel.remote.execution.v2.Capabilities",
    Execution = "build.bazel.remote.execution.v2.Execution",
    Cas = "build.bazel.remote.execution.v2.ContentAddressableStorage",
    ActionCache = "build.bazel.remote.execution.v2.ActionCache",
    ByteStream = "google.bytestream.ByteStream",
    Operations = "google.longrunning.Operations",
}

/// Serves the garbage on a loopback port until the returned sender is dropped.
async fn serve(seed: u64) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let g = Garbage { seed, calls: Arc::default() };
    let router = tonic::transport::Server::builder()
        .add_service(Capabilities(g.clone()))
        .add_service(Execution(g.clone()))
        .add_service(Cas(g.clone()))
        .add_service(ActionCache(g.clone()))
        .add_service(ByteStream(g.clone()))
        .add_service(Operations(g));
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await;
    });
    (format!("http://{addr}"), stop_tx)
}

#[test]
fn a_server_answering_garbage_never_crashes_or_hangs_the_harness() {
    let seeds: Vec<u64> = match std::env::var("REAPI_FUZZ_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=std::env::var("REAPI_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(16u64)).collect(),
    };
    let (_, checks) = select_checks(&Selection { profile: Profile::All, ..Default::default() }).expect("suites load");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let options = RunOptions {
        timeout: Duration::from_secs(2),
        queue_wait: Duration::from_secs(1),
        rpc_timeout: Duration::from_secs(1),
        jobs: 16,
        buildbox_dir: None,
        idle_stream: None,
    };
    let start = Instant::now();
    let mut tally = std::collections::BTreeMap::<VerdictKind, usize>::new();
    for &seed in &seeds {
        let case = Instant::now();
        let summary = rt.block_on(async {
            let (url, _stop) = serve(seed).await;
            let mut cluster = Endpoint { options: ConnectOptions::endpoint(url) };
            let run = execute(
                &mut cluster,
                &checks,
                options.clone(),
                Vars::for_host(),
                |_| {},
                std::future::pending::<i32>(),
            );
            // Budgets: every check's own (at most a timed-out action, 10 s) plus margin.
            match tokio::time::timeout(Duration::from_secs(60), run).await {
                Err(_) => panic!("seed {seed}: the run hung past 60 s"),
                Ok(Err(e)) => panic!("seed {seed}: the run failed: {e}"),
                Ok(Ok(RunEnd::Interrupted(s))) => panic!("seed {seed}: interrupted by {s}"),
                Ok(Ok(RunEnd::Finished(summary))) => summary,
            }
        });
        assert_eq!(summary.results.len(), checks.len(), "seed {seed}: a verdict per check");
        for r in &summary.results {
            *tally.entry(r.verdict.kind).or_default() += 1;
            if std::env::var_os("REAPI_FUZZ_VERBOSE").is_some() {
                eprintln!("  {} {} {}", r.verdict.kind, r.id, report::one_line(&r.verdict.reason, 160));
            }
            if matches!(r.verdict.kind, VerdictKind::Fail | VerdictKind::Warn) {
                assert!(
                    r.verdict.evidence.iter().any(|e| e.expected.is_some()),
                    "seed {seed}: {} is {} without evidence of what was expected: {:?}",
                    r.id,
                    r.verdict.kind,
                    r.verdict
                );
            }
        }
        // Reports stay well-formed whatever the server said.
        let xml = report::junit::render(&summary);
        let mut reader = quick_xml::Reader::from_str(&xml);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("seed {seed}: JUnit is not well-formed XML: {e}\n{xml}"),
            }
        }
        assert!(
            !xml.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')),
            "seed {seed}: control characters in JUnit"
        );
        let terminal = report::terminal::render(&summary, false);
        assert!(
            !terminal.contains('\x1b') && !terminal.contains('\x07'),
            "seed {seed}: escape sequences reach the terminal"
        );
        serde_json::from_str::<serde_json::Value>(&report::json::render(&summary)).expect("JSON report parses");
        let slowest = summary
            .results
            .iter()
            .max_by_key(|r| r.duration)
            .map(|r| format!("{} {:.1}s", r.id, r.duration.as_secs_f64()));
        eprintln!(
            "seed {seed}: {} checks in {:.1}s (slowest: {slowest:?})",
            summary.results.len(),
            case.elapsed().as_secs_f64()
        );
    }
    println!(
        "fuzz: {} cases x {} checks in {:.1}s; verdicts {:?}",
        seeds.len(),
        checks.len(),
        start.elapsed().as_secs_f64(),
        tally
    );
}
