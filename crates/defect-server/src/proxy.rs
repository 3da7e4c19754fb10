//! A fault-injecting proxy: it sits in front of any REAPI server (the real
//! local cluster, say) and breaks one thing at a time the way networks,
//! load balancers and overloaded clusters do — transient UNAVAILABLE and
//! RESOURCE_EXHAUSTED answers, our deadline passing, streams cut mid-way,
//! slow or cut CAS reads, garbage instead of Operations, a worker lost
//! under a running operation. None of these says anything about the
//! server's conformance, so a harness run behind the proxy must give every
//! check its fault-free verdict or ERROR, never a new FAIL or WARN; and a
//! transient fault within the harness's retry budget must change nothing.
//!
//! It speaks HTTP/2 on both sides and looks into the gRPC framing only where
//! a fault needs it (rewriting or garbling Operations).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteResponse;
use bazel_remote_apis::google::longrunning::{operation, Operation};
use bytes::{Buf, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// One kind of fault the proxy injects. `name()` is its kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything untouched (the baseline).
    None,
    /// The first Execute of each request answered UNAVAILABLE at once, the
    /// next one served: transient.
    ExecuteUnavailableOnce,
    /// Every Execute answered UNAVAILABLE.
    ExecuteUnavailable,
    /// Every Execute answered RESOURCE_EXHAUSTED.
    ExecuteResourceExhausted,
    /// Every Execute answered DEADLINE_EXCEEDED.
    ExecuteDeadlineExceeded,
    /// Every Execute and WaitExecution stream cut after its first Operation.
    StreamCut,
    /// The first finished operation of each Execute or WaitExecution
    /// request turned into an ExecuteResponse with status UNAVAILABLE ("the
    /// worker was lost"), the next one served: transient.
    WorkerLostOnce,
    /// Every finished operation turned into status UNAVAILABLE.
    WorkerLost,
    /// The first of each CAS read (BatchReadBlobs, ByteStream.Read) cut
    /// before its first message, the next one served: transient.
    CasReadCutOnce,
    /// Every CAS read cut before its first message.
    CasReadCut,
    /// Every CAS read answered only after `delay` (past the harness's deadline).
    CasReadSlow,
    /// Every Operation of Execute and WaitExecution replaced by bytes that
    /// are no Operation.
    GarbageOperations,
}

impl Fault {
    /// Every fault, the baseline first.
    pub const ALL: &'static [Fault] = &[
        Fault::None,
        Fault::ExecuteUnavailableOnce,
        Fault::ExecuteUnavailable,
        Fault::ExecuteResourceExhausted,
        Fault::ExecuteDeadlineExceeded,
        Fault::StreamCut,
        Fault::WorkerLostOnce,
        Fault::WorkerLost,
        Fault::CasReadCutOnce,
        Fault::CasReadCut,
        Fault::CasReadSlow,
        Fault::GarbageOperations,
    ];

    /// Stable kebab-case name, e.g. `execute-unavailable-once`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::ExecuteUnavailableOnce => "execute-unavailable-once",
            Fault::ExecuteUnavailable => "execute-unavailable",
            Fault::ExecuteResourceExhausted => "execute-resource-exhausted",
            Fault::ExecuteDeadlineExceeded => "execute-deadline-exceeded",
            Fault::StreamCut => "stream-cut",
            Fault::WorkerLostOnce => "worker-lost-once",
            Fault::WorkerLost => "worker-lost",
            Fault::CasReadCutOnce => "cas-read-cut-once",
            Fault::CasReadCut => "cas-read-cut",
            Fault::CasReadSlow => "cas-read-slow",
            Fault::GarbageOperations => "garbage-operations",
        }
    }

    /// A fault a client that retries as BuildStream's does gets past: it
    /// must change no verdict.
    pub fn is_transient(self) -> bool {
        matches!(self, Fault::None | Fault::ExecuteUnavailableOnce | Fault::WorkerLostOnce | Fault::CasReadCutOnce)
    }
}

/// Where the proxy forwards to.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// `host:port`.
    Tcp(String),
    /// A unix socket path.
    Unix(std::path::PathBuf),
}

impl Upstream {
    /// From an endpoint URL: `http://`/`grpc://host:port` or `unix:PATH`.
    pub fn from_url(url: &str) -> Option<Upstream> {
        if let Some(path) = url.strip_prefix("unix://").or_else(|| url.strip_prefix("unix:")) {
            return Some(Upstream::Unix(path.into()));
        }
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("grpc://"))?;
        Some(Upstream::Tcp(rest.trim_end_matches('/').to_string()))
    }
}

/// A running proxy; stops when dropped or with [`FaultProxy::stop`].
pub struct FaultProxy {
    endpoint: String,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy").field("endpoint", &self.endpoint).finish()
    }
}

/// What every connection of one proxy shares.
struct State {
    fault: Fault,
    upstream: Upstream,
    /// How long `CasReadSlow` holds a read.
    delay: Duration,
    /// Requests (path and body) seen before: the "once" faults hit only the
    /// first of each, so a client that retries gets past them however its
    /// calls interleave with others.
    seen: std::sync::Mutex<std::collections::HashSet<(String, Bytes)>>,
}

impl State {
    /// Whether this exact request comes for the first time.
    fn first_time(&self, path: &str, body: &Bytes) -> bool {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert((path.to_string(), body.clone()))
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`, injecting
    /// `fault`; `delay` is how long a slow read is held.
    pub async fn start(upstream: Upstream, fault: Fault, delay: Duration) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State { fault, upstream, delay, seen: Default::default() });
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                connections.spawn(serve_connection(tcp, state.clone()));
                // Reap finished connections as we go.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(FaultProxy { endpoint, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Stops listening and drops every connection.
    pub fn stop(self) {}
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One downstream connection, with its own upstream connection (HTTP/2
/// multiplexes the calls on each).
async fn serve_connection(tcp: tokio::net::TcpStream, state: Arc<State>) {
    let sender = match connect_upstream(&state.upstream).await {
        Ok(s) => s,
        Err(_) => return, // dropping the connection: the client sees a transport error
    };
    let service = hyper::service::service_fn(move |req| {
        let (sender, state) = (sender.clone(), state.clone());
        async move { Ok::<_, Infallible>(forward(req, sender, state).await) }
    });
    let io = hyper_util::rt::TokioIo::new(tcp);
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

type Sender = hyper::client::conn::http2::SendRequest<ProxyBody>;

async fn connect_upstream(upstream: &Upstream) -> std::io::Result<Sender> {
    let exec = hyper_util::rt::TokioExecutor::new();
    let err = |e: hyper::Error| std::io::Error::other(e.to_string());
    match upstream {
        Upstream::Tcp(addr) => {
            let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await?);
            let (sender, conn) = hyper::client::conn::http2::handshake(exec, io).await.map_err(err)?;
            tokio::spawn(conn);
            Ok(sender)
        }
        Upstream::Unix(path) => {
            let io = hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?);
            let (sender, conn) = hyper::client::conn::http2::handshake(exec, io).await.map_err(err)?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

const EXECUTE: &str = "/build.bazel.remote.execution.v2.Execution/Execute";
const WAIT_EXECUTION: &str = "/build.bazel.remote.execution.v2.Execution/WaitExecution";
const BATCH_READ: &str = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs";
const BYTESTREAM_READ: &str = "/google.bytestream.ByteStream/Read";

/// A gRPC answer with no message: the status in the headers (trailers-only).
fn status_only(code: tonic::Code, message: &str) -> http::Response<ProxyBody> {
    let mut resp = http::Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed());
    let headers = resp.headers_mut();
    headers.insert("content-type", http::HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", http::HeaderValue::from(code as i32));
    if let Ok(v) = http::HeaderValue::from_str(message) {
        headers.insert("grpc-message", v);
    }
    resp
}

async fn forward(req: http::Request<Incoming>, mut sender: Sender, state: Arc<State>) -> http::Response<ProxyBody> {
    let path = req.uri().path().to_string();
    let is_execute = path == EXECUTE;
    let is_operation_stream = is_execute || path == WAIT_EXECUTION;
    let is_read = path == BATCH_READ || path == BYTESTREAM_READ;
    let (parts, body) = req.into_parts();
    // The calls faults look at have small unary requests: read them whole,
    // to tell a first request from its retry.
    let (body, first): (ProxyBody, bool) = if is_operation_stream || is_read {
        match body.collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                let first = state.first_time(&path, &bytes);
                (http_body_util::Full::new(bytes).map_err(|e| match e {}).boxed(), first)
            }
            Err(_) => return status_only(tonic::Code::Unavailable, "proxy: the request broke"),
        }
    } else {
        (body.map_err(|e| Box::new(e) as BoxError).boxed(), false)
    };
    if is_execute {
        let refuse = match state.fault {
            Fault::ExecuteUnavailableOnce => first.then_some((tonic::Code::Unavailable, "injected: no scheduler")),
            Fault::ExecuteUnavailable => Some((tonic::Code::Unavailable, "injected: no scheduler")),
            Fault::ExecuteResourceExhausted => Some((tonic::Code::ResourceExhausted, "injected: queue full")),
            Fault::ExecuteDeadlineExceeded => Some((tonic::Code::DeadlineExceeded, "injected: took too long")),
            _ => None,
        };
        if let Some((code, message)) = refuse {
            return status_only(code, message);
        }
    }
    let cut_read = is_read
        && match state.fault {
            Fault::CasReadCut => true,
            Fault::CasReadCutOnce => first,
            _ => false,
        };
    if is_read && state.fault == Fault::CasReadSlow {
        tokio::time::sleep(state.delay).await;
    }
    let mut parts = parts;
    // The upstream wants an absolute URI on an HTTP/2 client connection.
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or(path.clone());
    parts.uri = match format!("http://upstream{path_and_query}").parse() {
        Ok(uri) => uri,
        Err(_) => return status_only(tonic::Code::Internal, "proxy: bad path"),
    };
    let resp = match sender.send_request(http::Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return status_only(tonic::Code::Unavailable, &format!("proxy: upstream: {e}")),
    };
    let (parts, body) = resp.into_parts();
    let rewrite: Option<Rewrite> = if cut_read {
        Some(Rewrite::CutAfter(0))
    } else if is_operation_stream {
        match state.fault {
            Fault::StreamCut => Some(Rewrite::CutAfter(1)),
            Fault::GarbageOperations => Some(Rewrite::Garbage),
            Fault::WorkerLost => Some(Rewrite::WorkerLost),
            Fault::WorkerLostOnce if first => Some(Rewrite::WorkerLost),
            _ => None,
        }
    } else {
        None
    };
    let body = match rewrite {
        None => body.map_err(|e| Box::new(e) as BoxError).boxed(),
        Some(rewrite) => rewritten(body, rewrite),
    };
    http::Response::from_parts(parts, body)
}

/// What to do to the messages of a response.
#[derive(Debug, Clone, Copy)]
enum Rewrite {
    /// Pass this many messages, then break the stream (no trailers).
    CutAfter(usize),
    /// Replace every message with bytes that do not decode.
    Garbage,
    /// Turn finished Operations into "worker lost" (status UNAVAILABLE).
    WorkerLost,
}

/// The response body with its gRPC messages passed through `rewrite`.
fn rewritten(mut body: Incoming, rewrite: Rewrite) -> ProxyBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    tokio::spawn(async move {
        let mut buffer = BytesMut::new();
        let mut passed = 0usize;
        if let Rewrite::CutAfter(0) = rewrite {
            let _ = tx.send(Err("injected: stream cut".into())).await;
            return;
        }
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            };
            let frame = match frame.into_data() {
                Ok(data) => data,
                Err(other) => {
                    // Trailers: the status, passed on.
                    let _ = tx.send(Ok(other)).await;
                    continue;
                }
            };
            buffer.extend_from_slice(&frame);
            while let Some(message) = next_message(&mut buffer) {
                if let Rewrite::CutAfter(n) = rewrite {
                    if passed >= n {
                        let _ = tx.send(Err("injected: stream cut".into())).await;
                        return;
                    }
                }
                passed += 1;
                let out = match rewrite {
                    Rewrite::CutAfter(_) => message,
                    Rewrite::Garbage => Bytes::from_static(&[0xff; 16]),
                    Rewrite::WorkerLost => worker_lost(message),
                };
                if tx.send(Ok(Frame::data(frame_message(&out)))).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    BodyExt::boxed(StreamBody::new(stream))
}

/// Takes one whole gRPC message (5-byte header, then the bytes) off the
/// front of `buffer`, if it holds one.
fn next_message(buffer: &mut BytesMut) -> Option<Bytes> {
    if buffer.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if buffer.len() < 5 + len {
        return None;
    }
    buffer.advance(5);
    Some(buffer.split_to(len).freeze())
}

/// One uncompressed gRPC message frame.
fn frame_message(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// A finished Operation made into "the worker was lost": its response an
/// ExecuteResponse with status UNAVAILABLE and no result.
fn worker_lost(message: Bytes) -> Bytes {
    let Ok(mut op) = Operation::decode(message.clone()) else { return message };
    if !op.done {
        return message;
    }
    let response = ExecuteResponse {
        status: Some(bazel_remote_apis::google::rpc::Status {
            code: tonic::Code::Unavailable as i32,
            message: "injected: the worker was lost".into(),
            details: vec![],
        }),
        ..Default::default()
    };
    op.result = Some(operation::Result::Response(prost_types_any(&response)));
    Bytes::from(op.encode_to_vec())
}

fn prost_types_any(response: &ExecuteResponse) -> bazel_remote_apis::google::protobuf::Any {
    bazel_remote_apis::google::protobuf::Any {
        type_url: "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse".into(),
        value: response.encode_to_vec().into(),
    }
}
