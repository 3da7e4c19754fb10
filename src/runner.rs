//! Runs checks, declarative and built-in alike, against one target: dispatch
//! by kind, the shared positive control, concurrency, and results.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::action::PreparedAction;
use crate::evaluate;
use crate::execute::Trace;
pub use crate::harness::{Harness, RunOptions, TargetError};
use crate::suite::{CheckSpec, OutcomeClass};
use crate::verdict::{CheckResult, Verdict, VerdictKind};

/// Runs one check to a verdict; never panics on server data.
pub async fn run_check(h: &Harness, check: &CheckSpec) -> Verdict {
    match &check.builtin {
        Some(id) => match crate::builtin::find(id) {
            Some(f) => crate::builtin::run(f, h, check).await,
            None => Verdict::error(format!("no built-in check named `{id}`")),
        },
        None => run_declarative(h, check).await,
    }
}

async fn run_declarative(h: &Harness, check: &CheckSpec) -> Verdict {
    if !check.control {
        return run_action(h, check).await;
    }
    // The positive control runs beside the check, so it costs no wall time.
    let (verdict, control) = tokio::join!(run_action(h, check), run_control(h));
    match control {
        // A check that saw the action run stands on its own evidence.
        Err(why) if verdict.kind == VerdictKind::Pass => Verdict::error(format!(
            "positive control failed, so the refusal proves nothing: {why}"
        ))
        .with("control", Some("the same action on the native platform completes".into()), why),
        _ => verdict,
    }
}

/// The default BuildStream-shaped action on the native platform must
/// complete: proof that the cluster runs actions at all while it refuses
/// others. Run once per run (beside the first check that needs it) and
/// shared, so the controls cost one action.
async fn run_control(h: &Harness) -> Result<(), String> {
    h.control
        .get_or_init(|| async {
            let prepared =
                h.upload("positive-control", &crate::suite::ActionSpec::default()).await.map_err(|e| e.to_string())?;
            let (outcome, _) = h.execute(&prepared, h.options.timeout).await;
            match outcome {
                Ok(o) if o.class() == OutcomeClass::Completed => Ok(()),
                Ok(o) => Err(format!("the native control ended {}", o.describe())),
                Err(e) => Err(format!("the native control: {e}")),
            }
        })
        .await
        .clone()
}

async fn run_action(h: &Harness, check: &CheckSpec) -> Verdict {
    let prepared = match h.upload(&check.id, &check.action).await {
        Ok(p) => p,
        Err(e) => return e.precondition(),
    };
    let expected = check.expect.outcome_set();
    // An action that must not run only needs long enough to see it answered or left queued.
    let budget = if expected.contains(OutcomeClass::Completed) { h.options.timeout } else { h.options.queue_wait };
    let (outcome, trace) = h.execute(&prepared, budget).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return with_trace(Verdict::error(e.to_string()), &prepared, &trace),
    };
    let probe = if outcome.class() == OutcomeClass::Completed && !check.expect.probe.is_empty() {
        match h.probe_output(&outcome).await {
            Ok(p) => p,
            Err(e) => return with_trace(e.precondition(), &prepared, &trace),
        }
    } else {
        None
    };
    let verdict =
        evaluate::judge(check, &outcome, &trace.stages, probe.as_ref(), &h.vars).with_outcome(outcome.recorded_class());
    with_trace(verdict, &prepared, &trace)
}

/// Runs checks with at most `jobs` at once; `on_done` sees each result as it lands.
/// Results come back in the order of `checks`.
pub async fn run_all(h: &Harness, checks: &[CheckSpec], on_done: impl Fn(&CheckResult)) -> Vec<CheckResult> {
    let jobs = h.options.jobs.max(1);
    // Built-in checks send several actions or wait on purpose: start them
    // first, so the short declarative ones fill the gaps instead of the tail.
    let mut order: Vec<(usize, &CheckSpec)> = checks.iter().enumerate().collect();
    order.sort_by_key(|(_, c)| c.builtin.is_none());
    let mut indexed: Vec<(usize, CheckResult)> = futures_util::stream::iter(order)
        .map(|(i, check)| async move {
            let start = Instant::now();
            // Each check's retries are logged apart, so its evidence says
            // how many transient answers its verdict outlived.
            let retries = reapi_client::retry::RetryLog::default();
            let mut verdict = retries.scope(run_check(h, check)).await;
            if let Some(summary) = retries.summary() {
                verdict = verdict.with("retries", None, summary);
            }
            (i, result_of(check, verdict, start.elapsed()))
        })
        .buffer_unordered(jobs)
        .inspect(|(_, r)| on_done(r))
        .collect()
        .await;
    indexed.sort_by_key(|(i, _)| *i);
    indexed.into_iter().map(|(_, r)| r).collect()
}

/// Every check gets the same ERROR when the target cannot be used.
pub fn all_error(checks: &[CheckSpec], reason: &str) -> Vec<CheckResult> {
    checks.iter().map(|c| result_of(c, Verdict::error(reason.to_string()), Duration::ZERO)).collect()
}

/// Wraps a verdict with the check's identity.
pub fn result_of(check: &CheckSpec, verdict: Verdict, duration: Duration) -> CheckResult {
    CheckResult {
        id: check.id.clone(),
        suite: check.suite.clone(),
        title: check.title.clone(),
        severity: check.severity,
        impact: check.impact.clone(),
        tags: check.tags.clone(),
        source: check.source.clone(),
        verdict,
        hint: None,
        refusal_required: check.builtin.is_none() && !check.expect.outcome_set().contains(OutcomeClass::Completed),
        independent_of_root: check.independent_of_root,
        duration,
    }
}

fn with_trace(mut v: Verdict, prepared: &PreparedAction, trace: &Trace) -> Verdict {
    v = v.with("action", None, crate::digest::show(&prepared.action_digest));
    if let Some(op) = &trace.operation {
        v = v.with("operation", None, op.clone());
    }
    if !trace.stages.is_empty() {
        v = v.with("stages", None, trace.stages.join(" → "));
    }
    if trace.wait_calls > 0 {
        v = v.with("wait_execution_calls", None, trace.wait_calls.to_string());
    }
    v
}
