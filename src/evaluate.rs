//! Judging a declarative check: the outcome class, the exit code and the
//! probe's report against what the check expects.

use serde_json::Value;

use crate::action::Vars;
use crate::execute::Outcome;
use crate::suite::{CheckSpec, OutcomeClass, ProbeAssertion};
use crate::verdict::{Verdict, VerdictKind};

/// Follows a parsed path into a JSON value (array elements by index).
pub fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| match v {
        Value::Object(o) => o.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A value shortened for one-line reasons.
pub fn excerpt(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

fn keys_of(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Object(o) => Some(o.keys().cloned().collect()),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::String(h), Value::String(n)) => h.contains(n.as_str()),
        (Value::Array(a), n) => a.contains(n),
        _ => false,
    }
}

/// Checks one assertion; on mismatch returns (expected, observed) texts.
pub fn check_assertion(a: &ProbeAssertion, report: &Value, vars: &Vars) -> Result<(), (String, String)> {
    let path = crate::suite::parse_field_path(&a.field).map_err(|e| (e, String::new()))?;
    let observed = lookup(report, &path);
    let shown = observed.map(excerpt).unwrap_or_else(|| "absent".into());
    let fail = |expected: String| Err((expected, shown.clone()));
    let null = Value::Null;
    let value = observed.unwrap_or(&null);
    if let Some(want) = &a.equals {
        let want = vars.expand_json(want);
        return if *value == want { Ok(()) } else { fail(excerpt(&want)) };
    }
    if let Some(unwanted) = &a.not_equals {
        let unwanted = vars.expand_json(unwanted);
        return if *value != unwanted { Ok(()) } else { fail(format!("not {}", excerpt(&unwanted))) };
    }
    if let Some(options) = &a.one_of {
        let options: Vec<Value> = options.iter().map(|o| vars.expand_json(o)).collect();
        return if options.contains(value) {
            Ok(())
        } else {
            fail(format!("one of {}", excerpt(&Value::Array(options))))
        };
    }
    if let Some(needle) = &a.contains {
        let needle = vars.expand_json(needle);
        return if contains(value, &needle) { Ok(()) } else { fail(format!("to contain {}", excerpt(&needle))) };
    }
    if let Some(needle) = &a.not_contains {
        let needle = vars.expand_json(needle);
        return if observed.is_some() && !contains(value, &needle) {
            Ok(())
        } else {
            fail(format!("not to contain {}", excerpt(&needle)))
        };
    }
    if let Some(required) = &a.keys_include {
        let Some(keys) = keys_of(value) else { return fail(format!("entries including {required:?}")) };
        let missing: Vec<&String> = required.iter().filter(|k| !keys.contains(k)).collect();
        return if missing.is_empty() { Ok(()) } else { Err((format!("entries including {missing:?}"), shown)) };
    }
    if let Some(allowed) = &a.keys_within {
        let Some(keys) = keys_of(value) else { return fail(format!("entries only among {allowed:?}")) };
        let extra: Vec<&String> = keys.iter().filter(|k| !allowed.contains(k)).collect();
        return if extra.is_empty() {
            Ok(())
        } else {
            Err((format!("entries only among {allowed:?}"), format!("unexpected {extra:?} in {shown}")))
        };
    }
    if let Some(n) = a.length {
        return match value.as_array() {
            Some(arr) if arr.len() == n => Ok(()),
            _ => fail(format!("{n} elements")),
        };
    }
    Err(("an operator".into(), "none".into()))
}

/// What the runner learned from a completed action, for the probe assertions.
#[derive(Debug, Clone)]
pub struct ProbeOutput {
    /// The parsed report, or why there is none.
    pub report: Result<Value, String>,
    /// Start of stdout and stderr, for evidence when there is no report.
    pub stdout_excerpt: String,
    /// Start of stderr, likewise (its first 2 KiB).
    pub stderr_excerpt: String,
}

/// Whether an ActionResult shows that the command started: an exit code,
/// output, logs, or an execution start time. Servers attach an empty result
/// to refusals (buildbox-run's "Unsupported ISA"), which shows nothing ran.
pub fn command_ran(r: &bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult) -> bool {
    let started = r.execution_metadata.as_ref().is_some_and(|m| m.execution_start_timestamp.is_some());
    let log = |raw: &[u8], d: &Option<bazel_remote_apis::build::bazel::remote::execution::v2::Digest>| {
        !raw.is_empty() || d.as_ref().is_some_and(|d| d.size_bytes > 0)
    };
    #[allow(deprecated)] // output_file_symlinks and output_directory_symlinks still count as outputs.
    let outputs = !r.output_files.is_empty()
        || !r.output_directories.is_empty()
        || !r.output_symlinks.is_empty()
        || !r.output_file_symlinks.is_empty()
        || !r.output_directory_symlinks.is_empty();
    started
        || r.exit_code != 0
        || log(&r.stdout_raw, &r.stdout_digest)
        || log(&r.stderr_raw, &r.stderr_digest)
        || outputs
}

/// Judges a declarative check from what the server did, told the execution
/// stages the operation went through: an action that must not run (no
/// `completed` expected) and reached EXECUTING or produced a result ran,
/// whatever status it ended with. Callers record the outcome class on the
/// verdict (`Verdict::with_outcome`) for the readiness answer.
pub fn judge(
    check: &CheckSpec,
    outcome: &Outcome,
    stages: &[String],
    probe: Option<&ProbeOutput>,
    vars: &Vars,
) -> Verdict {
    let unmet = VerdictKind::for_unmet(check.severity);
    let expected = check.expect.outcome_set();
    let class = outcome.class();
    if !expected.contains(OutcomeClass::Completed) {
        let executed = stages.iter().any(|s| s == "EXECUTING") || outcome.result().is_some_and(command_ran);
        if executed && class != OutcomeClass::Completed {
            return Verdict::new(unmet, format!("it ran on a worker and then ended {}", outcome.describe())).with(
                "outcome",
                Some(format!("{}, without running", expected.describe())),
                format!("stages {}; {}", stages.join(" → "), outcome.describe()),
            );
        }
    }
    if !expected.contains(class) {
        // Queued at the budget on a check of a feature: elements using it
        // would wait for ever. A finding (hang risk), not an undecided run.
        if class == OutcomeClass::Queued
            && check.impact.feature().is_some()
            && expected.contains(OutcomeClass::Completed)
        {
            return Verdict::new(VerdictKind::Warn, format!("stays queued: {}", outcome.describe())).with(
                "outcome",
                Some(expected.describe()),
                outcome.describe(),
            );
        }
        // Requeued again and again: the server does not finish an action it
        // dispatched and will not (a client waiting on it hangs). A finding,
        // reported at once rather than at the budget.
        if matches!(outcome, Outcome::Requeued { .. }) && expected.contains(OutcomeClass::Completed) {
            return Verdict::new(unmet, format!("the server keeps requeueing it: {}", outcome.describe())).with(
                "outcome",
                Some(expected.describe()),
                format!("stages {}; {}", stages.join(" → "), outcome.describe()),
            );
        }
        // Out of budget while expecting completion: nobody can tell whether it
        // would have finished, so the harness did not decide.
        if matches!(class, OutcomeClass::Queued | OutcomeClass::Executing) && expected.contains(OutcomeClass::Completed)
        {
            let observed = if stages.is_empty() {
                outcome.describe()
            } else {
                format!("stages {}; {}", stages.join(" → "), outcome.describe())
            };
            return Verdict::error(format!("undecided: {}", outcome.describe())).with(
                "outcome",
                Some(expected.describe()),
                observed,
            );
        }
        return Verdict::new(unmet, format!("expected {}, got {}", expected.describe(), outcome.describe())).with(
            "outcome",
            Some(expected.describe()),
            outcome.describe(),
        );
    }
    if class != OutcomeClass::Completed {
        if let Some(want) = &check.expect.code {
            let got = outcome.error_code().map(crate::suite::status_code_name);
            if got.as_deref() != Some(want.as_str()) {
                return Verdict::new(unmet, format!("answered {}, expected {want}", outcome.describe())).with(
                    "code",
                    Some(want.clone()),
                    got.unwrap_or_else(|| "none".into()),
                );
            }
        }
        return Verdict::pass(outcome.describe()).with("outcome", Some(expected.describe()), outcome.describe());
    }
    let exit_code = outcome.result().map(|r| r.exit_code).unwrap_or_default();
    if let Some(want) = check.expect.exit_code {
        if exit_code != want {
            let mut v = Verdict::new(unmet, format!("exit code {exit_code}, expected {want}")).with(
                "exit_code",
                Some(want.to_string()),
                exit_code.to_string(),
            );
            if let Some(p) = probe {
                v = v.with("stderr", None, p.stderr_excerpt.clone());
            }
            return v;
        }
    }
    if check.expect.probe.is_empty() {
        return Verdict::pass(outcome.describe());
    }
    let Some(probe) = probe else {
        return Verdict::error("probe assertions present but no probe output was collected");
    };
    let report = match &probe.report {
        Ok(r) => r,
        Err(why) => {
            return Verdict::new(unmet, format!("the action ran but produced no probe report ({why})"))
                .with("exit_code", None, exit_code.to_string())
                .with("stdout", Some("a probe report (one JSON object)".into()), probe.stdout_excerpt.clone())
                .with("stderr", None, probe.stderr_excerpt.clone());
        }
    };
    let mut failures = Vec::new();
    let mut shown = Vec::new();
    for a in &check.expect.probe {
        match check_assertion(a, report, vars) {
            Ok(()) => {
                if shown.len() < 2 {
                    let v = crate::suite::parse_field_path(&a.field).ok().and_then(|p| lookup(report, &p).map(excerpt));
                    shown.push(format!("{} = {}", a.field, v.unwrap_or_default()));
                }
            }
            Err((exp, obs)) => failures.push((a.field.clone(), exp, obs)),
        }
    }
    if failures.is_empty() {
        return Verdict::pass(format!("completed; {}", shown.join("; ")));
    }
    let (field, exp, obs) = &failures[0];
    let mut v = Verdict::new(unmet, format!("probe `{field}` is {obs}, expected {exp}"));
    let about_env = failures.iter().any(|(f, _, _)| f == "env" || f.starts_with("env."));
    for (field, exp, obs) in failures {
        v = v.with(format!("probe.{field}"), Some(exp), obs);
    }
    if about_env && crate::probe::withholds_values(report) {
        v = v.with("note", None, crate::probe::ENV_NOTE);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    #[rstest]
    #[case("cwd", &["cwd"])]
    #[case("uname.isa", &["uname", "isa"])]
    #[case("paths[/etc/os-release].exists", &["paths", "/etc/os-release", "exists"])]
    #[case("root[a.b]", &["root", "a.b"])]
    fn field_paths(#[case] path: &str, #[case] want: &[&str]) {
        assert_eq!(crate::suite::parse_field_path(path).unwrap(), want);
    }

    #[rstest]
    #[case("")]
    #[case("a[")]
    #[case("a]")]
    #[case("paths[/var/empty.type")]
    fn bad_field_paths(#[case] path: &str) {
        assert!(crate::suite::parse_field_path(path).is_err());
    }

    fn vars() -> Vars {
        Vars { isa: "x86-64".into(), foreign_isa: "aarch64".into(), os: "linux".into() }
    }

    fn assert_on(field: &str, f: impl FnOnce(&mut ProbeAssertion)) -> ProbeAssertion {
        let mut a = ProbeAssertion { field: field.into(), ..Default::default() };
        f(&mut a);
        a
    }

    #[test]
    fn leaked_variables_are_judged_by_name_without_their_values() {
        let stdout = br#"{"probe_version": 2, "env": {"HOME": "/tmp", "PATH": "/usr/bin", "CI_TOKEN": "s3cret"}}"#;
        let report = crate::probe::parse_report(stdout).unwrap();
        let v = vars();
        let within = assert_on("env", |a| a.keys_within = Some(vec!["HOME".into(), "PATH".into()]));
        let (_, obs) = check_assertion(&within, &report, &v).unwrap_err();
        assert!(obs.contains("CI_TOKEN") && !obs.contains("s3cret"), "{obs}");
        let include = assert_on("env", |a| a.keys_include = Some(vec!["CI_TOKEN".into()]));
        assert!(check_assertion(&include, &report, &v).is_ok());
        assert!(check_assertion(&assert_on("env.HOME", |a| a.equals = Some(json!("/tmp"))), &report, &v).is_ok());
    }

    #[test]
    fn operators_pass_and_fail() {
        let r = json!({"cwd": "/w", "uname": {"isa": "x86-64"}, "root": {"usr": "dir", "proc": "dir"}, "pids": [1, 2]});
        let v = vars();
        assert!(check_assertion(&assert_on("uname.isa", |a| a.equals = Some(json!("${isa}"))), &r, &v).is_ok());
        assert!(check_assertion(&assert_on("uname.isa", |a| a.equals = Some(json!("${foreign_isa}"))), &r, &v).is_err());
        assert!(check_assertion(&assert_on("root", |a| a.keys_include = Some(vec!["usr".into()])), &r, &v).is_ok());
        assert!(check_assertion(&assert_on("root", |a| a.keys_include = Some(vec!["etc".into()])), &r, &v).is_err());
        assert!(check_assertion(
            &assert_on("root", |a| a.keys_within = Some(vec!["usr".into(), "proc".into()])),
            &r,
            &v
        )
        .is_ok());
        let (_, obs) =
            check_assertion(&assert_on("root", |a| a.keys_within = Some(vec!["usr".into()])), &r, &v).unwrap_err();
        assert!(obs.contains("proc"), "{obs}");
        assert!(check_assertion(&assert_on("pids", |a| a.length = Some(2)), &r, &v).is_ok());
        assert!(check_assertion(&assert_on("pids", |a| a.contains = Some(json!(3))), &r, &v).is_err());
        assert!(check_assertion(&assert_on("cwd", |a| a.one_of = Some(vec![json!("/w"), json!("/x")])), &r, &v).is_ok());
        // `not_contains` on an absent field is not a pass: nothing was observed.
        assert!(check_assertion(&assert_on("nope", |a| a.not_contains = Some(json!("x"))), &r, &v).is_err());
        assert!(check_assertion(&assert_on("cwd", |a| a.not_equals = Some(json!("/w"))), &r, &v).is_err());
    }
}
