//! Built-in checks of the `api-versions` suite: behaviour a server's
//! advertised `high_api_version` implies and no other check covers.
//! (`max_cas_blob_size_bytes` is `cas.blob-size-limit`; digest functions,
//! their resource-name segment (v2.11) and split/splice (v2.12) have suites
//! of their own.)

use bazel_remote_apis::build::bazel::semver::SemVer;

use super::completed_report;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::Verdict;

fn version(v: &Option<SemVer>) -> Option<(i32, i32)> {
    v.as_ref().map(|v| (v.major, v.minor)).filter(|&(major, _)| major > 0)
}

/// From v2.3 a relative argv[0] holding a separator resolves against the
/// working directory (before, against the input root): the check's action
/// runs `tools/probe`, which exists only under the working directory.
pub(super) async fn argv0_relative(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let Some((major, minor)) = version(&h.capabilities.high_api_version) else {
        return Ok(Verdict::skip("high_api_version is not advertised, so no version's rule applies"));
    };
    if (major, minor) < (2, 3) {
        return Ok(Verdict::skip(format!(
            "high_api_version is {major}.{minor}: before v2.3 a relative argv[0] resolved against the input root"
        )));
    }
    if h.capabilities.execution_capabilities.as_ref().is_none_or(|e| !e.exec_enabled) {
        return Ok(Verdict::skip("execution is not enabled"));
    }
    let argv0 = check.action.argv.as_ref().and_then(|a| a.first()).cloned().unwrap_or_default();
    // Ends the check with FAIL (with the outcome as evidence) unless the
    // action completed with a probe report: only the probe under the
    // working directory could have made one.
    completed_report(h, check).await?;
    Ok(Verdict::pass(format!("high_api_version {major}.{minor}: argv[0] {argv0:?} ran from the working directory")))
}
