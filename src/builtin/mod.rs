//! Checks that YAML cannot express, registered by id. Each is an async
//! function from the harness and its check entry to a verdict; the YAML entry
//! still carries id, requirement, source, severity, tags and `killed_by`, and
//! may carry an `action` the function uses.

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::action::PreparedAction;
use crate::evaluate;
use crate::execute::Outcome;
use crate::harness::Harness;
use crate::suite::{CheckSpec, OutcomeClass};
use crate::verdict::{StepError, Verdict, VerdictKind};

mod action_cache;
mod api_versions;
mod capabilities;
mod cas;
mod casd_proxy;
mod compressed_blobs;
mod digest_functions;
mod outputs;
mod protocol;
mod sandbox;
mod scheduler;
mod split_splice;
#[cfg(test)]
mod writing_checks_example;

/// One ByteStream read of `msg`, made again after a transient break: the
/// bytes, or the status the server answered. Stops collecting past `bound`
/// bytes and ends at one deadline for the whole read, whatever the server
/// sends (a stream trickling empty messages must not hold the check).
pub(crate) async fn bytestream_read_bounded(
    h: &Harness,
    msg: bazel_remote_apis::google::bytestream::ReadRequest,
    bound: usize,
) -> Result<Vec<u8>, tonic::Status> {
    reapi_client::retry::retrying("ByteStream.Read", || async {
        let cl = h.clients();
        let mut stream = cl.call(cl.bytestream.clone().read(cl.request(msg.clone()))).await?;
        let mut data = Vec::new();
        let deadline = tokio::time::Instant::now() + cl.rpc_timeout;
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => return Err(tonic::Status::deadline_exceeded("the read did not end within the RPC timeout")),
                Ok(Err(s)) => return Err(s),
                Ok(Ok(None)) => return Ok(data),
                Ok(Ok(Some(chunk))) => {
                    data.extend_from_slice(&chunk.data);
                    if data.len() > bound {
                        return Ok(data);
                    }
                }
            }
        }
    })
    .await
}

/// Signature of a built-in check, as the runner calls it.
pub type BuiltinFn = for<'a> fn(&'a Harness, &'a CheckSpec) -> BoxFuture<'a, Verdict>;

/// Registers built-in checks: each is written as
/// `async fn(&Harness, &CheckSpec) -> Result<Verdict, Verdict>`, so `?` ends
/// it early with the verdict a helper returned (an ERROR, a FAIL with
/// evidence); `Ok` and `Err` both carry the check's verdict.
macro_rules! builtins {
    ($($id:literal => $check:path,)*) => {
        /// Every built-in check, by the id suites use in `builtin:`.
        const REGISTRY: &[(&str, BuiltinFn)] = &[
            $(($id, |h, c| Box::pin(async move { $check(h, c).await.unwrap_or_else(|verdict| verdict) })),)*
        ];
    };
}

builtins! {
    "root-is-input-root" => sandbox::root_is_input_root,
    "proc-shows-own-processes" => sandbox::proc_shows_own_processes,
    "no-foreign-mounts" => sandbox::no_foreign_mounts,
    "actions-isolated" => sandbox::actions_isolated,
    "outputs-match-writes" => outputs::outputs_match_writes,
    "root-directory-digest" => outputs::root_directory_digest,
    "stdio-exact" => outputs::stdio_exact,
    "output-mtime" => outputs::output_mtime,
    "tree-only" => outputs::tree_only,
    "logs-not-inlined" => outputs::logs_not_inlined,
    "wait-execution-resumes" => protocol::wait_execution_resumes,
    "cancel-operation" => protocol::cancel_operation,
    "action-cache-miss" => protocol::action_cache_miss,
    "skip-cache-lookup" => protocol::skip_cache_lookup,
    "missing-input-code" => protocol::missing_input_code,
    "missing-input-detail" => protocol::missing_input_detail,
    "timeout-status" => protocol::timeout_status,
    "non-ok-not-cached" => protocol::non_ok_not_cached,
    "do-not-cache" => protocol::do_not_cache,
    "wait-unknown-operation" => protocol::wait_unknown_operation,
    "cached-result-truthful" => protocol::cached_result_truthful,
    "failing-result-not-reused" => protocol::failing_result_not_reused,
    "skip-cache-lookup-overwrites" => protocol::skip_cache_lookup_overwrites,
    "operation-done-completed" => protocol::operation_done_completed,
    "stream-ends-at-done" => protocol::stream_ends_at_done,
    "idle-stream-survives" => protocol::idle_stream_survives,
    "tree-and-directory" => outputs::tree_and_directory,
    "legacy-outputs" => outputs::legacy_outputs,
    "legacy-kind-mismatch" => outputs::legacy_kind_mismatch,
    "paths-override-legacy" => outputs::paths_override_legacy,
    "symlink-output" => outputs::symlink_output,
    "get-tree-paged" => cas::get_tree_paged,
    "get-tree-resumable" => cas::get_tree_resumable,
    "get-tree-partial" => cas::get_tree_partial,
    "batch-limit-usable" => cas::batch_limit_usable,
    "blob-size-limit" => cas::blob_size_limit,
    "bytestream-write-existing" => cas::bytestream_write_existing,
    "bytestream-resumable-write" => cas::bytestream_resumable_write,
    "operation-metadata" => protocol::operation_metadata,
    "missing-command" => protocol::missing_command,
    "action-cache-update-roundtrip" => action_cache::update_roundtrip,
    "action-cache-hit-blobs" => action_cache::hit_blobs_available,
    "digest-functions" => capabilities::digest_functions,
    "api-versions" => capabilities::api_versions,
    "symlink-strategy" => capabilities::symlink_strategy,
    "empty-blob" => cas::empty_blob,
    "batch-digest-mismatch" => cas::batch_digest_mismatch,
    "bytestream-roundtrip" => cas::bytestream_roundtrip,
    "bytestream-read-past-end" => cas::bytestream_read_past_end,
    "query-write-status-unknown" => cas::query_write_status_unknown,
    "get-tree-missing-root" => cas::get_tree_missing_root,
    "find-missing-exact" => cas::find_missing_exact,
    "batch-wrong-size" => cas::batch_wrong_size,
    "bytestream-write-mismatch" => cas::bytestream_write_mismatch,
    "batch-read-mixed" => cas::batch_read_mixed,
    "bytestream-partial-read" => cas::bytestream_partial_read,
    "bytestream-negative-offset" => cas::bytestream_negative_offset,
    "compressed-roundtrip" => compressed_blobs::compressed_roundtrip,
    "compressed-write-mismatch" => compressed_blobs::compressed_write_mismatch,
    "compressed-read-limit" => compressed_blobs::compressed_read_limit,
    "compressed-read-offset" => compressed_blobs::compressed_read_offset,
    "compressed-write-existing" => compressed_blobs::compressed_write_existing,
    "compressed-batch" => compressed_blobs::compressed_batch,
    "through-casd-proxy" => casd_proxy::through_casd_proxy,
    "no-lease-without-match" => scheduler::no_lease_without_match,
    "lease-when-matching-bot-appears" => scheduler::lease_when_matching_bot_appears,
    "digest-function-cas-roundtrip" => digest_functions::cas_roundtrip,
    "digest-function-unadvertised-refused" => digest_functions::unadvertised_refused,
    "digest-function-wrong-length" => digest_functions::wrong_length,
    "digest-function-action-cache" => digest_functions::action_cache,
    "digest-function-execute" => digest_functions::execute,
    "split-blob" => split_splice::split_blob,
    "split-unknown-blob" => split_splice::split_unknown,
    "splice-blob" => split_splice::splice_blob,
    "splice-digest-mismatch" => split_splice::splice_mismatch,
    "split-fastcdc" => split_splice::fastcdc_chunks,
    "argv0-relative" => api_versions::argv0_relative,
}

tokio::task_local! {
    /// Whether the built-in check running on this task saw one of its
    /// actions complete (set by [`run_to_completion`]).
    static COMPLETED: std::cell::Cell<bool>;
}

/// Runs a built-in check. A verdict that does not say how the check's
/// action ended gets `completed` when one of its actions completed, as a
/// declarative check's does: the readiness answer tells a verdict judged on
/// what a command saw from one of a check that ran no command
/// (`readiness::attribute`), and only by this.
pub async fn run(f: BuiltinFn, h: &Harness, check: &CheckSpec) -> Verdict {
    COMPLETED
        .scope(std::cell::Cell::new(false), async {
            let verdict = f(h, check).await;
            match verdict.outcome {
                None if COMPLETED.with(std::cell::Cell::get) => verdict.with_outcome(OutcomeClass::Completed),
                _ => verdict,
            }
        })
        .await
}

/// Looks up a built-in check.
pub fn find(id: &str) -> Option<BuiltinFn> {
    REGISTRY.iter().find(|(name, _)| *name == id).map(|(_, f)| *f)
}

/// The verdict kind for a requirement this check finds unmet.
pub(crate) fn unmet(check: &CheckSpec) -> VerdictKind {
    VerdictKind::for_unmet(check.severity)
}

/// ERROR for an operation still queued or running when the budget ran out:
/// nobody can tell how it would have ended, so it is no finding.
pub(crate) fn undecided(outcome: &crate::execute::Outcome, expected: &str) -> Option<Verdict> {
    use crate::suite::OutcomeClass;
    matches!(outcome.class(), OutcomeClass::Queued | OutcomeClass::Executing).then(|| {
        Verdict::error(format!("undecided: {}", outcome.describe())).with(
            "outcome",
            Some(expected.to_string()),
            outcome.describe(),
        )
    })
}

/// Uploads and runs the check's action, expecting it to complete. Anything
/// else becomes the verdict a declarative check expecting completion gets.
pub(crate) async fn run_to_completion(
    h: &Harness,
    key: &str,
    check: &CheckSpec,
    spec: &crate::suite::ActionSpec,
) -> Result<(PreparedAction, Outcome), Verdict> {
    let prepared = h.upload(key, spec).await.map_err(StepError::precondition)?;
    let (outcome, trace) = h.execute(&prepared, h.options.timeout).await;
    let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
    if outcome.class() != OutcomeClass::Completed {
        let mut completed = check.clone();
        completed.expect = Default::default();
        return Err(
            evaluate::judge(&completed, &outcome, &trace.stages, None, &h.vars).with_outcome(outcome.recorded_class())
        );
    }
    // Outside `run` (a unit test calling a helper) there is no one to tell.
    let _ = COMPLETED.try_with(|ran| ran.set(true));
    Ok((prepared, outcome))
}

/// Runs the check's action, expecting it to complete with a probe report.
pub(crate) async fn completed_report(h: &Harness, check: &CheckSpec) -> Result<(PreparedAction, Value), Verdict> {
    report_of(h, &check.id, check, &check.action).await
}

/// Runs `spec` (one of the check's actions, cached under `key`), expecting it
/// to complete with a probe report.
pub(crate) async fn report_of(
    h: &Harness,
    key: &str,
    check: &CheckSpec,
    spec: &crate::suite::ActionSpec,
) -> Result<(PreparedAction, Value), Verdict> {
    let (prepared, outcome) = run_to_completion(h, key, check, spec).await?;
    let probe = h.probe_output(&outcome).await.map_err(StepError::precondition)?;
    match probe.map(|p| (p.report, p.stdout_excerpt)) {
        Some((Ok(report), _)) => Ok((prepared, report)),
        Some((Err(why), stdout)) => Err(Verdict::new(
            unmet(check),
            format!("the action ran but produced no probe report ({why})"),
        )
        .with("stdout", Some("a probe report (one JSON object)".into()), stdout)),
        None => Err(Verdict::error("completed without an action result")),
    }
}
