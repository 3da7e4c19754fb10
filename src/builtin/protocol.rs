//! Built-in checks on the REAPI behaviour BuildStream (through buildbox-casd)
//! relies on: resuming with WaitExecution, cancelling, the action cache, and
//! the errors a client acts on.

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, Digest, ExecuteRequest, GetActionResultRequest, WaitExecutionRequest,
};
use bazel_remote_apis::google::longrunning::CancelOperationRequest;
use prost::Message;
use tokio::time::Instant;
use tonic::Code;

use super::{run_to_completion, undecided, unmet};
use crate::digest;
use crate::execute::{self, ExecuteParams, Outcome, Trace};
use crate::harness::Harness;
use crate::suite::{ActionSpec, CheckSpec, OutcomeClass};
use crate::verdict::{StepError, Verdict};
use tonic_types::pb::{precondition_failure::Violation, PreconditionFailure};

/// Executes `prepared` again with `skip_cache_lookup` set.
async fn execute_skipping_cache(
    h: &Harness,
    prepared: &crate::action::PreparedAction,
) -> Result<Outcome, execute::ExecError> {
    let params = ExecuteParams {
        action_digest: prepared.action_digest.clone(),
        skip_cache_lookup: true,
        budget: h.options.timeout,
    };
    execute::execute(h.clients(), &params, &h.inflight).await.0
}

/// What identifies a run's stdout. The probe prints its start time, so a new
/// run never prints the same bytes: equal stdout means the same run's result.
fn stdout_of(r: &ActionResult) -> (Option<Digest>, Vec<u8>) {
    (r.stdout_digest.clone(), r.stdout_raw.to_vec())
}

fn stdout_of_outcome(o: &Outcome) -> Option<(Option<Digest>, Vec<u8>)> {
    o.result().map(stdout_of)
}

/// Passes when the action cache has no entry for `action`; `what` names the
/// result that must not be cached.
async fn not_cached(
    h: &Harness,
    check: &CheckSpec,
    action: &Digest,
    outcome: &Outcome,
    what: &str,
) -> Result<Verdict, Verdict> {
    match super::action_cache::get(h, action).await? {
        None => Ok(Verdict::pass(format!("{}; GetActionResult: NOT_FOUND", outcome.describe()))),
        Some(_) => Ok(Verdict::new(unmet(check), format!("the result of {what} was cached")).with(
            "GetActionResult",
            Some("NOT_FOUND".into()),
            "a cached ActionResult",
        )),
    }
}

/// The check's action with a file no other action has, so its digest is
/// this check's alone (its cache entries too).
fn with_nonce(check: &CheckSpec) -> ActionSpec {
    let mut spec = check.action.clone();
    spec.input_root.push(crate::suite::EntrySpec::File {
        file: "reapi-conformance-nonce".into(),
        content: uuid::Uuid::new_v4().to_string(),
        executable: false,
        mtime: None,
    });
    spec
}

fn spec_with(check: &CheckSpec, probe: &[&str]) -> ActionSpec {
    let mut spec = check.action.clone();
    if spec.probe.is_empty() {
        spec.probe = probe.iter().map(|s| s.to_string()).collect();
    }
    spec
}

/// Starts Execute and returns the name from the first Operation, dropping the stream.
async fn first_operation(h: &Harness, check: &CheckSpec, spec: &ActionSpec) -> Result<(String, bool), Verdict> {
    operation_at(h, check, spec, Duration::ZERO).await
}

/// Whether an Operation's metadata says EXECUTING.
fn executing(op: &bazel_remote_apis::google::longrunning::Operation) -> bool {
    use bazel_remote_apis::build::bazel::remote::execution::v2::{execution_stage, ExecuteOperationMetadata};
    op.metadata
        .as_ref()
        .and_then(|m| ExecuteOperationMetadata::decode(&m.value[..]).ok())
        .is_some_and(|m| m.stage == execution_stage::Value::Executing as i32)
}

/// Starts `spec` and returns its operation's name and whether it is done,
/// once the operation reports EXECUTING or `executing_within` has passed
/// (at the first Operation for `Duration::ZERO`): a server may treat a queued
/// operation differently from one a worker runs.
async fn operation_at(
    h: &Harness,
    check: &CheckSpec,
    spec: &ActionSpec,
    executing_within: Duration,
) -> Result<(String, bool), Verdict> {
    let prepared = h.upload(&check.id, spec).await.map_err(StepError::precondition)?;
    let clients = h.clients();
    let msg = ExecuteRequest {
        instance_name: clients.instance.clone(),
        action_digest: Some(prepared.action_digest.clone()),
        ..Default::default()
    };
    let deadline = Instant::now() + h.options.timeout;
    let mut stream = match execute::call_execute(clients, &msg, h.options.timeout, deadline).await {
        Err(s) if execute::is_undecided(&s) => {
            return Err(Verdict::error(format!("Execute: {:?}: {}", s.code(), s.message())))
        }
        Err(s) => {
            return Err(Verdict::error(format!(
                "Execute was rejected ({:?}: {}), so this cannot be checked",
                s.code(),
                s.message()
            )))
        }
        Ok(stream) => stream,
    };
    let first = tokio::time::timeout_at(deadline, stream.message()).await;
    if let Ok(Ok(Some(op))) = &first {
        if !op.name.is_empty() && !op.done && !executing(op) && !executing_within.is_zero() {
            let until = (Instant::now() + executing_within).min(deadline);
            while let Ok(Ok(Some(next))) = tokio::time::timeout_at(until, stream.message()).await {
                if next.done || executing(&next) {
                    return Ok((op.name.clone(), next.done));
                }
            }
        }
    }
    match first {
        Ok(Ok(Some(op))) if !op.name.is_empty() => Ok((op.name, op.done)),
        Ok(Ok(Some(_))) => Err(Verdict::new(unmet(check), "the first Operation has no name").with(
            "Operation.name",
            Some("a name to follow the operation by".into()),
            "empty",
        )),
        Ok(Ok(None)) => Err(Verdict::error("Execute stream ended without an Operation")),
        Ok(Err(s)) => Err(Verdict::error(format!("Execute stream: {:?}: {}", s.code(), s.message()))),
        Err(_) => Err(Verdict::error("no Operation within the budget")),
    }
}

/// After the Execute stream is dropped, WaitExecution on the operation's name
/// follows it to the result (BuildStream's recovery path).
pub(super) async fn wait_execution_resumes(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let spec = spec_with(check, &["--sleep", "500"]);
    let (name, _) = first_operation(h, check, &spec).await?;
    let clients = h.clients();
    let deadline = Instant::now() + h.options.timeout;
    let mut req = tonic::Request::new(WaitExecutionRequest { name: name.clone() });
    req.set_timeout(h.options.timeout);
    let mut stream = match tokio::time::timeout_at(deadline, clients.execution.clone().wait_execution(req)).await {
        Err(_) => return Ok(Verdict::error("WaitExecution not answered in time")),
        Ok(Err(s)) if execute::is_undecided(&s) => {
            return Ok(Verdict::error(format!("WaitExecution: {}", s.message())))
        }
        Ok(Err(s)) => {
            return Ok(Verdict::new(unmet(check), format!("WaitExecution answered {:?}: {}", s.code(), s.message()))
                .with(
                    "WaitExecution",
                    Some("the operation followed to its result".into()),
                    format!("{:?}: {}", s.code(), s.message()),
                )
                .with("operation", None, name))
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    let mut trace = Trace::default();
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Ok(Verdict::error("the resumed operation did not finish within the budget")),
            Ok(Err(s)) if execute::is_undecided(&s) => {
                return Ok(Verdict::error(format!("WaitExecution stream: {}", s.message())))
            }
            Ok(Err(s)) => {
                return Ok(Verdict::new(
                    unmet(check),
                    format!("WaitExecution stream failed: {:?}: {}", s.code(), s.message()),
                )
                .with(
                    "WaitExecution",
                    Some("the operation followed to its result".into()),
                    format!("{:?}", s.code()),
                ))
            }
            Ok(Ok(None)) => {
                return Ok(Verdict::new(unmet(check), "WaitExecution ended before the operation was done").with(
                    "WaitExecution",
                    Some("the operation followed to its result".into()),
                    "stream ended early",
                ))
            }
            Ok(Ok(Some(op))) => match execute::observe(op, &mut trace) {
                Err(e) => return Ok(Verdict::error(e.to_string())),
                Ok(None) => continue,
                Ok(Some(outcome)) if outcome.class() == OutcomeClass::Completed => {
                    return Ok(Verdict::pass(format!("resumed {name}: {}", outcome.describe())))
                }
                Ok(Some(outcome)) => {
                    if let Some(v) = undecided(&outcome, "completed") {
                        return Ok(v);
                    }
                    if outcome.transient_code().is_some() {
                        // A lost worker or a full cluster: the operation's own
                        // transient end (BuildStream executes again), which
                        // WaitExecution delivered as it should.
                        return Ok(Verdict::pass(format!(
                            "resumed {name} to its end: {} (a transient status; the client executes again)",
                            outcome.describe()
                        )));
                    }
                    return Ok(Verdict::new(unmet(check), format!("resumed operation ended {}", outcome.describe()))
                        .with("outcome", Some("completed".into()), outcome.describe()));
                }
            },
        }
    }
}

/// CancelOperation on a running execution succeeds, or answers
/// UNIMPLEMENTED / INVALID_ARGUMENT (what BuildStream tolerates).
pub(super) async fn cancel_operation(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    // 30 s: well past the time the check allows the cancellation (below),
    // so an operation that ends by then was cancelled, not finished.
    let spec = spec_with(check, &["--sleep", "30000"]);
    // Cancelled once a worker runs it (Buildfarm treats a queued operation
    // apart from an executing one), or after EXECUTING_WITHIN where the
    // server reports no stage change (buildbox-casd sends none until done):
    // a short wait, so the profile does not pay for a silence that decides
    // nothing.
    const EXECUTING_WITHIN: Duration = Duration::from_millis(1000);
    let (name, done) = operation_at(h, check, &spec, EXECUTING_WITHIN).await?;
    if done {
        return Ok(Verdict::error("the operation finished before it could be cancelled"));
    }
    let clients = h.clients();
    let msg = CancelOperationRequest { name: name.clone() };
    // BuildGrid answers UNAVAILABLE ("failed to lock the bot") while the
    // worker's row is locked, which a busy bot keeps it for seconds at a
    // time: casd's 1.5 s of retries left the verdict to chance (ERROR in
    // one run of four). The command sleeps 30 s, so there is time to ask
    // until the lock is free; the evidence counts the retries. The
    // operation must then end within ENDED_WITHIN of the first request,
    // however long the retries took, which stays far from the command's
    // own end.
    const CANCEL_WITHIN: Duration = Duration::from_secs(8);
    let asked = Instant::now();
    match clients
        .unary_within("CancelOperation", CANCEL_WITHIN, &clients.operations, msg, |mut s, r| async move {
            s.cancel_operation(r).await
        })
        .await
    {
        Ok(_) if asked.elapsed() + Duration::from_secs(2) > ENDED_WITHIN => Ok(Verdict::error(format!(
            "CancelOperation answered OK only after {:.1} s: too late to tell a cancellation from the command's own end",
            asked.elapsed().as_secs_f64()
        ))),
        Ok(_) => Ok(cancelled_operation_ends(h, check, &name, asked + ENDED_WITHIN).await),
        Err(s) if matches!(s.code(), Code::Unimplemented | Code::InvalidArgument) => {
            Ok(Verdict::pass(format!("CancelOperation answered {:?}, which BuildStream accepts", s.code())))
        }
        Err(s) if execute::is_undecided(&s) => Ok(Verdict::error(format!("CancelOperation: {}", s.message()))),
        Err(s) => Ok(Verdict::new(unmet(check), format!("CancelOperation answered {:?}: {}", s.code(), s.message()))
            .with("code", Some("OK, UNIMPLEMENTED or INVALID_ARGUMENT".into()), format!("{:?}", s.code()))),
    }
}

/// How long after the first CancelOperation the operation must have ended.
const ENDED_WITHIN: Duration = Duration::from_secs(14);

/// After CancelOperation answered OK, the operation must end by `deadline`,
/// well before its 30 s command would have: an OK that changes nothing
/// leaves BuildStream's cancelled builds running on the cluster.
async fn cancelled_operation_ends(h: &Harness, check: &CheckSpec, name: &str, deadline: Instant) -> Verdict {
    let clients = h.clients();
    let within = deadline.saturating_duration_since(Instant::now());
    let mut req = tonic::Request::new(WaitExecutionRequest { name: name.to_string() });
    req.set_timeout(within);
    let mut stream = match tokio::time::timeout_at(deadline, clients.execution.clone().wait_execution(req)).await {
        Err(_) => return Verdict::error("WaitExecution on the cancelled operation did not answer"),
        Ok(Err(s)) if execute::is_undecided(&s) => return Verdict::error(format!("WaitExecution: {}", s.message())),
        // Gone, or refused because it is over: the cancellation took.
        Ok(Err(s)) => return Verdict::pass(format!("cancelled {name}; WaitExecution then answered {:?}", s.code())),
        Ok(Ok(r)) => r.into_inner(),
    };
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => {
                return Verdict::new(unmet(check), "CancelOperation answered OK, but the operation kept running").with(
                    "operation after CancelOperation",
                    Some(format!("done within {}s of the first CancelOperation", ENDED_WITHIN.as_secs())),
                    "still running",
                )
            }
            Ok(Ok(Some(op))) if op.done => return Verdict::pass(format!("cancelled {name}; the operation ended")),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Verdict::pass(format!("cancelled {name}; its stream ended")),
            Ok(Err(s)) if execute::is_undecided(&s) => {
                return Verdict::error(format!("WaitExecution stream: {}", s.message()))
            }
            Ok(Err(s)) => {
                return Verdict::pass(format!("cancelled {name}; WaitExecution then answered {:?}", s.code()))
            }
        }
    }
}

/// GetActionResult for an action never run answers NOT_FOUND.
pub(super) async fn action_cache_miss(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let never_run = digest::of_bytes(format!("{}/never-run/{}", String::from_utf8_lossy(&h.salt), check.id).as_bytes());
    let clients = h.clients();
    let msg = GetActionResultRequest {
        instance_name: clients.ac_instance.clone(),
        action_digest: Some(never_run),
        ..Default::default()
    };
    match clients
        .unary("GetActionResult", &clients.action_cache, msg, |mut s, r| async move { s.get_action_result(r).await })
        .await
    {
        Err(s) if s.code() == Code::NotFound => Ok(Verdict::pass("NOT_FOUND")),
        Err(s) if execute::is_undecided(&s) => Ok(Verdict::error(format!("GetActionResult: {}", s.message()))),
        Err(s) => Ok(Verdict::new(unmet(check), format!("a miss answered {:?}: {}", s.code(), s.message())).with(
            "code",
            Some("NotFound".into()),
            format!("{:?}", s.code()),
        )),
        Ok(_) => Ok(Verdict::new(unmet(check), "returned a result for an action that never ran").with(
            "GetActionResult",
            Some("NOT_FOUND".into()),
            "an ActionResult",
        )),
    }
}

/// With `skip_cache_lookup` the action runs again instead of being served from cache.
pub(super) async fn skip_cache_lookup(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (prepared, first) = run_to_completion(h, &check.id, check, &with_nonce(check)).await?;
    let outcome = execute_skipping_cache(h, &prepared).await;
    // The probe's report carries its start time, so a real second run
    // prints other bytes: the same stdout means the first result came back,
    // whatever `cached_result` says.
    match outcome {
        Err(e) => Ok(Verdict::error(e.to_string())),
        Ok(Outcome::Completed { response }) if response.cached_result => Ok(Verdict::new(
            unmet(check),
            "served a cached result although skip_cache_lookup was set",
        )
        .with("cached_result", Some("false".into()), "true")),
        Ok(second @ Outcome::Completed { .. }) if stdout_of_outcome(&second) == stdout_of_outcome(&first) => {
            Ok(Verdict::new(
                unmet(check),
                "served the first run's result again (same stdout, same probe start time) although \
             skip_cache_lookup was set, with cached_result = false",
            )
            .with(
                "stdout",
                Some("a new run's report (another start time)".into()),
                "byte for byte the first run's",
            ))
        }
        Ok(Outcome::Completed { .. }) => Ok(Verdict::pass("ran again (new stdout) with cached_result = false")),
        Ok(other) => Ok(undecided(&other, "completed, cached_result = false").unwrap_or_else(|| {
            Verdict::new(unmet(check), format!("second execution: {}", other.describe())).with(
                "outcome",
                Some("completed, cached_result = false".into()),
                other.describe(),
            )
        })),
    }
}

/// Runs an action whose input root references a blob that was never uploaded.
async fn execute_with_missing_input(h: &Harness, check: &CheckSpec) -> Result<(Outcome, String), Verdict> {
    let mut spec = check.action.clone();
    let content = format!("never uploaded {}", uuid::Uuid::new_v4());
    spec.input_root.push(crate::suite::EntrySpec::File {
        file: "etc/missing-input".into(),
        content: content.clone(),
        executable: false,
        mtime: None,
    });
    let mut prepared = h.prepare(&check.id, &spec).map_err(Verdict::error)?;
    let missing = digest::of_bytes(content.as_bytes());
    prepared.blobs.remove(&missing.hash);
    h.cas.upload(&prepared.blobs).await.map_err(|e| Verdict::error(format!("uploading the input root: {e}")))?;
    let (outcome, _) = h.execute(&prepared, h.options.timeout).await;
    let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
    Ok((outcome, digest::show(&missing)))
}

/// A missing input is reported as FAILED_PRECONDITION, not run and not another code.
pub(super) async fn missing_input_code(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (outcome, missing) = execute_with_missing_input(h, check).await?;
    Ok(failed_precondition(check, &outcome, &format!("missing blob {missing}")))
}

/// The verdict on an action that must fail with FAILED_PRECONDITION because
/// `what` is not in the CAS (at once or in the operation).
fn failed_precondition(check: &CheckSpec, outcome: &Outcome, what: &str) -> Verdict {
    let expected = "FAILED_PRECONDITION (rejected or in the operation)";
    if let Some(v) = undecided(outcome, expected) {
        return v;
    }
    match outcome.error_code() {
        Some(Code::FailedPrecondition) => Verdict::pass(outcome.describe()),
        _ => Verdict::new(unmet(check), format!("{what}: {}", outcome.describe())).with(
            "outcome",
            Some(expected.into()),
            outcome.describe(),
        ),
    }
}

/// The FAILED_PRECONDITION for a missing input names the blob in a
/// PreconditionFailure with a MISSING violation.
pub(super) async fn missing_input_detail(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (outcome, missing) = execute_with_missing_input(h, check).await?;
    if let Some(v) = undecided(&outcome, "FAILED_PRECONDITION with a PreconditionFailure") {
        return Ok(v);
    }
    if outcome.error_code() != Some(Code::FailedPrecondition) {
        return Ok(Verdict::new(unmet(check), format!("not even FAILED_PRECONDITION: {}", outcome.describe())).with(
            "outcome",
            Some("FAILED_PRECONDITION with a PreconditionFailure".into()),
            outcome.describe(),
        ));
    }
    let violations: Vec<Violation> = outcome
        .details()
        .iter()
        .filter(|d| d.type_url.ends_with("google.rpc.PreconditionFailure"))
        .filter_map(|d| PreconditionFailure::decode(&d.value[..]).ok())
        .flat_map(|p| p.violations)
        .collect();
    let subject = format!("blobs/{missing}");
    if violations.iter().any(|v| v.r#type == "MISSING" && v.subject == subject) {
        return Ok(Verdict::pass(format!("MISSING violation for {subject}")));
    }
    let seen: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.r#type, v.subject)).collect();
    Ok(Verdict::new(unmet(check), "no MISSING violation names the missing blob").with(
        "violations",
        Some(format!("MISSING: {subject}")),
        format!("{seen:?}"),
    ))
}

/// Runs a command past its `Action.timeout`.
async fn execute_timed_out(
    h: &Harness,
    check: &CheckSpec,
) -> Result<(Outcome, crate::action::PreparedAction), Verdict> {
    let mut spec = spec_with(check, &["--sleep", "5000"]);
    spec.timeout = spec.timeout.or(Some(1.0));
    let prepared = h.upload(&check.id, &spec).await.map_err(StepError::precondition)?;
    let budget = h.options.timeout.max(Duration::from_secs(10));
    let (outcome, _) = h.execute(&prepared, budget).await;
    Ok((outcome.map_err(|e| Verdict::error(e.to_string()))?, prepared))
}

/// A command that outlives `Action.timeout` ends with DEADLINE_EXCEEDED in the ExecuteResponse.
pub(super) async fn timeout_status(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (outcome, _) = execute_timed_out(h, check).await?;
    if let Some(v) = undecided(&outcome, "failed in operation: DeadlineExceeded") {
        return Ok(v);
    }
    // A shell error (2) or a command not found / not executable (127, 126)
    // means the probe never started, so nothing ran long enough to time
    // out: one finding of the input-root suite, not a second one here.
    if let Some(code @ (2 | 126 | 127)) =
        outcome.result().filter(|_| outcome.class() == OutcomeClass::Completed).map(|r| r.exit_code)
    {
        return Ok(Verdict::error(format!(
            "blocked: the command exited {code} at once without running the probe (see the input-root checks); \
             a timeout cannot be judged"
        )));
    }
    let deadline_exceeded = |o: &Outcome| {
        matches!(o, Outcome::Failed { code, operation_error: false, .. }
            if Code::from_i32(*code) == Code::DeadlineExceeded)
    };
    if deadline_exceeded(&outcome) {
        return Ok(Verdict::pass(outcome.describe()));
    }
    let verdict = Verdict::new(unmet(check), format!("a timed-out action ended {}", outcome.describe())).with(
        "outcome",
        Some("failed in operation: DeadlineExceeded".into()),
        outcome.describe(),
    );
    if outcome.class() != OutcomeClass::Completed {
        return Ok(verdict);
    }
    // The control: 15 s against the same 1 s timeout tells a timeout enforced
    // late (padded) from one ignored.
    let mut spec = spec_with(check, &["--sleep", "15000"]);
    spec.timeout = Some(1.0);
    let prepared = h.upload(&format!("{}/padding", check.id), &spec).await.map_err(StepError::precondition)?;
    let started = Instant::now();
    let (control, _) = h.execute(&prepared, h.options.timeout.max(Duration::from_secs(30))).await;
    let took = started.elapsed().as_secs_f64();
    Ok(match control {
        Ok(c) if deadline_exceeded(&c) => Verdict::new(
            unmet(check),
            format!(
                "the timeout is enforced late: a 5 s command with a 1 s timeout completed, a 15 s one ended \
                 DEADLINE_EXCEEDED after {took:.1} s (the timeout padded by about {:.0} s)",
                (took - 1.0).max(0.0)
            ),
        )
        .with("outcome", Some("failed in operation: DeadlineExceeded".into()), outcome.describe())
        .with("a 15 s command, 1 s timeout (control)", None, format!("{} after {took:.1} s", c.describe())),
        Ok(c) if c.class() == OutcomeClass::Completed => Verdict::new(
            unmet(check),
            format!("the timeout is ignored: a 15 s command with a 1 s timeout completed too ({took:.1} s)"),
        )
        .with("outcome", Some("failed in operation: DeadlineExceeded".into()), outcome.describe())
        .with("a 15 s command, 1 s timeout (control)", None, c.describe()),
        Ok(c) => verdict.with("a 15 s command, 1 s timeout (control)", None, c.describe()),
        Err(e) => verdict.with("a 15 s command, 1 s timeout (control)", None, e.to_string()),
    })
}

/// A result with a non-OK status is not cached: GetActionResult misses afterwards.
pub(super) async fn non_ok_not_cached(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (outcome, prepared) = execute_timed_out(h, check).await?;
    if outcome.class() != OutcomeClass::Failed {
        return Ok(Verdict::skip(format!(
            "the timed-out action did not fail in the operation ({}); nothing to look up",
            outcome.describe()
        )));
    }
    not_cached(h, check, &prepared.action_digest, &outcome, "a DEADLINE_EXCEEDED execution").await
}

/// The result of an action marked `do_not_cache` is not in the action cache.
pub(super) async fn do_not_cache(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (prepared, outcome) = run_to_completion(h, &check.id, check, &check.action).await?;
    if !prepared.action.do_not_cache {
        return Err(Verdict::error(format!("{}: the check's action must set do_not_cache", check.location)));
    }
    not_cached(h, check, &prepared.action_digest, &outcome, "a do_not_cache action").await
}

/// An Action whose Command blob is not in the CAS fails with FAILED_PRECONDITION.
pub(super) async fn missing_command(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let mut spec = check.action.clone();
    // A Command no other check sends, so it cannot be in the CAS already.
    spec.probe = vec!["--read".into(), format!("/missing-command-{}", uuid::Uuid::new_v4().simple())];
    let mut prepared = h.prepare(&check.id, &spec).map_err(Verdict::error)?;
    let command =
        prepared.action.command_digest.clone().ok_or_else(|| Verdict::error("prepared action has no Command"))?;
    prepared.blobs.remove(&command.hash);
    h.cas.upload(&prepared.blobs).await.map_err(|e| Verdict::error(format!("uploading the action: {e}")))?;
    let (outcome, _) = h.execute(&prepared, h.options.timeout).await;
    let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
    Ok(failed_precondition(check, &outcome, &format!("missing Command {}", digest::show(&command))))
}

/// WaitExecution for an operation name the server never gave out answers
/// NOT_FOUND, the code that tells a client to Execute again. The name is in
/// the server's own form (the one it gave a trivial action, last part
/// replaced): a server may route names by their form and rightly refuse one
/// it could never have given (Buildbarn: INVALID_ARGUMENT).
pub(super) async fn wait_unknown_operation(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let prepared = h.upload(&check.id, &check.action).await.map_err(StepError::precondition)?;
    let (outcome, trace) = h.execute(&prepared, h.options.timeout).await;
    let given = match (trace.operation, outcome) {
        (Some(name), _) => name,
        (None, Err(e)) => return Err(Verdict::error(format!("no operation name to take the form from: {e}"))),
        (None, Ok(o)) => {
            return Err(Verdict::error(format!(
                "Execute gave no operation name to take the form from ({})",
                o.describe()
            )))
        }
    };
    let name = unknown_like(&given);
    let clients = h.clients();
    let msg = WaitExecutionRequest { name: name.clone() };
    let wait = || {
        let (mut execution, req) = (clients.execution.clone(), clients.request(msg.clone()));
        async move { execution.wait_execution(req).await }
    };
    match super::cas::first_status(h, "WaitExecution", wait).await? {
        Code::NotFound => Ok(Verdict::pass(format!("NOT_FOUND for {name:?} (the server named an operation {given:?})"))),
        code => Ok(Verdict::new(
            unmet(check),
            format!(
                "WaitExecution of unknown operation {name:?} (in the form of the server's own {given:?}) answered {code:?}"
            ),
        )
        .with("code", Some("NOT_FOUND".into()), crate::suite::status_code_name(code))),
    }
}

/// An operation name the server never gave out, in the form of `given`: its
/// last path segment replaced by a fresh UUID (hyphenated or not, as given).
fn unknown_like(given: &str) -> String {
    let (head, last) = match given.rsplit_once('/') {
        Some((head, last)) => (format!("{head}/"), last),
        None => (String::new(), given),
    };
    let id = uuid::Uuid::new_v4();
    let fresh =
        if last.contains('-') || last.is_empty() { id.hyphenated().to_string() } else { id.simple().to_string() };
    format!("{head}{fresh}")
}

/// A second Execute of a completed action: served from the action cache
/// (the first run's output comes back) exactly when `cached_result` says so.
pub(super) async fn cached_result_truthful(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    // Its own action: another check's re-execution would change the cache entry between the two runs.
    let (prepared, first) = run_to_completion(h, &check.id, check, &with_nonce(check)).await?;
    let (second, _) = h.execute(&prepared, h.options.timeout).await;
    let second = second.map_err(|e| Verdict::error(e.to_string()))?;
    let Outcome::Completed { response } = &second else {
        if let Some(v) = undecided(&second, "completed") {
            return Ok(v);
        }
        return Ok(Verdict::new(unmet(check), format!("the second Execute ended {}", second.describe())).with(
            "outcome",
            Some("completed, from the cache or not".into()),
            second.describe(),
        ));
    };
    // The probe prints its start time: a new run never prints the same bytes.
    let same = stdout_of_outcome(&first) == stdout_of_outcome(&second);
    match (same, response.cached_result) {
        (true, true) => Ok(Verdict::pass("served from the action cache, with cached_result set")),
        (false, false) => Ok(Verdict::pass("executed again, with cached_result unset")),
        (true, false) => Ok(Verdict::new(
            unmet(check),
            "the first run's result came back (same stdout, same probe start time) with cached_result unset",
        )
        .with("cached_result", Some("true for a result served from the cache".into()), "false")),
        (false, true) => Ok(Verdict::new(
            unmet(check),
            "cached_result is set on a result the first run did not produce",
        )
        .with("cached_result", Some("false for a new execution".into()), "true")),
    }
}

/// Runs the check's action and keeps the trace of its Operations; an
/// undecided outcome (still queued or running) ends the check as ERROR.
async fn traced_run(
    h: &Harness,
    check: &CheckSpec,
) -> Result<(crate::action::PreparedAction, Outcome, Trace), Verdict> {
    let prepared = h.upload(&check.id, &check.action).await.map_err(StepError::precondition)?;
    let (outcome, trace) = h.execute(&prepared, h.options.timeout).await;
    let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
    match undecided(&outcome, "completed") {
        Some(v) => Err(v),
        None => Ok((prepared, outcome, trace)),
    }
}

/// Every Operation of an Execute stream carries ExecuteOperationMetadata
/// naming the action it is about.
pub(super) async fn operation_metadata(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (prepared, outcome, trace) = traced_run(h, check).await?;
    if trace.messages == 0 {
        return Ok(Verdict::error(format!("no Operation message to look at: {}", outcome.describe())));
    }
    if trace.metadata_problems.is_empty() {
        return Ok(Verdict::pass(format!(
            "{} Operation message(s), each with ExecuteOperationMetadata naming the action",
            trace.messages
        )));
    }
    let shown: Vec<&str> = trace.metadata_problems.iter().take(4).map(String::as_str).collect();
    Ok(Verdict::new(
        unmet(check),
        format!("{} of {} Operation message(s) lack proper metadata", trace.metadata_problems.len(), trace.messages),
    )
    .with(
        "Operation.metadata",
        Some(format!("ExecuteOperationMetadata with action_digest {}", digest::show(&prepared.action_digest))),
        shown.join("; "),
    ))
}

/// A command that exited non-zero is run again on the next Execute, not
/// served from the action cache: BuildStream reads the action cache first and
/// never sets skip_cache_lookup, so a cached failure makes `bst build
/// --retry-failed` replay a flaky failure for ever.
pub(super) async fn failing_result_not_reused(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    // A failure cached by another check or run must not pass for this one's first execution.
    let (prepared, first) = run_to_completion(h, &check.id, check, &with_nonce(check)).await?;
    let exit_code = first.result().map(|r| r.exit_code).unwrap_or_default();
    if exit_code == 0 {
        return Err(Verdict::error(format!("{}: the check's action must exit non-zero", check.location)));
    }
    if let Some(cached) = super::action_cache::get(h, &prepared.action_digest).await? {
        return Ok(Verdict::new(
            unmet(check),
            format!(
                "the result of a command that exited {exit_code} is in the action cache, \
                 where BuildStream looks first: retrying the element replays the failure"
            ),
        )
        .with(
            "GetActionResult",
            Some("NOT_FOUND".into()),
            format!("an ActionResult with exit code {}", cached.exit_code),
        ));
    }
    let (second, _) = h.execute(&prepared, h.options.timeout).await;
    let second = second.map_err(|e| Verdict::error(e.to_string()))?;
    let Outcome::Completed { response } = &second else {
        if let Some(v) = undecided(&second, "completed") {
            return Ok(v);
        }
        return Ok(Verdict::error(format!("the second Execute ended {}", second.describe())));
    };
    // The probe prints its start time: a new run never prints the same bytes.
    if response.cached_result || stdout_of_outcome(&first) == stdout_of_outcome(&second) {
        return Ok(Verdict::new(
            unmet(check),
            format!("the second Execute of a command that exited {exit_code} was served the first run's result"),
        )
        .with("ExecuteResponse", Some("a new execution".into()), "the cached failing result"));
    }
    Ok(Verdict::pass(format!("exit code {exit_code}; not cached, and executed again on the next Execute")))
}

/// An action that prints nothing for longer than common proxy idle timeouts
/// still reaches its result the way BuildStream follows it (resuming with
/// WaitExecution when a stream ends early or breaks with UNAVAILABLE).
/// Opt-in (`--long`): it holds one action for over a minute.
pub(super) async fn idle_stream_survives(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let Some(idle) = h.options.idle_stream else {
        return Ok(Verdict::skip("opt-in: run with --long (it keeps one action silent for 75 s)"));
    };
    let mut spec = check.action.clone();
    spec.probe = vec!["--sleep".into(), idle.as_millis().to_string()];
    let prepared = h.upload(&check.id, &spec).await.map_err(StepError::precondition)?;
    let (outcome, trace) = h.execute(&prepared, idle + h.options.timeout).await;
    let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
    if let Some(v) = undecided(&outcome, "completed") {
        return Ok(v);
    }
    let followed = format!(
        "{} Operation message(s), {} WaitExecution call(s) over {:.0}s of silence",
        trace.messages,
        trace.wait_calls,
        idle.as_secs_f64()
    );
    match &outcome {
        Outcome::Completed { .. } if outcome.result().is_some_and(|r| r.exit_code == 0) => {
            Ok(Verdict::pass(format!("the silent action's result arrived: {followed}")))
        }
        _ => Ok(Verdict::new(
            unmet(check),
            format!("an action silent for {:.0}s did not reach its result: {}", idle.as_secs_f64(), outcome.describe()),
        )
        .with("outcome", Some("completed, exit code 0".into()), format!("{}; {followed}", outcome.describe()))),
    }
}

/// A re-execution with `skip_cache_lookup` replaces the action cache entry:
/// GetActionResult then serves the new run's result.
pub(super) async fn skip_cache_lookup_overwrites(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    // Another check running the same action at the same time would write the entry too.
    let (prepared, first) = run_to_completion(h, &check.id, check, &with_nonce(check)).await?;
    let second = execute_skipping_cache(h, &prepared).await;
    let second = second.map_err(|e| Verdict::error(e.to_string()))?;
    if let Some(v) = undecided(&second, "completed") {
        return Ok(v);
    }
    let (Some(old), Some(new)) = (first.result().map(stdout_of), second.result().map(stdout_of)) else {
        return Ok(Verdict::error(format!("no result to compare: {}", second.describe())));
    };
    if old == new {
        return Ok(Verdict::skip("blocked by protocol.skip-cache-lookup: the action was not run again"));
    }
    match super::action_cache::get(h, &prepared.action_digest).await? {
        Some(cached) if stdout_of(&cached) == new => {
            Ok(Verdict::pass("the action cache serves the re-execution's result"))
        }
        Some(cached) if stdout_of(&cached) == old => Ok(Verdict::new(
            unmet(check),
            "the action cache still serves the first run's result after a re-execution with skip_cache_lookup",
        )
        .with("GetActionResult", Some("the re-execution's result".into()), "the first run's result")),
        Some(_) => Ok(Verdict::new(unmet(check), "the action cache serves a result neither run produced").with(
            "GetActionResult",
            Some("the re-execution's result".into()),
            "another result",
        )),
        None => Ok(Verdict::new(unmet(check), "the action cache lost the action's entry after the re-execution").with(
            "GetActionResult",
            Some("the re-execution's result".into()),
            "NOT_FOUND",
        )),
    }
}

/// An Operation is done exactly when its metadata's stage is COMPLETED.
pub(super) async fn operation_done_completed(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, _, trace) = traced_run(h, check).await?;
    if trace.stages.is_empty() {
        return Ok(Verdict::skip(
            "no Operation carried a readable ExecuteOperationMetadata stage (protocol.operation-metadata judges that)",
        ));
    }
    if trace.done_problems.is_empty() {
        return Ok(Verdict::pass(format!("stages {}; done only at COMPLETED", trace.stages.join(" → "))));
    }
    let shown: Vec<&str> = trace.done_problems.iter().take(4).map(String::as_str).collect();
    Ok(Verdict::new(unmet(check), "an Operation's done flag disagrees with its stage").with(
        "Operation.done",
        Some("true exactly at stage COMPLETED".into()),
        shown.join("; "),
    ))
}

/// The Execute stream ends once the done Operation is sent: nothing follows
/// it, and the server closes the stream instead of holding it open.
pub(super) async fn stream_ends_at_done(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    use bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteRequest;
    /// How long the stream may stay open after the done Operation.
    const GRACE: std::time::Duration = std::time::Duration::from_secs(3);
    let prepared = h.upload(&check.id, &check.action).await.map_err(StepError::precondition)?;
    let c = h.clients();
    let msg = ExecuteRequest {
        instance_name: c.instance.clone(),
        action_digest: Some(prepared.action_digest.clone()),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + h.options.timeout;
    let mut stream = match execute::call_execute(c, &msg, h.options.timeout + c.rpc_timeout, deadline).await {
        Err(s) => return Err(Verdict::error(format!("Execute answered {:?}: {}", s.code(), s.message()))),
        Ok(stream) => stream,
    };
    let mut messages = 0;
    let mut name = String::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => {
                let _ = execute::cancel(c, &name).await;
                return Err(Verdict::error("the operation was not done within the action timeout"));
            }
            Ok(Err(s)) => {
                return Err(Verdict::error(format!("the Execute stream broke: {:?}: {}", s.code(), s.message())))
            }
            Ok(Ok(None)) => return Err(Verdict::error("the Execute stream ended before the operation was done")),
            Ok(Ok(Some(op))) => {
                messages += 1;
                if !op.name.is_empty() && op.name != name {
                    h.inflight.track(&op.name);
                    name = op.name.clone();
                }
                if op.done {
                    break;
                }
            }
        }
    }
    h.inflight.untrack(&name);
    match tokio::time::timeout(GRACE, stream.message()).await {
        Ok(Ok(None)) => Ok(Verdict::pass(format!("the stream ended after the done Operation (message {messages})"))),
        // An error after the last message still ends the stream; nothing more came.
        Ok(Err(s)) if !execute::is_undecided(&s) => {
            Ok(Verdict::pass(format!("the stream ended ({:?}) after the done Operation", s.code())))
        }
        Ok(Err(s)) => Err(Verdict::error(format!("the stream broke after the done Operation: {}", s.message()))),
        Ok(Ok(Some(op))) => Ok(Verdict::new(unmet(check), "an Operation followed the done one").with(
            "after the done Operation",
            Some("end of stream".into()),
            format!("another Operation (done {})", op.done),
        )),
        Err(_) => Ok(Verdict::new(
            unmet(check),
            format!("the stream stayed open {}s after the done Operation", GRACE.as_secs()),
        )
        .with(
            "after the done Operation",
            Some("end of stream".into()),
            format!("open after {}s", GRACE.as_secs()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::unknown_like;

    #[test]
    fn unknown_names_keep_the_servers_form() {
        let given = "main/operations/0d1c6e4e-5d6a-4e0b-9b8e-3f2a1c0d9e8f";
        let name = unknown_like(given);
        assert!(name.starts_with("main/operations/") && name != given, "{name}");
        assert!(uuid::Uuid::try_parse(name.rsplit('/').next().unwrap()).is_ok(), "{name}");
        assert_eq!(name.len(), given.len());
        let simple = unknown_like("4f1b2c3d4e5f60718293a4b5c6d7e8f9");
        assert_eq!(simple.len(), 32);
        assert!(!simple.contains('-') && !simple.contains('/'));
    }
}
