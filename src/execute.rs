//! Execute an action and classify what the server did with it.
//!
//! docs/requirements.md §4: a suite must tell apart an Execute that is rejected at
//! once, one that fails inside the finished operation, one still queued (or
//! still running) when the budget is spent, and one that completed.

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    execution_stage, ActionResult, Digest, ExecuteOperationMetadata, ExecuteRequest, ExecuteResponse,
    WaitExecutionRequest,
};
use bazel_remote_apis::google::longrunning::{operation, CancelOperationRequest, Operation};
use prost::Message;
use tokio::time::Instant;
use tonic::Code;

use crate::connection::Clients;
use crate::suite::OutcomeClass;

/// What the server did with an Execute request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Execute (or WaitExecution) answered with a gRPC error status.
    Rejected {
        /// The status code of the answer.
        code: Code,
        /// Its message; after a resumed stream, prefixed with why the stream was resumed.
        message: String,
        /// Its `google.rpc.Status` details (`grpc-status-details-bin`).
        details: Vec<StatusDetail>,
    },
    /// The operation finished with a non-OK status, or with `Operation.error`
    /// (which the spec forbids).
    Failed {
        /// The numeric gRPC code of the operation's status.
        code: i32,
        /// The status message.
        message: String,
        /// The status came as `Operation.error` rather than in the ExecuteResponse.
        operation_error: bool,
        /// The ActionResult the ExecuteResponse carried beside the status, if any (e.g. of a timed-out
        /// action); never with `Operation.error`.
        result: Option<Box<ActionResult>>,
        /// The status details.
        details: Vec<StatusDetail>,
    },
    /// Still queued when the budget ran out; the operation was cancelled.
    Queued {
        /// Time from the first Execute call to giving up.
        waited: Duration,
        /// How the CancelOperation went: `cancelled`, or the code it answered.
        cancel: String,
    },
    /// Running on a worker when the budget ran out; the operation was cancelled.
    Executing {
        /// Time from the first Execute call to giving up.
        waited: Duration,
        /// How the CancelOperation went: `cancelled`, or the code it answered.
        cancel: String,
    },
    /// Went back to QUEUED after EXECUTING again and again (a worker failed
    /// it and the server queued it anew): given up at once, and cancelled,
    /// instead of waiting out the budget.
    Requeued {
        /// Time from the first Execute call to giving up.
        waited: Duration,
        /// Times the stages went from EXECUTING back to CACHE_CHECK or QUEUED (see [`requeues`]).
        requeues: usize,
        /// How the CancelOperation went: `cancelled`, or the code it answered.
        cancel: String,
    },
    /// Finished with an OK status and an ActionResult.
    Completed {
        /// The ExecuteResponse, whose status is OK and whose result is set.
        response: Box<ExecuteResponse>,
    },
}

impl Outcome {
    /// The outcome class suites state their expectations in (a requeue loop is `Executing`).
    pub fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Rejected { .. } => OutcomeClass::Rejected,
            Outcome::Failed { .. } => OutcomeClass::Failed,
            Outcome::Queued { .. } => OutcomeClass::Queued,
            Outcome::Executing { .. } | Outcome::Requeued { .. } => OutcomeClass::Executing,
            Outcome::Completed { .. } => OutcomeClass::Completed,
        }
    }

    /// The class recorded on a verdict for the readiness answer: as
    /// [`Outcome::class`], except that a requeue loop is `Queued` there. The
    /// server sends the operation back to its queue for ever, so a client
    /// (bst) waits for it as for one never dispatched: it hangs, where an
    /// `Executing` class would read as an answer that came back wrong.
    pub fn recorded_class(&self) -> OutcomeClass {
        match self {
            Outcome::Requeued { .. } => OutcomeClass::Queued,
            _ => self.class(),
        }
    }

    /// One line for evidence.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Rejected { code, message, .. } => format!("rejected: {code:?}: {message}"),
            Outcome::Failed { code, message, operation_error, .. } => format!(
                "failed in operation{}: {}: {message}",
                if *operation_error { " (Operation.error)" } else { "" },
                code_name(*code)
            ),
            Outcome::Queued { waited, cancel } => format!("still queued after {:.1}s, {cancel}", waited.as_secs_f64()),
            Outcome::Executing { waited, cancel } => {
                format!("still executing after {:.1}s, {cancel}", waited.as_secs_f64())
            }
            Outcome::Requeued { waited, requeues, cancel } => format!(
                "requeued {requeues} time(s) (EXECUTING, then back in the queue: the worker did not finish it and \
                 the server queued it anew) and not finished {}s after the first, {cancel} after {:.1}s",
                REQUEUE_GRACE.as_secs(),
                waited.as_secs_f64()
            ),
            Outcome::Completed { response } => {
                let r = response.result.as_ref();
                format!(
                    "completed: exit code {}{}",
                    r.map(|r| r.exit_code).unwrap_or_default(),
                    if response.cached_result { " (cached result)" } else { "" }
                )
            }
        }
    }

    /// The action result, when the server produced one.
    pub fn result(&self) -> Option<&ActionResult> {
        match self {
            Outcome::Completed { response } => response.result.as_ref(),
            Outcome::Failed { result, .. } => result.as_deref(),
            _ => None,
        }
    }
}

/// One `google.rpc.Status` detail: its type URL and encoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusDetail {
    /// Type URL of the detail message, e.g. `type.googleapis.com/google.rpc.PreconditionFailure`.
    pub type_url: String,
    /// The detail message, protobuf-encoded.
    pub value: Vec<u8>,
}

impl Outcome {
    /// Status details of a rejection or a failed operation.
    pub fn details(&self) -> &[StatusDetail] {
        match self {
            Outcome::Rejected { details, .. } | Outcome::Failed { details, .. } => details,
            _ => &[],
        }
    }

    /// The code of an operation that finished with a status the status rule
    /// calls transient (UNAVAILABLE, RESOURCE_EXHAUSTED): worth executing again.
    pub fn transient_code(&self) -> Option<Code> {
        match self {
            Outcome::Failed { code, .. } => reapi_client::status::undecided_code(*code).map(|_| Code::from_i32(*code)),
            _ => None,
        }
    }

    /// The gRPC code of a rejection or a failed operation.
    pub fn error_code(&self) -> Option<Code> {
        match self {
            Outcome::Rejected { code, .. } => Some(*code),
            Outcome::Failed { code, .. } => Some(Code::from_i32(*code)),
            _ => None,
        }
    }
}

fn details_of(status: &bazel_remote_apis::google::rpc::Status) -> Vec<StatusDetail> {
    status.details.iter().map(|d| StatusDetail { type_url: d.type_url.clone(), value: d.value.to_vec() }).collect()
}

/// Details carried by a gRPC error status (`grpc-status-details-bin`).
pub fn details_of_grpc(status: &tonic::Status) -> Vec<StatusDetail> {
    bazel_remote_apis::google::rpc::Status::decode(status.details()).map(|s| details_of(&s)).unwrap_or_default()
}

fn rejected(status: &tonic::Status, message: String) -> Outcome {
    Outcome::Rejected { code: status.code(), message, details: details_of_grpc(status) }
}

/// Name of a numeric gRPC code.
pub fn code_name(code: i32) -> String {
    format!("{:?}", Code::from_i32(code))
}

/// The harness could not find out what the server did (ERROR, never FAIL).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// Execution parameters for one action.
#[derive(Debug, Clone)]
pub struct ExecuteParams {
    /// Digest of the Action to run, uploaded beforehand with everything it names.
    pub action_digest: Digest,
    /// Sent as `ExecuteRequest.skip_cache_lookup`: run the action even if the action cache
    /// holds a result for it.
    pub skip_cache_lookup: bool,
    /// Time allowed from the Execute call to a finished operation.
    pub budget: Duration,
}

/// What was seen while following the operation, for evidence.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Name of the operation being followed, once a message named one (cleared when a
    /// transient final status makes the harness call Execute anew).
    pub operation: Option<String>,
    /// Execution stages the operation reported, in order, a stage repeated in a row listed once
    /// (e.g. `QUEUED`, `EXECUTING`, `COMPLETED`); those of the last Execute only.
    pub stages: Vec<String>,
    /// Operation messages received, over every stream and every Execute.
    pub messages: usize,
    /// WaitExecution calls made to resume a stream that ended or broke early.
    pub wait_calls: usize,
    /// The action asked for, which every Operation's metadata must name.
    pub action: Option<Digest>,
    /// Operations whose metadata is not an ExecuteOperationMetadata naming
    /// the action, one line each (the spec gives every Operation that metadata).
    pub metadata_problems: Vec<String>,
    /// Operations whose `done` disagrees with their stage (done exactly
    /// when COMPLETED), one line each.
    pub done_problems: Vec<String>,
    /// When the operation, once sent back from EXECUTING (see `requeues`),
    /// was executing again.
    pub requeued_at: Option<tokio::time::Instant>,
}

/// Names of operations started and not yet finished, so an interrupted run
/// can cancel them instead of leaving work on the cluster.
#[derive(Debug, Clone, Default)]
pub struct Inflight(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl Inflight {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an operation a check follows itself, so an interrupted run
    /// cancels it too; [`Inflight::untrack`] once it is done.
    pub(crate) fn track(&self, name: &str) {
        if !name.is_empty() {
            self.set().insert(name.to_string());
        }
    }

    pub(crate) fn untrack(&self, name: &str) {
        self.set().remove(name);
    }

    /// Cancels every operation still in flight, all at once and within
    /// [`CANCEL_BUDGET`] in all (an interrupted user does not wait out a
    /// server that never answers); says what it achieved.
    pub async fn cancel_all(&self, clients: &Clients) -> Cancelled {
        let names: Vec<String> = self.set().drain().collect();
        let confirmed = std::sync::atomic::AtomicUsize::new(0);
        let calls = names.iter().map(|name| {
            let confirmed = &confirmed;
            async move {
                let mut req = tonic::Request::new(CancelOperationRequest { name: name.clone() });
                req.set_timeout(CANCEL_BUDGET);
                if clients.operations.clone().cancel_operation(req).await.is_ok() {
                    confirmed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        let _ = tokio::time::timeout(CANCEL_BUDGET, futures_util::future::join_all(calls)).await;
        Cancelled { asked: names.len(), confirmed: confirmed.into_inner() }
    }
}

/// How long an interrupted run waits for its CancelOperation calls in all.
pub const CANCEL_BUDGET: Duration = Duration::from_secs(2);

/// What cancelling the operations in flight achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    /// Operations in flight, each sent a CancelOperation.
    pub asked: usize,
    /// Those the server answered OK within the budget.
    pub confirmed: usize,
}

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.asked, self.confirmed) {
            (0, _) => f.write_str("no operation in flight"),
            (asked, confirmed) if asked == confirmed => write!(f, "cancelled {asked} operation(s)"),
            (asked, confirmed) => write!(
                f,
                "asked the server to cancel {asked} operation(s); {confirmed} confirmed within {}s, \
                 the rest may still run on the cluster",
                CANCEL_BUDGET.as_secs()
            ),
        }
    }
}

/// How many times an interrupted stream is resumed with WaitExecution.
const MAX_RESUMES: usize = 3;

/// Runs Execute and follows the operation to one of the outcome classes.
/// Operations are recorded in `inflight` while they run (kept there if this
/// future is dropped, so the caller can cancel them).
pub async fn execute(
    clients: &Clients,
    params: &ExecuteParams,
    inflight: &Inflight,
) -> (Result<Outcome, ExecError>, Trace) {
    execute_with_function(clients, params, 0, inflight).await
}

/// [`execute`] for an action whose digests use `digest_function` (a
/// `DigestFunction.Value`; 0 leaves it to the server, as for SHA-256).
pub async fn execute_with_function(
    clients: &Clients,
    params: &ExecuteParams,
    digest_function: i32,
    inflight: &Inflight,
) -> (Result<Outcome, ExecError>, Trace) {
    let mut trace = Trace { action: Some(params.action_digest.clone()), ..Default::default() };
    let outcome = follow(clients, params, digest_function, &mut trace, inflight).await;
    if let Some(name) = &trace.operation {
        inflight.set().remove(name);
    }
    (outcome, trace)
}

async fn follow(
    clients: &Clients,
    params: &ExecuteParams,
    digest_function: i32,
    trace: &mut Trace,
    inflight: &Inflight,
) -> Result<Outcome, ExecError> {
    let start = Instant::now();
    let deadline = start + params.budget;
    let request = ExecuteRequest {
        instance_name: clients.instance.clone(),
        skip_cache_lookup: params.skip_cache_lookup,
        action_digest: Some(params.action_digest.clone()),
        execution_policy: None,
        results_cache_policy: None,
        digest_function,
        inline_stdout: false,
        inline_stderr: false,
        inline_output_files: vec![],
    };
    // Transient answers (the status rule's UNAVAILABLE, RESOURCE_EXHAUSTED,
    // a broken link) to Execute, to a stream before it names its operation,
    // or as the operation's final status, are asked again as casd does:
    // Execute anew, with a growing pause, RETRIES times at most, all within
    // the budget. What still stands then is undecided, never a finding.
    let mut retries = 0;
    'execute: loop {
        let mut req = tonic::Request::new(request.clone());
        req.set_timeout(deadline.saturating_duration_since(Instant::now()) + clients.rpc_timeout);
        let first = tokio::time::timeout_at(deadline, clients.execution.clone().execute(req)).await;
        let mut stream = match first {
            Err(_) => {
                return Err(ExecError(format!("Execute not answered within {:.1}s", params.budget.as_secs_f64())))
            }
            Ok(Err(status)) => match transient(&status, &mut retries, "Execute").await {
                Some(()) => continue 'execute,
                None => return classify_status(status, "Execute", retries),
            },
            Ok(Ok(resp)) => resp.into_inner(),
        };
        let mut resumes = 0;
        loop {
            // Once requeued and executing again, it has REQUEUE_GRACE to finish.
            let requeue_deadline = trace.requeued_at.map(|at| (at + REQUEUE_GRACE).min(deadline));
            let next = tokio::time::timeout_at(requeue_deadline.unwrap_or(deadline), stream.message()).await;
            let interrupted = match next {
                Err(_) if requeue_deadline.is_some_and(|r| r < deadline) => {
                    return Ok(requeued(clients, trace, start).await)
                }
                Err(_) => return out_of_budget(clients, trace, start).await.map_err(ExecError),
                Ok(Ok(Some(op))) => {
                    trace.messages += 1;
                    if trace.operation.is_none() && !op.name.is_empty() {
                        inflight.set().insert(op.name.clone());
                    }
                    let observed = observe(op, trace)?;
                    // The grace starts when the retry runs again, not when it
                    // is queued: on a busy cluster a requeued action may wait
                    // its turn for long, and that is no finding.
                    let retry_running = requeues(trace) > 0 && trace.stages.last().is_some_and(|s| s == "EXECUTING");
                    if retry_running && trace.requeued_at.is_none() {
                        trace.requeued_at = Some(tokio::time::Instant::now());
                    }
                    match observed {
                        None if requeues(trace) >= REQUEUE_LIMIT => {
                            return Ok(requeued(clients, trace, start).await);
                        }
                        None => continue,
                        Some(done) => match done.transient_code() {
                            Some(code) if retries < RETRY_LIMIT => {
                                retries += 1;
                                reapi_client::retry::record("Execute (operation status)", code);
                                tokio::time::sleep(reapi_client::retry::pause(retries)).await;
                                forget_operation(trace, inflight);
                                continue 'execute;
                            }
                            Some(_) => {
                                return Err(ExecError(format!(
                                    "the operation ended {} after {retries} retries: {}",
                                    done.describe(),
                                    transient_words(done.error_code())
                                )))
                            }
                            None => return Ok(done),
                        },
                    }
                }
                Ok(Ok(None)) => "the stream ended before the operation was done".to_string(),
                Ok(Err(status)) if trace.operation.is_none() => {
                    match transient(&status, &mut retries, "Execute (stream)").await {
                        Some(()) => continue 'execute,
                        None => return classify_status(status, "Execute", retries),
                    }
                }
                Ok(Err(status)) if is_retryable(&status) || is_undecided(&status) => {
                    format!("the stream broke: {:?}: {}", status.code(), status.message())
                }
                Ok(Err(status)) => return Ok(rejected(&status, status.message().to_string())),
            };
            // BuildStream resumes with WaitExecution when the stream ends early.
            let Some(name) = trace.operation.clone() else {
                return Err(ExecError(format!("{interrupted} without naming an operation")));
            };
            loop {
                resumes += 1;
                if resumes > MAX_RESUMES {
                    return Err(ExecError(format!("{interrupted}; gave up after {MAX_RESUMES} WaitExecution calls")));
                }
                trace.wait_calls += 1;
                let mut req = tonic::Request::new(WaitExecutionRequest { name: name.clone() });
                req.set_timeout(deadline.saturating_duration_since(Instant::now()) + clients.rpc_timeout);
                match tokio::time::timeout_at(deadline, clients.execution.clone().wait_execution(req)).await {
                    Err(_) => return out_of_budget(clients, trace, start).await.map_err(ExecError),
                    Ok(Ok(resp)) => {
                        stream = resp.into_inner();
                        break;
                    }
                    Ok(Err(status)) if is_retryable(&status) => {
                        reapi_client::retry::record_status("WaitExecution", &status);
                        tokio::time::sleep(reapi_client::retry::pause(resumes as u32)).await;
                    }
                    Ok(Err(status)) if is_undecided(&status) => {
                        return Err(ExecError(format!("{interrupted}; WaitExecution: {}", undecided_words(&status))))
                    }
                    Ok(Err(status)) => {
                        let message =
                            format!("{interrupted}; WaitExecution answered {:?}: {}", status.code(), status.message());
                        return Ok(rejected(&status, message));
                    }
                }
            }
        }
    }
}

/// Calls Execute as `follow` does, again while the answer is transient,
/// each attempt and the pauses within `deadline` (an attempt's `grpc-timeout`
/// is `timeout`); a deadline that passes is DEADLINE_EXCEEDED, undecided.
pub async fn call_execute(
    clients: &Clients,
    request: &ExecuteRequest,
    timeout: Duration,
    deadline: Instant,
) -> Result<tonic::Streaming<Operation>, tonic::Status> {
    let attempts = reapi_client::retry::retrying("Execute", || {
        let mut req = tonic::Request::new(request.clone());
        req.set_timeout(timeout);
        let mut client = clients.execution.clone();
        async move { client.execute(req).await }
    });
    match tokio::time::timeout_at(deadline, attempts).await {
        Err(_) => Err(tonic::Status::deadline_exceeded("Execute was not answered in time")),
        Ok(r) => r.map(tonic::Response::into_inner),
    }
}

pub use reapi_client::retry::is_retryable;
pub use reapi_client::status::{is_transport, is_undecided, is_undecodable};

/// Retries after a transient answer, as [`reapi_client::retry`] counts them.
const RETRY_LIMIT: u32 = reapi_client::retry::RETRIES;

/// When `status` is worth another Execute and retries are left: records it
/// and waits the pause. `None`: the answer stands.
async fn transient(status: &tonic::Status, retries: &mut u32, call: &str) -> Option<()> {
    if !is_retryable(status) || *retries >= RETRY_LIMIT {
        return None;
    }
    *retries += 1;
    reapi_client::retry::record_status(call, status);
    tokio::time::sleep(reapi_client::retry::pause(*retries)).await;
    Some(())
}

/// A retried operation is a new one: the old name is neither followed nor
/// cancelled on its behalf any more (the server may deduplicate to it anyway).
fn forget_operation(trace: &mut Trace, inflight: &Inflight) {
    if let Some(name) = trace.operation.take() {
        inflight.untrack(&name);
    }
    trace.stages.clear();
    trace.requeued_at = None;
}

fn undecided_words(status: &tonic::Status) -> String {
    let why = reapi_client::status::undecided(status).map(|u| u.describe()).unwrap_or("undecided");
    format!("{why} ({:?}: {})", status.code(), status.message())
}

fn transient_words(code: Option<Code>) -> &'static str {
    code.map(|c| c as i32)
        .and_then(reapi_client::status::undecided_code)
        .map(|u| u.describe())
        .unwrap_or("a transient condition")
}

/// The answer to Execute that stands: the server's own is a rejection; one
/// the status rule leaves undecided is the harness's ERROR.
fn classify_status(status: tonic::Status, call: &str, retries: u32) -> Result<Outcome, ExecError> {
    if is_undecided(&status) {
        let after = if retries > 0 { format!(" after {retries} retries") } else { String::new() };
        return Err(ExecError(format!("{call}{after}: {}", undecided_words(&status))));
    }
    Ok(rejected(&status, status.message().to_string()))
}

/// Records an operation message; returns the outcome when it is done.
pub(crate) fn observe(op: Operation, trace: &mut Trace) -> Result<Option<Outcome>, ExecError> {
    if !op.name.is_empty() {
        trace.operation = Some(op.name.clone());
    }
    let message = trace.messages;
    match &op.metadata {
        None => trace.metadata_problems.push(format!("message {message}: no metadata")),
        Some(meta) if !meta.type_url.ends_with("build.bazel.remote.execution.v2.ExecuteOperationMetadata") => {
            trace.metadata_problems.push(format!("message {message}: metadata of type `{}`", meta.type_url))
        }
        Some(meta) => match ExecuteOperationMetadata::decode(&meta.value[..]) {
            Err(e) => trace.metadata_problems.push(format!("message {message}: metadata does not decode: {e}")),
            Ok(m) => {
                if let Some(want) = &trace.action {
                    if m.action_digest.as_ref() != Some(want) {
                        let named = m.action_digest.as_ref().map_or_else(|| "no action".into(), crate::digest::show);
                        trace.metadata_problems.push(format!("message {message}: metadata names {named}"));
                    }
                }
                let stage = execution_stage::Value::try_from(m.stage)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| format!("stage {}", m.stage));
                let completed = m.stage == execution_stage::Value::Completed as i32;
                if op.done != completed {
                    trace.done_problems.push(format!("message {message}: done {} at stage {stage}", op.done));
                }
                if trace.stages.last() != Some(&stage) {
                    trace.stages.push(stage);
                }
            }
        },
    }
    if !op.done {
        return Ok(None);
    }
    match op.result {
        None => Err(ExecError("the final Operation has neither `response` nor `error`".into())),
        Some(operation::Result::Error(status)) => Ok(Some(Outcome::Failed {
            code: status.code,
            details: details_of(&status),
            message: status.message,
            operation_error: true,
            result: None,
        })),
        Some(operation::Result::Response(any)) => {
            if !any.type_url.ends_with("build.bazel.remote.execution.v2.ExecuteResponse") {
                return Err(ExecError(format!(
                    "the final Operation's response is a `{}`, not an ExecuteResponse",
                    any.type_url
                )));
            }
            let response = ExecuteResponse::decode(&any.value[..])
                .map_err(|e| ExecError(format!("the ExecuteResponse does not decode: {e}")))?;
            let status = response.status.clone().unwrap_or_default();
            if status.code != 0 {
                return Ok(Some(Outcome::Failed {
                    code: status.code,
                    details: details_of(&status),
                    message: status.message,
                    operation_error: false,
                    result: response.result.map(Box::new),
                }));
            }
            if response.result.is_none() {
                return Err(ExecError("the ExecuteResponse has an OK status but no result".into()));
            }
            Ok(Some(Outcome::Completed { response: Box::new(response) }))
        }
    }
}

/// Asks the server to cancel operation `name` (nothing for an empty name).
pub async fn cancel(clients: &Clients, name: &str) -> Result<(), tonic::Status> {
    if name.is_empty() {
        return Ok(());
    }
    let req = clients.request(CancelOperationRequest { name: name.to_string() });
    clients.call(clients.operations.clone().cancel_operation(req)).await.map(|_| ())
}

/// Times an operation may go from EXECUTING back to an earlier stage before
/// the harness calls it a requeue loop. One is a server retrying elsewhere
/// after losing a worker; a second is a pattern (Buildfarm requeues for ever
/// an operation its worker fails), and waiting out the budget would add
/// nothing.
pub const REQUEUE_LIMIT: usize = 2;

/// How long an operation may take to finish once it runs again after its
/// first requeue before it counts as a requeue loop (Buildfarm's second
/// attempt hangs; the suites' actions take milliseconds).
pub const REQUEUE_GRACE: Duration = Duration::from_secs(5);

/// How often the stages went from EXECUTING back to CACHE_CHECK or QUEUED
/// (Buildfarm: EXECUTING → CACHE_CHECK → QUEUED → EXECUTING).
pub fn requeues(trace: &Trace) -> usize {
    trace.stages.windows(2).filter(|w| w[0] == "EXECUTING" && (w[1] == "QUEUED" || w[1] == "CACHE_CHECK")).count()
}

/// A requeue loop: cancel and report it.
async fn requeued(clients: &Clients, trace: &Trace, start: Instant) -> Outcome {
    let name = trace.operation.clone().unwrap_or_default();
    let cancel = match cancel(clients, &name).await {
        Ok(()) => "cancelled".to_string(),
        Err(s) => format!("CancelOperation answered {:?}", s.code()),
    };
    Outcome::Requeued { waited: start.elapsed(), requeues: requeues(trace), cancel }
}

/// The budget is spent: cancel and report where the operation was.
async fn out_of_budget(clients: &Clients, trace: &Trace, start: Instant) -> Result<Outcome, String> {
    let waited = start.elapsed();
    let Some(name) = trace.operation.clone() else {
        return Err(format!("no Operation received within {:.1}s", waited.as_secs_f64()));
    };
    let cancel = match cancel(clients, &name).await {
        Ok(()) => "cancelled".to_string(),
        Err(s) => format!("CancelOperation answered {:?}", s.code()),
    };
    // The last stage reported is where the operation is; an earlier EXECUTING
    // followed by QUEUED (a retry on another worker) is queued again.
    let executing = trace.stages.last().is_some_and(|s| s == "EXECUTING" || s == "COMPLETED");
    Ok(if executing { Outcome::Executing { waited, cancel } } else { Outcome::Queued { waited, cancel } })
}
