//! Built-in checks on what GetCapabilities advertises: the answer every
//! client reads first and configures itself from.

use bazel_remote_apis::build::bazel::remote::execution::v2::digest_function;
use bazel_remote_apis::build::bazel::semver::SemVer;

use super::unmet;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::{StepError, Verdict};

fn function_name(value: i32) -> String {
    digest_function::Value::try_from(value).map_or_else(|_| format!("unknown value {value}"), |v| format!("{v:?}"))
}

/// SHA-256 is among the cache's digest functions, and the execution
/// capabilities name a digest function that is among their own list.
pub(super) async fn digest_functions(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let sha256 = digest_function::Value::Sha256 as i32;
    let caps = &h.capabilities;
    let cache: Vec<i32> = caps.cache_capabilities.as_ref().map(|c| c.digest_functions.clone()).unwrap_or_default();
    let names = |list: &[i32]| list.iter().map(|v| function_name(*v)).collect::<Vec<_>>().join(", ");
    if !cache.contains(&sha256) {
        return Ok(Verdict::new(unmet(check), "the cache does not list SHA-256 among its digest functions").with(
            "cache_capabilities.digest_functions",
            Some("including Sha256".into()),
            format!("[{}]", names(&cache)),
        ));
    }
    let Some(exec) = caps.execution_capabilities.as_ref().filter(|e| e.exec_enabled) else {
        return Ok(Verdict::pass("SHA-256 in the cache's digest functions; no execution capabilities"));
    };
    if exec.digest_function == digest_function::Value::Unknown as i32 {
        return Ok(Verdict::new(unmet(check), "execution_capabilities.digest_function is UNKNOWN").with(
            "execution_capabilities.digest_function",
            Some("a digest function (it MUST NOT be UNKNOWN)".into()),
            function_name(exec.digest_function),
        ));
    }
    if !exec.digest_functions.is_empty() && !exec.digest_functions.contains(&exec.digest_function) {
        return Ok(Verdict::new(unmet(check), "execution_capabilities.digest_functions lacks digest_function").with(
            "execution_capabilities.digest_functions",
            Some(format!("including {}", function_name(exec.digest_function))),
            format!("[{}]", names(&exec.digest_functions)),
        ));
    }
    // An empty execution list is "not set", which the spec allows ("if
    // this field is set, it MUST also contain digest_function").
    let listed = if exec.digest_functions.is_empty() {
        "digest_functions not set".to_string()
    } else {
        format!("in [{}]", names(&exec.digest_functions))
    };
    Ok(Verdict::pass(format!(
        "cache: [{}]; execution: {} {listed}",
        names(&cache),
        function_name(exec.digest_function)
    )))
}

fn version(v: &Option<SemVer>) -> Option<(i32, i32, i32)> {
    v.as_ref().map(|v| (v.major, v.minor, v.patch)).filter(|&(major, _, _)| major > 0)
}

fn show(v: Option<(i32, i32, i32)>) -> String {
    v.map_or_else(|| "unset".into(), |(a, b, c)| format!("{a}.{b}.{c}"))
}

/// low_api_version and high_api_version are set, v2, and in order.
pub(super) async fn api_versions(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let caps = &h.capabilities;
    let (low, high) = (version(&caps.low_api_version), version(&caps.high_api_version));
    let observed = format!("low {}, high {}", show(low), show(high));
    let expected = Some("low and high set, major 2, low <= high".to_string());
    match (low, high) {
        (Some(l), Some(h)) if l.0 == 2 && h.0 == 2 && l <= h => Ok(Verdict::pass(observed)),
        (None, _) | (_, None) => Ok(Verdict::new(unmet(check), format!("API versions not advertised: {observed}"))
            .with("low_api_version/high_api_version", expected, observed)),
        _ => Ok(Verdict::new(unmet(check), format!("API version range is not a v2 range: {observed}")).with(
            "low_api_version/high_api_version",
            expected,
            observed,
        )),
    }
}

/// The advertised `symlink_absolute_path_strategy` is what the server does
/// with an input root holding an absolute symlink: ALLOWED runs it,
/// DISALLOWED answers INVALID_ARGUMENT.
pub(super) async fn symlink_strategy(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    use crate::suite::OutcomeClass;
    use bazel_remote_apis::build::bazel::remote::execution::v2::symlink_absolute_path_strategy::Value;
    let advertised = h.capabilities.cache_capabilities.as_ref().map(|c| c.symlink_absolute_path_strategy).unwrap_or(0);
    let strategy = match Value::try_from(advertised) {
        Ok(Value::Unknown) | Err(_) => {
            return Ok(Verdict::skip(format!(
                "symlink_absolute_path_strategy is UNKNOWN ({advertised}): nothing to hold the server to"
            )))
        }
        Ok(v) => v,
    };
    if h.capabilities.execution_capabilities.as_ref().is_none_or(|e| !e.exec_enabled) {
        return Ok(Verdict::skip("execution is not enabled"));
    }
    let prepared = h.upload(&check.id, &check.action).await.map_err(StepError::precondition)?;
    let (outcome, _) = h.execute(&prepared, h.options.timeout).await;
    let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
    if let Some(v) = super::undecided(&outcome, "completed or INVALID_ARGUMENT") {
        return Ok(v);
    }
    let refused = matches!(outcome.class(), OutcomeClass::Rejected | OutcomeClass::Failed)
        && outcome.error_code() == Some(tonic::Code::InvalidArgument);
    let ran = outcome.class() == OutcomeClass::Completed;
    let expected = match strategy {
        Value::Allowed => "completed (absolute symlinks ALLOWED)",
        _ => "INVALID_ARGUMENT (absolute symlinks DISALLOWED)",
    };
    match (strategy, ran, refused) {
        (Value::Allowed, true, _) => Ok(Verdict::pass(format!("ALLOWED, and the action ran: {}", outcome.describe()))),
        (Value::Disallowed, _, true) => {
            Ok(Verdict::pass(format!("DISALLOWED, and the action was refused: {}", outcome.describe())))
        }
        _ => Ok(Verdict::new(
            unmet(check),
            format!("advertises {strategy:?}, but an input root with an absolute symlink {}", outcome.describe()),
        )
        .with("outcome", Some(expected.into()), outcome.describe())),
    }
}
