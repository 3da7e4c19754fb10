//! Execution and Operations services: operations, the queue, and running
//! one action from its input root to its ActionResult.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::longrunning::{self as lr, operation};
use bazel_remote_apis::google::protobuf::{Any, Empty, Timestamp};
use bazel_remote_apis::google::rpc;
use prost::bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::bots::{self, JobEvent};
use super::cas::{check_digest_in, rpc_status, BlobView, BoxStream};
use super::defects::{Defect, Defects};
use super::faults::ConnectionHandle;
use super::outputs::{collect_outputs, OutputKind, OutputKindMismatch, OutputRequest, WantedProperties};
use super::platform::{place, requested_platform, Placement, RunAs};
use super::sandbox::{self, join_relative, resolve_in_root, RunEnd, SandboxSpec};
use super::{lock, Shared};
use reapi_client::digest_function::Function;
use tonic_types::pb::{precondition_failure::Violation, PreconditionFailure};

const EXECUTE_RESPONSE_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse";
const METADATA_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata";
const PRECONDITION_FAILURE_TYPE: &str = "type.googleapis.com/google.rpc.PreconditionFailure";
const WORKER_NAME: &str = "defect-server";
/// Action.timeout when the Action sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// stdout/stderr smaller than this are also inlined in the ActionResult.
const INLINE_LOG_LIMIT: usize = 1024 * 1024;
/// How often an operation waiting for a bot is re-sent to its watchers.
const QUEUE_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long `stream-cut` waits so the first message reaches the client.
const CUT_DELAY: Duration = Duration::from_millis(300);
/// How long a stream may stay silent under `idle-stream-reset`.
const IDLE_RESET: Duration = Duration::from_secs(1);

fn now() -> Timestamp {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: since_epoch.as_secs() as i64, nanos: since_epoch.subsec_nanos() as i32 }
}

fn ok_status() -> Option<rpc::Status> {
    Some(rpc_status(Code::Ok, ""))
}

fn failed(code: Code, message: impl Into<String>) -> re::ExecuteResponse {
    re::ExecuteResponse { status: Some(rpc_status(code, message)), ..Default::default() }
}

// ---------------------------------------------------------------------------
// Operations

/// One operation: its latest state, the streams following it, and a cancel
/// switch its runner watches.
pub(crate) struct OperationEntry {
    name: String,
    action_digest: re::Digest,
    /// Latest state and followers change together, so a follower sees every
    /// state from the moment it starts following.
    states: Mutex<States>,
    cancel: watch::Sender<bool>,
}

struct States {
    latest: lr::Operation,
    followers: Vec<mpsc::UnboundedSender<lr::Operation>>,
}

impl OperationEntry {
    fn new(action_digest: &re::Digest) -> Arc<OperationEntry> {
        let name = format!("operations/{}", uuid::Uuid::new_v4());
        let initial = progress(&name, action_digest, re::execution_stage::Value::Queued);
        Arc::new(OperationEntry {
            name,
            action_digest: action_digest.clone(),
            states: Mutex::new(States { latest: initial, followers: Vec::new() }),
            cancel: watch::Sender::new(false),
        })
    }

    fn current(&self) -> lr::Operation {
        lock(&self.states).latest.clone()
    }

    /// The current state, then every later one until done.
    fn follow_states(&self) -> mpsc::UnboundedReceiver<lr::Operation> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut states = lock(&self.states);
        let _ = tx.send(states.latest.clone());
        if !states.latest.done {
            states.followers.push(tx);
        }
        rx
    }

    /// How many streams still follow the operation.
    fn follower_count(&self) -> usize {
        let mut states = lock(&self.states);
        states.followers.retain(|f| !f.is_closed());
        states.followers.len()
    }

    fn set_state(&self, operation: lr::Operation) {
        let mut states = lock(&self.states);
        states.followers.retain(|f| f.send(operation.clone()).is_ok());
        if operation.done {
            // Dropping the senders ends every follower's channel.
            states.followers.clear();
        }
        states.latest = operation;
    }

    fn progress(&self, stage: re::execution_stage::Value) -> lr::Operation {
        progress(&self.name, &self.action_digest, stage)
    }

    /// Publishes a not-yet-done state (sent even when unchanged: it is also
    /// the queue's heartbeat).
    fn publish(&self, stage: re::execution_stage::Value) {
        self.set_state(self.progress(stage));
    }

    /// Publishes the final state. `operation-error` and `garbage` are
    /// applied here, so every way of reading the operation sees them.
    fn finish(&self, response: re::ExecuteResponse, defects: &Defects) {
        let result = if defects.has(Defect::OperationError) {
            let error = match response.status {
                Some(status) if status.code != Code::Ok as i32 => status,
                _ => rpc_status(Code::Unknown, "execution finished"),
            };
            operation::Result::Error(error)
        } else if defects.has(Defect::Garbage) {
            // A leading 0x00 is field number 0, which no protobuf decoder accepts.
            let mut junk = vec![0u8];
            junk.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            operation::Result::Response(Any { type_url: EXECUTE_RESPONSE_TYPE.into(), value: Bytes::from(junk) })
        } else {
            operation::Result::Response(Any {
                type_url: EXECUTE_RESPONSE_TYPE.into(),
                value: Bytes::from(response.encode_to_vec()),
            })
        };
        let last_stage = if defects.has(Defect::DoneWhileExecuting) {
            re::execution_stage::Value::Executing
        } else {
            re::execution_stage::Value::Completed
        };
        let mut done = self.progress(last_stage);
        done.done = true;
        done.result = Some(result);
        self.set_state(done);
    }
}

fn progress(name: &str, action_digest: &re::Digest, stage: re::execution_stage::Value) -> lr::Operation {
    let metadata = re::ExecuteOperationMetadata {
        stage: stage as i32,
        action_digest: Some(action_digest.clone()).filter(|d| !d.hash.is_empty()),
        digest_function: re::digest_function::Value::Sha256 as i32,
        ..Default::default()
    };
    lr::Operation {
        name: name.to_string(),
        metadata: Some(Any { type_url: METADATA_TYPE.into(), value: Bytes::from(metadata.encode_to_vec()) }),
        done: false,
        result: None,
    }
}

impl Shared {
    fn operation(&self, name: &str) -> Result<Arc<OperationEntry>, Status> {
        lock(&self.operations).get(name).cloned().ok_or_else(|| Status::not_found(format!("no operation {name:?}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Execute,
    WaitExecution,
}

/// The stream of an operation's states for one Execute or WaitExecution
/// call, until it is done, the client goes away or the server stops. The
/// `stream-closed-early` and `stream-cut` defects act here.
fn follow(
    shared: Arc<Shared>,
    entry: Arc<OperationEntry>,
    mut states: mpsc::UnboundedReceiver<lr::Operation>,
    connection: Option<ConnectionHandle>,
    caller: Caller,
) -> BoxStream<lr::Operation> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let defects = &shared.defects;
        if caller == Caller::Execute && (defects.has(Defect::StreamClosedEarly) || defects.has(Defect::StreamCut)) {
            // One message that is not done yet, then the defect.
            if tx.send(Ok(entry.progress(re::execution_stage::Value::Queued))).await.is_err() {
                return;
            }
            if defects.has(Defect::StreamCut) {
                tokio::time::sleep(CUT_DELAY).await;
                match &connection {
                    Some(connection) => connection.cut(),
                    None => {
                        let _ = tx.send(Err(Status::unavailable("stream cut"))).await;
                    }
                }
                // Something more to write, so the server notices the cut.
                let _ = tx.send(Ok(entry.current())).await;
            }
            return;
        }
        let idle_reset = defects.has(Defect::IdleStreamReset);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(IDLE_RESET), if idle_reset => {
                    let _ = tx.send(Err(Status::internal("stream reset: idle for too long"))).await;
                    return;
                }
                next = states.recv() => {
                    let Some(operation) = next else { return };
                    let done = operation.done;
                    if tx.send(Ok(operation)).await.is_err() {
                        return;
                    }
                    if done && defects.has(Defect::StreamOpenAfterDone) {
                        // Held open until the client or the server goes.
                        tokio::select! {
                            _ = tx.closed() => {}
                            _ = shared.until_shutdown() => {}
                        }
                    }
                    if done {
                        return;
                    }
                }
                _ = tx.closed() => return,
                _ = shared.until_shutdown() => {
                    let _ = tx.send(Err(Status::unavailable("server is stopping"))).await;
                    return;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

// ---------------------------------------------------------------------------
// Execution service

pub(crate) struct ExecutionService {
    pub(crate) shared: Arc<Shared>,
}

/// An accepted action, read from the CAS.
struct Job {
    /// The digest function of the action, its inputs and its outputs.
    function: Function,
    action_digest: re::Digest,
    action: re::Action,
    command: re::Command,
    input_root: re::Digest,
    placement: Placement,
    queued_at: Timestamp,
}

enum Prepared {
    Job(Box<Job>),
    /// Finished before running, e.g. the Action itself is missing.
    Finished(Box<re::ExecuteResponse>),
}

/// The response for inputs missing from the CAS (spec: FAILED_PRECONDITION
/// with a PreconditionFailure, one MISSING violation per blob).
fn missing_inputs(missing: &[re::Digest], defects: &Defects) -> re::ExecuteResponse {
    let listed: Vec<String> = missing.iter().map(|d| format!("blobs/{}/{}", d.hash, d.size_bytes)).collect();
    let message = format!("missing from the CAS: {}", listed.join(", "));
    if defects.has(Defect::WrongStatusCodes) {
        return failed(Code::Internal, message);
    }
    let detail = PreconditionFailure {
        violations: listed
            .into_iter()
            .map(|subject| Violation { r#type: "MISSING".into(), subject, description: String::new() })
            .collect(),
    };
    let mut status = rpc_status(Code::FailedPrecondition, message);
    status.details.push(Any { type_url: PRECONDITION_FAILURE_TYPE.into(), value: Bytes::from(detail.encode_to_vec()) });
    re::ExecuteResponse { status: Some(status), ..Default::default() }
}

fn read_message<M: Message + Default>(
    blobs: &BlobView<'_>,
    digest: &re::Digest,
    what: &str,
) -> Result<Option<M>, Status> {
    match blobs.get_message::<M>(digest) {
        None => Ok(None),
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(e)) => {
            Err(Status::invalid_argument(format!("{what} {}/{} does not decode: {e}", digest.hash, digest.size_bytes)))
        }
    }
}

/// Reads and checks an action. `Err` is the gRPC status Execute fails with
/// at once; the env-sorting defect and platform matching act here.
/// The output node properties this server knows (as its capabilities say).
pub(crate) const SUPPORTED_NODE_PROPERTIES: &[&str] = &["mtime", "unix_mode"];

fn prepare(shared: &Shared, function: Function, action_digest: &re::Digest) -> Result<Prepared, Status> {
    let defects = &shared.defects;
    let blobs = shared.blobs.view(function);
    let Some(action) = read_message::<re::Action>(&blobs, action_digest, "Action")? else {
        return Ok(Prepared::Finished(Box::new(missing_inputs(std::slice::from_ref(action_digest), defects))));
    };
    let command_digest = blobs.check_digest(action.command_digest.as_ref(), "Action.command_digest")?;
    let input_root = blobs.check_digest(action.input_root_digest.as_ref(), "Action.input_root_digest")?;
    let Some(command) = read_message::<re::Command>(&blobs, &command_digest, "Command")? else {
        if defects.has(Defect::MissingCommandInternal) {
            return Err(Status::internal(format!("cannot read Command {}", command_digest.hash)));
        }
        return Ok(Prepared::Finished(Box::new(missing_inputs(&[command_digest], defects))));
    };
    if command.arguments.is_empty() {
        return Err(Status::invalid_argument("Command.arguments is empty"));
    }
    if let Some(unknown) =
        command.output_node_properties.iter().find(|p| !SUPPORTED_NODE_PROPERTIES.contains(&p.as_str()))
    {
        if !defects.has(Defect::UnknownNodePropertiesIgnored) {
            return Err(Status::invalid_argument(format!("output node property {unknown:?} is not supported")));
        }
    }
    if command.arguments.iter().any(|a| a.contains('\0')) {
        return Err(Status::invalid_argument("Command.arguments holds a NUL byte"));
    }
    for variable in &command.environment_variables {
        if variable.name.is_empty() || variable.name.contains(['=', '\0']) || variable.value.contains('\0') {
            return Err(Status::invalid_argument(format!("invalid environment variable {:?}", variable.name)));
        }
    }
    // The spec says MUST be sorted, but BuildStream sends PWD last: a
    // faithful server takes them as they come.
    if defects.has(Defect::UnsortedEnvRejected) {
        let sorted = command.environment_variables.windows(2).all(|w| w[0].name <= w[1].name);
        if !sorted {
            return Err(Status::invalid_argument("environment variables are not sorted by name"));
        }
    }
    if defects.has(Defect::ExecutesNothing) {
        return Err(Status::failed_precondition("no worker can run this action"));
    }
    let placement = place(&action, &command, defects, &shared.host_isa)?;
    Ok(Prepared::Job(Box::new(Job {
        function,
        action_digest: action_digest.clone(),
        action,
        command,
        input_root,
        placement,
        queued_at: now(),
    })))
}

#[tonic::async_trait]
impl re::execution_server::Execution for ExecutionService {
    type ExecuteStream = BoxStream<lr::Operation>;

    async fn execute(&self, request: Request<re::ExecuteRequest>) -> Result<Response<Self::ExecuteStream>, Status> {
        self.shared.fault_gate().await?;
        let connection = request.extensions().get::<ConnectionHandle>().cloned();
        let request = request.into_inner();
        let function = self
            .shared
            .exec_function(request.digest_function, request.action_digest.as_ref().map(|d| d.hash.as_str()))?;
        let action_digest = check_digest_in(function, request.action_digest.as_ref(), "action_digest")?;
        let defects = &self.shared.defects;

        if defects.has(Defect::ExecuteUnavailable) {
            return Err(tonic::Status::unavailable("no worker can take this action now"));
        }
        let look_in_cache = !request.skip_cache_lookup
            || defects.has(Defect::CacheIgnoresSkipLookup)
            || defects.has(Defect::CachedResultUnflagged);
        let cached = if look_in_cache { self.shared.cached_result_in(function, &action_digest) } else { None };
        // `metadata-without-digest`: the metadata names no action.
        let named =
            if defects.has(Defect::MetadataWithoutDigest) { re::Digest::default() } else { action_digest.clone() };
        let entry = OperationEntry::new(&named);
        // Followed before anything runs, so the stream shows every stage.
        let states = entry.follow_states();
        match cached {
            Some(result) => entry.finish(
                re::ExecuteResponse {
                    result: Some(result),
                    cached_result: !defects.has(Defect::CachedResultUnflagged),
                    status: ok_status(),
                    ..Default::default()
                },
                defects,
            ),
            None => match prepare(&self.shared, function, &action_digest)? {
                Prepared::Finished(response) => entry.finish(*response, defects),
                Prepared::Job(job) => {
                    tokio::spawn(run_operation(self.shared.clone(), entry.clone(), *job));
                }
            },
        }
        lock(&self.shared.operations).insert(entry.name.clone(), entry.clone());
        Ok(Response::new(follow(self.shared.clone(), entry, states, connection, Caller::Execute)))
    }

    type WaitExecutionStream = BoxStream<lr::Operation>;

    async fn wait_execution(
        &self,
        request: Request<re::WaitExecutionRequest>,
    ) -> Result<Response<Self::WaitExecutionStream>, Status> {
        self.shared.fault_gate().await?;
        if self.shared.defects.has(Defect::StreamClosedEarly) {
            return Err(Status::unimplemented("WaitExecution is not implemented"));
        }
        let name = request.into_inner().name;
        if self.shared.defects.has(Defect::OperationNamesRouted) && !own_form(&name) {
            return Err(Status::invalid_argument(format!("cannot route operation name {name:?}")));
        }
        let entry = self.shared.operation(&name).map_err(|not_found| {
            if self.shared.defects.has(Defect::WaitUnknownInvalid) {
                Status::invalid_argument(not_found.message().to_string())
            } else {
                not_found
            }
        })?;
        let states = entry.follow_states();
        Ok(Response::new(follow(self.shared.clone(), entry, states, None, Caller::WaitExecution)))
    }
}

/// Whether `name` has the form of the names this server gives out.
fn own_form(name: &str) -> bool {
    name.strip_prefix("operations/").is_some_and(|id| uuid::Uuid::try_parse(id).is_ok())
}

/// Drives one operation from queued to done.
async fn run_operation(shared: Arc<Shared>, entry: Arc<OperationEntry>, job: Job) {
    let mut cancel = entry.cancel.subscribe();
    if shared.defects.has(Defect::ForeignIsaLateDispatch) {
        // Queued a while first, as a worker that picks foreign actions up late.
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = cancel.wait_for(|cancelled| *cancelled) => {}
        }
    }
    let run_here = match &job.placement {
        Placement::Run(run_as) => Some(*run_as),
        Placement::Queue(_) if own_worker_takes_queued(&shared, &job) => Some(RunAs::default()),
        Placement::Queue(_) => None,
    };
    let response = match (run_here, &job.placement) {
        (Some(_), _) if *cancel.borrow() => failed(Code::Cancelled, "cancelled"),
        (Some(run_as), _) => {
            entry.publish(re::execution_stage::Value::Executing);
            let response = run_action(&shared, &job, run_as, &mut cancel).await;
            let symlink_output = response.result.as_ref().is_some_and(|r| !r.output_symlinks.is_empty());
            let linked_output = response.result.is_some()
                && shared.defects.has(Defect::LinkedInputDirsRequeueLoop)
                && outputs_a_linked_input_dir(&shared, &job);
            if (symlink_output && shared.defects.has(Defect::RequeueLoop)) || linked_output {
                requeue_for_ever(&entry, &mut cancel).await
            } else {
                response
            }
        }
        (None, Placement::Queue(reason)) => wait_for_a_bot(&shared, &entry, &mut cancel, &job, reason).await,
        (None, Placement::Run(_)) => failed(Code::Internal, "a runnable job was not run"),
    };
    if should_cache(&job, &response, &shared.defects) {
        if let Some(result) = &response.result {
            let key = super::cas::key(job.function, &job.action_digest.hash);
            let mut cache = lock(&shared.action_cache);
            if shared.defects.has(Defect::AcNeverOverwrites) {
                cache.entry(key).or_insert_with(|| result.clone());
            } else {
                cache.insert(key, result.clone());
            }
            drop(cache);
            if shared.defects.has(Defect::AcHitBlobsEvicted) {
                // The CAS evicts on its own, the action cache keeps the entry.
                if let Some(stdout) = &result.stdout_digest {
                    shared.blobs.remove_in(job.function, stdout);
                }
            }
        }
    }
    entry.finish(response, &shared.defects);
}

/// Whether an output path is the input root or one of its top-level
/// directories: what Buildfarm's worker stages as links into its cache (its
/// default `linkedInputDirectories` matches a single path component), so
/// that the upload of such an output meets a link, at the path itself or,
/// for the root, just below it.
fn outputs_a_linked_input_dir(shared: &Shared, job: &Job) -> bool {
    let Ok(working_dir) = join_relative(&[], &job.command.working_directory) else { return false };
    let Ok(outputs) = output_requests(&job.command, &working_dir, &shared.defects) else { return false };
    let Ok(plan) = sandbox::plan_input_root(&shared.blobs.view(job.function), &job.input_root) else { return false };
    outputs.iter().any(|o| match o.components.as_slice() {
        [] => plan.has_top_level_dir(),
        [name] => plan.has_dir(name),
        _ => false,
    })
}

/// `requeue-loop`, as Buildfarm shows it: the worker fails uploading the
/// outputs, the server checks the cache and queues the operation again
/// (EXECUTING → CACHE_CHECK → QUEUED → EXECUTING), and the next attempt
/// never finishes, until the operation is cancelled or nobody follows it.
async fn requeue_for_ever(entry: &OperationEntry, cancel: &mut watch::Receiver<bool>) -> re::ExecuteResponse {
    for stage in [
        re::execution_stage::Value::CacheCheck,
        re::execution_stage::Value::Queued,
        re::execution_stage::Value::Executing,
    ] {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = cancel.wait_for(|cancelled| *cancelled) => return failed(Code::Cancelled, "cancelled"),
        }
        entry.publish(stage);
    }
    let mut unwatched = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = cancel.wait_for(|cancelled| *cancelled) => return failed(Code::Cancelled, "cancelled"),
        }
        entry.publish(re::execution_stage::Value::Executing);
        unwatched = if entry.follower_count() == 0 { unwatched + 1 } else { 0 };
        if unwatched >= 3 {
            return failed(Code::Cancelled, "abandoned while requeued");
        }
    }
}

/// Results are cached when the action ran to an OK status with exit code 0
/// and the Action allows it (caching a non-zero exit is legal, but it is not
/// what a faithful server for BuildStream does).
fn should_cache(job: &Job, response: &re::ExecuteResponse, defects: &Defects) -> bool {
    let status_ok = response.status.as_ref().is_none_or(|s| s.code == Code::Ok as i32);
    let exit_ok = response.result.as_ref().is_some_and(|r| r.exit_code == 0);
    if defects.has(Defect::CachesNonOk) {
        return response.result.is_some() && !job.action.do_not_cache;
    }
    if defects.has(Defect::CachesFailingResults) {
        return status_ok && response.result.is_some() && !job.action.do_not_cache;
    }
    status_ok && exit_ok && (!job.action.do_not_cache || defects.has(Defect::DoNotCacheIgnored))
}

/// Whether the server's own worker takes a job `place()` queued. To the
/// scheduler it is one more bot, with `OSFamily=linux` and `ISA=<host ISA>`,
/// always free and so first in line; `place()` already gave it every job it
/// matches, so faithfully it takes none of these, but with
/// `scheduler-ignores-platform` it takes them all.
fn own_worker_takes_queued(shared: &Shared, job: &Job) -> bool {
    let own_properties = [("OSFamily".to_string(), "linux".to_string()), ("ISA".to_string(), shared.host_isa.clone())];
    let requested = bots::pairs(requested_platform(&job.action, &job.command, &shared.defects));
    bots::bot_may_take(&shared.defects, &own_properties, &requested)
}

/// A job the server's own worker cannot take waits in the queue (re-sent
/// every second) for a bot of the Bots service, and ends with what the bot
/// reports; or when it is cancelled, nobody follows it any more, or the
/// server stops. Withdrawing it takes the lease away from its bot.
async fn wait_for_a_bot(
    shared: &Shared,
    entry: &OperationEntry,
    cancel: &mut watch::Receiver<bool>,
    job: &Job,
    reason: &str,
) -> re::ExecuteResponse {
    let platform = bots::pairs(requested_platform(&job.action, &job.command, &shared.defects));
    let mut ticket = shared.scheduler.enqueue(job.action.clone(), platform);
    let mut stage = re::execution_stage::Value::Queued;
    let mut unwatched_beats = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(QUEUE_HEARTBEAT) => {}
            event = ticket.next_event() => {
                stage = match event {
                    Some(JobEvent::Leased) => re::execution_stage::Value::Executing,
                    Some(JobEvent::Requeued) => re::execution_stage::Value::Queued,
                    Some(JobEvent::Finished(response)) => return *response,
                    None => return failed(Code::Internal, "the scheduler lost the job"),
                };
                entry.publish(stage);
                continue;
            }
            _ = cancel.wait_for(|cancelled| *cancelled) => return failed(Code::Cancelled, "cancelled"),
            _ = shared.until_shutdown() => return failed(Code::Unavailable, "server stopped"),
        }
        // Two beats in a row without a watcher: the client has gone away.
        unwatched_beats = if entry.follower_count() == 0 { unwatched_beats + 1 } else { 0 };
        if unwatched_beats >= 2 {
            return failed(Code::Cancelled, format!("abandoned while waiting for a bot ({reason})"));
        }
        entry.publish(stage);
    }
}

/// Runs `job` in a fresh directory under the server's work dir, removed after.
async fn run_action(
    shared: &Arc<Shared>,
    job: &Job,
    run_as: RunAs,
    cancel: &mut watch::Receiver<bool>,
) -> re::ExecuteResponse {
    let job_dir = shared.work_dir.join(uuid::Uuid::new_v4().to_string());
    // create_dir, not create_dir_all: once the server has removed its work
    // dir, nothing may bring it back.
    if let Err(e) = std::fs::create_dir(&job_dir) {
        return failed(Code::Internal, format!("cannot create the job directory: {e}"));
    }
    // `tmp-shared-serial`: one action at a time, like a single-slot worker.
    let _slot = if shared.defects.has(Defect::TmpSharedSerial) { Some(shared.serial_slot.lock().await) } else { None };
    let response = run_in_dir(shared, job, run_as, cancel, &job_dir).await;
    let _ = tokio::task::spawn_blocking(move || sandbox::remove_tree(&job_dir)).await;
    response
}

/// The outputs the Command asks for, checked against the input root and
/// (with `escaping-output-paths-refused`) the working directory.
fn output_requests(
    command: &re::Command,
    working_dir: &[String],
    defects: &Defects,
) -> Result<Vec<OutputRequest>, String> {
    #[allow(deprecated)] // legacy fields are honoured when output_paths is empty
    let requested: Vec<(&String, OutputKind)> = if defects.has(Defect::LegacyOutputsMerged) {
        let paths = command.output_paths.iter().map(|p| (p, OutputKind::Any));
        let files = command.output_files.iter().map(|p| (p, OutputKind::File));
        paths.chain(files).chain(command.output_directories.iter().map(|p| (p, OutputKind::Directory))).collect()
    } else if !command.output_paths.is_empty() || defects.has(Defect::LegacyOutputsIgnored) {
        command.output_paths.iter().map(|p| (p, OutputKind::Any)).collect()
    } else {
        let files = command.output_files.iter().map(|p| (p, OutputKind::File));
        files.chain(command.output_directories.iter().map(|p| (p, OutputKind::Directory))).collect()
    };
    let mut requests = Vec::with_capacity(requested.len());
    for (path, kind) in requested {
        let components = join_relative(working_dir, path).map_err(|e| format!("output {e}"))?;
        if defects.has(Defect::EscapingOutputPathsRefused) && !components.starts_with(working_dir) {
            return Err(format!("output path {path:?} leaves the working directory"));
        }
        requests.push(OutputRequest { requested: path.clone(), components, kind });
    }
    Ok(requests)
}

/// Stages the input root, creates what must exist before the command runs,
/// and returns the plan (or the response that ends the job).
fn stage(
    shared: &Shared,
    function: Function,
    input_root: &re::Digest,
    root: &Path,
    working_dir: &[String],
    outputs: &[OutputRequest],
) -> Result<sandbox::InputPlan, Box<re::ExecuteResponse>> {
    let defects = &shared.defects;
    let failed = |code, message: String| Box::new(failed(code, message));
    let blobs = shared.blobs.view(function);
    let plan = sandbox::plan_input_root(&blobs, input_root).map_err(|e| failed(Code::InvalidArgument, e))?;
    if !plan.missing.is_empty() && !defects.has(Defect::MissingBlobNotReported) {
        return Err(Box::new(missing_inputs(&plan.missing, defects)));
    }
    if defects.has(Defect::AbsoluteSymlinksRefused) && plan.has_absolute_symlink() {
        return Err(failed(Code::InvalidArgument, "symlinks with absolute targets are not allowed".into()));
    }
    let internal = |what: &str, e: std::io::Error| failed(Code::Internal, format!("{what}: {e}"));
    std::fs::create_dir(root).map_err(|e| internal("cannot create the input root", e))?;
    sandbox::materialise(root, &plan, &blobs, defects, || shared.is_shutting_down())
        .map_err(|e| failed(Code::InvalidArgument, format!("cannot stage the input root: {e}")))?;
    // Mount points bwrap needs, which a read-only root could not get later.
    for (name, mode) in [("proc", 0o755), ("dev", 0o755), ("tmp", 0o1777)] {
        let path = root.join(name);
        if std::fs::symlink_metadata(&path).is_err() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir(&path).map_err(|e| internal("cannot create a mount point", e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| internal("chmod", e))?;
        }
    }
    resolve_in_root(root, working_dir, true, true)
        .map_err(|e| failed(Code::InvalidArgument, format!("cannot create the working directory: {e}")))?;
    // Spec: the worker creates the directories leading up to each output.
    for output in outputs.iter().filter(|_| !defects.has(Defect::OutputParentsNotCreated)) {
        if let Some((_, parents)) = output.components.split_last() {
            resolve_in_root(root, parents, true, true).map_err(|e| {
                failed(
                    Code::InvalidArgument,
                    format!("cannot create the parents of output {:?}: {e}", output.requested),
                )
            })?;
        }
    }
    Ok(plan)
}

async fn run_in_dir(
    shared: &Arc<Shared>,
    job: &Job,
    run_as: RunAs,
    cancel: &mut watch::Receiver<bool>,
    job_dir: &Path,
) -> re::ExecuteResponse {
    let defects = &shared.defects;
    let command = &job.command;
    let working_dir = match join_relative(&[], &command.working_directory) {
        Ok(components) => components,
        Err(e) => return failed(Code::InvalidArgument, format!("working directory {e}")),
    };
    let outputs = match output_requests(command, &working_dir, defects) {
        Ok(outputs) => outputs,
        Err(e) => return failed(Code::InvalidArgument, e),
    };
    let root = job_dir.join("root");
    let fetch_started = now();
    let staged = {
        let (shared, input_root, root, function) = (shared.clone(), job.input_root.clone(), root.clone(), job.function);
        let (working_dir, outputs) = (working_dir.clone(), outputs.clone());
        tokio::task::spawn_blocking(move || stage(&shared, function, &input_root, &root, &working_dir, &outputs)).await
    };
    let plan = match staged {
        Ok(Ok(plan)) => plan,
        Ok(Err(response)) => return *response,
        Err(e) => return failed(Code::Internal, format!("staging failed: {e}")),
    };
    let fetch_completed = now();

    let spec = SandboxSpec {
        root: &root,
        plan: &plan,
        working_dir: &working_dir,
        arguments: &command.arguments,
        environment: &command.environment_variables,
        run_as,
    };
    let args = sandbox::bwrap_args(&spec, defects);
    let timeout = job
        .action
        .timeout
        .as_ref()
        .filter(|_| !defects.has(Defect::TimeoutIgnored))
        .filter(|t| t.seconds > 0 || t.nanos > 0)
        .map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.clamp(0, 999_999_999) as u32))
        // Buildfarm pads every timeout by 10 s; 6 s here keeps the matrix quick.
        .map(|t| if defects.has(Defect::TimeoutPadded) { t + Duration::from_secs(6) } else { t })
        .unwrap_or(DEFAULT_TIMEOUT);
    let (stdout_path, stderr_path) = (job_dir.join("stdout"), job_dir.join("stderr"));
    let execution_started = now();
    // bwrap exits 1 with a "bwrap: ..." line when it cannot set the sandbox up
    // (seen once under heavy load): that is the server's own failure, not the
    // command's exit code. Try again, then report it as INTERNAL.
    let mut attempts = 0;
    let end = loop {
        attempts += 1;
        let end = match sandbox::run_bwrap(shared, args.clone(), &stdout_path, &stderr_path, timeout, cancel).await {
            Ok(end) => end,
            Err(e) => return failed(Code::Internal, format!("cannot run {}: {e}", sandbox::BWRAP)),
        };
        let setup_error = std::fs::read_to_string(&stderr_path)
            .ok()
            .filter(|text| end == RunEnd::Exited(1) && text.starts_with("bwrap:"));
        match setup_error {
            Some(_) if attempts < 3 => continue,
            Some(text) => return failed(Code::Internal, format!("sandbox setup failed: {}", text.trim())),
            None => break end,
        }
    };
    let execution_completed = now();
    let (exit_code, status) = match end {
        RunEnd::Exited(code) => (code, rpc_status(Code::Ok, "")),
        RunEnd::TimedOut => {
            (128 + libc::SIGKILL, rpc_status(Code::DeadlineExceeded, format!("timed out after {timeout:?}")))
        }
        RunEnd::Cancelled => return failed(Code::Cancelled, "cancelled"),
        RunEnd::ServerStopping => return failed(Code::Unavailable, "server stopped"),
    };

    let upload_started = now();
    let collected = {
        let shared = shared.clone();
        let root = root.clone();
        // `outputs-digested-sha256`: the worker digests every output with its default.
        let function = if shared.defects.has(Defect::OutputsDigestedSha256) { Function::Sha256 } else { job.function };
        let wanted = if shared.defects.has(Defect::MtimeIgnored) {
            WantedProperties::default()
        } else {
            let mut wanted = WantedProperties::from_command(command);
            wanted.constant_mtime = shared.defects.has(Defect::ConstantOutputMtime);
            wanted
        };
        tokio::task::spawn_blocking(move || {
            collect_result(&shared, function, &root, &outputs, wanted, exit_code, &stdout_path, &stderr_path)
        })
        .await
    };
    let mut result = match collected {
        Ok(Ok(result)) => result,
        Ok(Err(e)) if OutputKindMismatch::of(&e).is_some() => return failed(Code::FailedPrecondition, e.to_string()),
        Ok(Err(e)) => return failed(Code::Internal, format!("collecting outputs failed: {e}")),
        Err(e) => return failed(Code::Internal, format!("collecting outputs failed: {e}")),
    };
    result.execution_metadata = Some(re::ExecutedActionMetadata {
        worker: WORKER_NAME.into(),
        queued_timestamp: Some(job.queued_at),
        worker_start_timestamp: Some(fetch_started),
        input_fetch_start_timestamp: Some(fetch_started),
        input_fetch_completed_timestamp: Some(fetch_completed),
        execution_start_timestamp: Some(execution_started),
        execution_completed_timestamp: Some(execution_completed),
        output_upload_start_timestamp: Some(upload_started),
        output_upload_completed_timestamp: Some(now()),
        worker_completed_timestamp: Some(now()),
        ..Default::default()
    });
    re::ExecuteResponse { result: Some(result), cached_result: false, status: Some(status), ..Default::default() }
}

/// Uploads logs and outputs into an ActionResult. `outputs-dropped-on-failure`
/// and `stdout-truncated` act here.
#[allow(clippy::too_many_arguments)]
fn collect_result(
    shared: &Shared,
    function: Function,
    root: &Path,
    outputs: &[OutputRequest],
    wanted: WantedProperties,
    exit_code: i32,
    stdout_path: &Path,
    stderr_path: &Path,
) -> std::io::Result<re::ActionResult> {
    let defects = &shared.defects;
    let mut result = re::ActionResult { exit_code, ..Default::default() };
    if exit_code != 0 && defects.has(Defect::OutputsDroppedOnFailure) {
        return Ok(result);
    }
    let mut stdout = std::fs::read(stdout_path)?;
    if defects.has(Defect::StdoutTruncated) {
        stdout.truncate(stdout.len() / 2);
    }
    let mut stderr = std::fs::read(stderr_path)?;
    if exit_code != 0 && defects.has(Defect::LogsDroppedOnFailure) {
        stdout.clear();
        stderr.clear();
    }
    let blobs = shared.blobs.view(function);
    result.stdout_digest = Some(blobs.put(Bytes::from(stdout.clone())));
    result.stderr_digest = Some(blobs.put(Bytes::from(stderr.clone())));
    // Never asked for by the harness, so inlined only with `logs-inlined-unasked`.
    if defects.has(Defect::LogsInlinedUnasked) {
        if stdout.len() < INLINE_LOG_LIMIT {
            result.stdout_raw = stdout;
        }
        if stderr.len() < INLINE_LOG_LIMIT {
            result.stderr_raw = stderr;
        }
    }
    collect_outputs(&blobs, root, outputs, wanted, defects, &mut result)?;
    Ok(result)
}

// ---------------------------------------------------------------------------
// Operations service

pub(crate) struct OperationsService {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl lr::operations_server::Operations for OperationsService {
    async fn list_operations(
        &self,
        _: Request<lr::ListOperationsRequest>,
    ) -> Result<Response<lr::ListOperationsResponse>, Status> {
        self.shared.fault_gate().await?;
        let operations: HashMap<String, Arc<OperationEntry>> = lock(&self.shared.operations).clone();
        Ok(Response::new(lr::ListOperationsResponse {
            operations: operations.values().map(|e| e.current()).collect(),
            ..Default::default()
        }))
    }

    async fn get_operation(
        &self,
        request: Request<lr::GetOperationRequest>,
    ) -> Result<Response<lr::Operation>, Status> {
        self.shared.fault_gate().await?;
        let entry = self.shared.operation(&request.into_inner().name)?;
        Ok(Response::new(entry.current()))
    }

    async fn delete_operation(&self, request: Request<lr::DeleteOperationRequest>) -> Result<Response<Empty>, Status> {
        self.shared.fault_gate().await?;
        let name = request.into_inner().name;
        match lock(&self.shared.operations).remove(&name) {
            Some(_) => Ok(Response::new(Empty {})),
            None => Err(Status::not_found(format!("no operation {name:?}"))),
        }
    }

    async fn cancel_operation(&self, request: Request<lr::CancelOperationRequest>) -> Result<Response<Empty>, Status> {
        self.shared.fault_gate().await?;
        if self.shared.defects.has(Defect::CancelUnimplementedWrongly) {
            return Err(Status::internal("cancellation failed"));
        }
        if self.shared.defects.has(Defect::CancelHangs) {
            std::future::pending::<()>().await;
        }
        let entry = self.shared.operation(&request.into_inner().name)?;
        if self.shared.defects.has(Defect::CancelIgnored) {
            return Ok(Response::new(Empty {}));
        }
        // The runner kills the sandbox (or leaves the queue) and finishes the
        // operation with CANCELLED; a finished operation stays as it is.
        entry.cancel.send_replace(true);
        Ok(Response::new(Empty {}))
    }

    async fn wait_operation(
        &self,
        request: Request<lr::WaitOperationRequest>,
    ) -> Result<Response<lr::Operation>, Status> {
        self.shared.fault_gate().await?;
        let request = request.into_inner();
        let entry = self.shared.operation(&request.name)?;
        let wait = request
            .timeout
            .map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.clamp(0, 999_999_999) as u32))
            .unwrap_or(Duration::from_secs(60));
        let mut states = entry.follow_states();
        let until_done = async {
            while let Some(operation) = states.recv().await {
                if operation.done {
                    break;
                }
            }
        };
        tokio::select! {
            _ = until_done => {}
            _ = tokio::time::sleep(wait) => {}
            _ = self.shared.until_shutdown() => {}
        }
        Ok(Response::new(entry.current()))
    }
}
