//! Checks that YAML cannot express, registered by id. Each is an async
//! function from the harness and its check entry to a verdict.

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::action::PreparedAction;
use crate::evaluate;
use crate::runner::Harness;
use crate::suite::{CheckSpec, OutcomeClass};
use crate::verdict::{Verdict, VerdictKind};

/// Signature of a built-in check.
pub type BuiltinFn = for<'a> fn(&'a Harness, &'a CheckSpec) -> BoxFuture<'a, Verdict>;

/// Every built-in check, by the id suites use in `builtin:`.
const REGISTRY: &[(&str, BuiltinFn)] = &[("root-is-input-root", root_is_input_root)];

/// Looks up a built-in check.
pub fn find(id: &str) -> Option<BuiltinFn> {
    REGISTRY.iter().find(|(name, _)| *name == id).map(|(_, f)| *f)
}

/// Ids of all built-in checks (for `list` and validation).
pub fn ids() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(n, _)| *n)
}

/// Runs the check's action, expecting it to complete with a probe report.
/// Anything else becomes the verdict a declarative check would get.
async fn completed_report(h: &Harness, check: &CheckSpec) -> Result<(PreparedAction, Value), Verdict> {
    let prepared = h.upload(&check.action).await.map_err(Verdict::error)?;
    let (outcome, _trace) = h.execute(&prepared, h.options.timeout).await;
    let outcome = outcome.map_err(|e| Verdict::error(e.to_string()))?;
    if outcome.class() != OutcomeClass::Completed {
        let mut completed = check.clone();
        completed.expect = Default::default();
        return Err(evaluate::judge(&completed, &outcome, None, &h.vars));
    }
    let probe = h.probe_output(&outcome).await.map_err(Verdict::error)?;
    match probe.map(|p| (p.report, p.stdout_excerpt)) {
        Some((Ok(report), _)) => Ok((prepared, report)),
        Some((Err(why), stdout)) => Err(Verdict::new(
            VerdictKind::for_unmet(check.severity),
            format!("the action ran but produced no probe report ({why})"),
        )
        .with("stdout", None, stdout)),
        None => Err(Verdict::error("completed without an action result")),
    }
}

/// Entries the sandbox may add to `/` besides the input root: the runtime
/// mounts BuildStream's own sandbox provides (FIELD-NOTES §4).
const RUNTIME_MOUNTS: &[&str] = &["dev", "proc", "tmp", "sys"];

/// `/` inside the action holds exactly the staged top-level entries plus
/// runtime mounts: nothing staged is missing, nothing of the worker host shows.
fn root_is_input_root<'a>(h: &'a Harness, check: &'a CheckSpec) -> BoxFuture<'a, Verdict> {
    Box::pin(async move {
        let (prepared, report) = match completed_report(h, check).await {
            Ok(x) => x,
            Err(v) => return v,
        };
        let Some(root) = report.get("root").and_then(Value::as_object) else {
            return Verdict::new(VerdictKind::for_unmet(check.severity), "the probe could not list `/`")
                .with("probe.errors", None, evaluate::excerpt(&report["errors"]));
        };
        let seen: Vec<&String> = root.keys().collect();
        let missing: Vec<&String> = prepared.root_entries.iter().filter(|e| !root.contains_key(*e)).collect();
        let foreign: Vec<&String> = seen
            .iter()
            .copied()
            .filter(|e| !prepared.root_entries.contains(e) && !RUNTIME_MOUNTS.contains(&e.as_str()))
            .collect();
        let expected = format!("{:?} plus at most {:?}", prepared.root_entries, RUNTIME_MOUNTS);
        if missing.is_empty() && foreign.is_empty() {
            return Verdict::pass(format!("/ holds {seen:?}")).with("root", Some(expected), format!("{seen:?}"));
        }
        let mut why = Vec::new();
        if !foreign.is_empty() {
            why.push(format!("entries not in the input root: {foreign:?}"));
        }
        if !missing.is_empty() {
            why.push(format!("staged entries missing: {missing:?}"));
        }
        Verdict::new(VerdictKind::for_unmet(check.severity), format!("/ is not the input root: {}", why.join("; ")))
            .with("root", Some(expected), format!("{seen:?}"))
            .with("cwd", None, evaluate::excerpt(&report["cwd"]))
    })
}
