//! Built-in checks on the ActionCache service: what is stored can be read
//! back, and what a hit references can be fetched.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, Digest, FindMissingBlobsRequest, GetActionResultRequest, UpdateActionResultRequest,
};
use tonic::Code;

use super::{run_to_completion, unmet};
use crate::digest;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::{StepError, Verdict};

/// GetActionResult for `action`: the result, `None` on NOT_FOUND; any other
/// answer leaves the calling check undecided (it is not what is tested).
pub(super) async fn get(h: &Harness, action: &Digest) -> Result<Option<ActionResult>, Verdict> {
    let c = h.clients();
    let msg = GetActionResultRequest {
        instance_name: c.ac_instance.clone(),
        action_digest: Some(action.clone()),
        ..Default::default()
    };
    match c.unary("GetActionResult", &c.action_cache, msg, |mut s, r| async move { s.get_action_result(r).await }).await
    {
        Ok(r) => Ok(Some(r)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(Verdict::error(format!("GetActionResult: {:?}: {}", s.code(), s.message()))),
    }
}

/// The digests of `wanted` that FindMissingBlobs reports missing.
async fn missing(h: &Harness, wanted: Vec<Digest>) -> Result<Vec<Digest>, Verdict> {
    let c = h.clients();
    let msg =
        FindMissingBlobsRequest { instance_name: c.cas_instance.clone(), blob_digests: wanted, digest_function: 0 };
    c.unary("FindMissingBlobs", &c.cas, msg, |mut s, r| async move { s.find_missing_blobs(r).await })
        .await
        .map(|r| r.missing_blob_digests)
        .map_err(|s| Verdict::error(format!("FindMissingBlobs: {:?}: {}", s.code(), s.message())))
}

/// Where updates are allowed, a result stored with UpdateActionResult (for an
/// Action and Command uploaded first, as the spec asks) is what
/// GetActionResult returns.
pub(super) async fn update_roundtrip(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let allowed = h
        .capabilities
        .cache_capabilities
        .as_ref()
        .and_then(|c| c.action_cache_update_capabilities.as_ref())
        .is_some_and(|u| u.update_enabled);
    if !allowed {
        return Ok(Verdict::skip(
            "the server does not allow clients to update the action cache (update_enabled unset)",
        ));
    }
    let prepared = h.upload(&check.id, &check.action).await.map_err(StepError::precondition)?;
    let stdout = format!("stored by {} {}\n", check.id, uuid::Uuid::new_v4()).into_bytes();
    let stdout_digest = digest::of_bytes(&stdout);
    let blobs = [(stdout_digest.hash.clone(), (stdout_digest.clone(), Arc::new(stdout)))].into_iter().collect();
    h.cas.upload(&blobs).await.map_err(|e| Verdict::error(format!("uploading stdout: {e}")))?;
    let stored = ActionResult { exit_code: 7, stdout_digest: Some(stdout_digest.clone()), ..Default::default() };
    let c = h.clients();
    let update = |result: ActionResult| {
        let msg = UpdateActionResultRequest {
            instance_name: c.ac_instance.clone(),
            action_digest: Some(prepared.action_digest.clone()),
            action_result: Some(result),
            ..Default::default()
        };
        c.unary("UpdateActionResult", &c.action_cache, msg, |mut s, r| async move { s.update_action_result(r).await })
    };
    if let Err(s) = update(stored.clone()).await {
        if crate::execute::is_undecided(&s) {
            return Ok(Verdict::error(format!("UpdateActionResult: {}", s.message())));
        }
        return Ok(Verdict::new(unmet(check), format!("UpdateActionResult answered {:?}: {}", s.code(), s.message()))
            .with("UpdateActionResult", Some("OK (update_enabled is set)".into()), format!("{:?}", s.code())));
    }
    match get(h, &prepared.action_digest).await? {
        Some(back) if back.exit_code == stored.exit_code && back.stdout_digest == stored.stdout_digest => {
            Ok(Verdict::pass("the stored result reads back"))
        }
        Some(back) => Ok(Verdict::new(unmet(check), "GetActionResult returns another result than the one stored")
            .with(
                "ActionResult",
                Some(format!("exit code 7, stdout {}", digest::show(&stdout_digest))),
                format!(
                    "exit code {}, stdout {}",
                    back.exit_code,
                    back.stdout_digest.as_ref().map_or_else(|| "none".into(), digest::show)
                ),
            )),
        None => {
            // The control: the same action with exit code 0. Buildfarm stores
            // only successful results; another server may store none at all.
            let success = ActionResult { exit_code: 0, ..stored.clone() };
            let control = match update(success).await {
                Err(s) if crate::execute::is_undecided(&s) => None,
                Err(s) => Some(format!("UpdateActionResult answered {:?}", s.code())),
                Ok(_) => match get(h, &prepared.action_digest).await? {
                    Some(back) if back.exit_code == 0 && back.stdout_digest == stored.stdout_digest => {
                        Some("stored and read back".into())
                    }
                    Some(_) => Some("another result read back".into()),
                    None => Some("NOT_FOUND too".into()),
                },
            };
            let reason = match control.as_deref() {
                Some("stored and read back") => {
                    "UpdateActionResult answered OK for a result with exit code 7 and \
                     dropped it, while the same result with exit code 0 reads back: the server silently drops \
                     failing results"
                }
                Some("NOT_FOUND too") => {
                    "UpdateActionResult answered OK, then GetActionResult NOT_FOUND, for a \
                     failing and for a successful result alike: the server drops every update"
                }
                _ => "UpdateActionResult answered OK, then GetActionResult NOT_FOUND",
            };
            let mut verdict = Verdict::new(unmet(check), reason).with(
                "GetActionResult after storing exit code 7",
                Some("the stored result".into()),
                "NOT_FOUND",
            );
            if let Some(control) = control {
                verdict =
                    verdict.with("the same with exit code 0 (control)", Some("stored and read back".into()), control);
            }
            Ok(verdict)
        }
    }
}

/// On an action-cache hit, the blobs the result references are in the CAS.
pub(super) async fn hit_blobs_available(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (prepared, _) = run_to_completion(h, &check.id, check, &check.action).await?;
    let Some(result) = get(h, &prepared.action_digest).await? else {
        return Ok(Verdict::skip("the server did not cache the completed action's result; nothing to look at"));
    };
    let mut referenced: Vec<Digest> = result.stdout_digest.iter().chain(result.stderr_digest.iter()).cloned().collect();
    referenced.extend(result.output_files.iter().filter_map(|f| f.digest.clone()));
    referenced.extend(result.output_directories.iter().filter_map(|d| d.tree_digest.clone()));
    referenced.extend(result.output_directories.iter().filter_map(|d| d.root_directory_digest.clone()));
    referenced.retain(|d| d.size_bytes > 0);
    if referenced.is_empty() {
        return Ok(Verdict::pass("the cached result references no blobs"));
    }
    let absent = missing(h, referenced.clone()).await?;
    if absent.is_empty() {
        return Ok(Verdict::pass(format!(
            "the {} blob(s) the cached result references are in the CAS",
            referenced.len()
        )));
    }
    let names: Vec<String> = absent.iter().map(digest::show).collect();
    Ok(Verdict::new(unmet(check), format!("{} blob(s) referenced by a cached result are missing", absent.len())).with(
        "FindMissingBlobs",
        Some("none missing".into()),
        format!("{names:?}"),
    ))
}
