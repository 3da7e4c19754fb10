//! JUnit XML for CI gates: a `testsuite` per suite, a `testcase` per check.
//! FAIL is a `failure`, ERROR an `error`, SKIP `skipped`; WARN passes (a
//! SHOULD is not a gate) and carries its warning in `system-out`.

use junit_report::{Duration, OffsetDateTime, ReportBuilder, TestCase, TestSuiteBuilder};

use crate::verdict::{CheckResult, RunSummary, VerdictKind};

fn details(r: &CheckResult) -> String {
    let mut text = format!(
        "{} {} [{}; {}]\n{}\nsource: {}\n",
        r.verdict.kind,
        r.id,
        r.severity.label(),
        r.tags.join(", "),
        r.verdict.reason,
        r.source
    );
    if let Some(hint) = &r.hint {
        text.push_str(&format!("hint: {hint}\n"));
    }
    for line in super::evidence_lines(&r.verdict.evidence) {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

fn testcase(r: &CheckResult) -> TestCase {
    let time = Duration::seconds_f64(r.duration.as_secs_f64());
    let mut tc = match r.verdict.kind {
        VerdictKind::Pass | VerdictKind::Warn => TestCase::success(&r.id, time),
        VerdictKind::Fail => TestCase::failure(&r.id, time, "FAIL", &super::printable(&r.verdict.reason)),
        VerdictKind::Error => TestCase::error(&r.id, time, "ERROR", &super::printable(&r.verdict.reason)),
        VerdictKind::Skip => TestCase::skipped_with_cause(&r.id, "SKIP", &super::printable(&r.verdict.reason)),
    };
    tc.set_classname(&r.suite);
    // Control characters are not allowed in XML 1.0, whoever sent them.
    tc.set_system_out(&super::printable(&details(r)));
    tc
}

/// The readiness answer as test cases: `builds-here` fails when BuildStream
/// does not build, and each feature the user needs (`--needs`) fails when
/// unavailable; features no check assessed are skipped; the others pass
/// with their state in `system-out`.
fn readiness_cases(summary: &RunSummary) -> Vec<TestCase> {
    use crate::readiness::BuildsHere;
    let r = crate::readiness::assess(summary, &summary.needs);
    let zero = Duration::ZERO;
    let text = super::printable(&r.render());
    let mut builds = match r.builds_here {
        BuildsHere::No => TestCase::failure("builds-here", zero, "FAIL", "BuildStream does not build here"),
        BuildsHere::Undecided => TestCase::error("builds-here", zero, "ERROR", "a blocker check could not decide"),
        BuildsHere::NotAssessed => TestCase::skipped_with_cause("builds-here", "SKIP", "partial run"),
        BuildsHere::Yes => TestCase::success("builds-here", zero),
    };
    builds.set_classname("buildstream-readiness");
    builds.set_system_out(&text);
    let mut cases = vec![builds];
    for (name, f) in &r.features {
        let id = format!("feature.{name}");
        let mut tc = if f.state == crate::readiness::FeatureState::NotAssessed {
            TestCase::skipped_with_cause(&id, "SKIP", "no check of the feature ran")
        } else if summary.needs.contains(name) && !f.state.usable() {
            TestCase::failure(&id, zero, "FAIL", &format!("needed feature {name} is {}", f.state.label()))
        } else {
            TestCase::success(&id, zero)
        };
        tc.set_classname("buildstream-readiness");
        tc.set_system_out(&format!("{name}: {}", f.state.label()));
        cases.push(tc);
    }
    cases
}

/// Renders the run as a JUnit XML document.
pub fn render(summary: &RunSummary) -> String {
    let mut suites: Vec<(String, Vec<TestCase>)> = Vec::new();
    for r in &summary.results {
        match suites.iter_mut().find(|(name, _)| *name == r.suite) {
            Some((_, cases)) => cases.push(testcase(r)),
            None => suites.push((r.suite.clone(), vec![testcase(r)])),
        }
    }
    suites.push(("buildstream-readiness".to_string(), readiness_cases(summary)));
    // The run's own start time, not "now": the same verdicts give the same XML.
    let timestamp =
        OffsetDateTime::from_unix_timestamp(summary.started_at as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut report = ReportBuilder::new();
    for (name, cases) in suites {
        report.add_testsuite(TestSuiteBuilder::new(&name).set_timestamp(timestamp).add_testcases(cases).build());
    }
    let mut out = Vec::new();
    match report.build().write_xml(&mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("<!-- JUnit rendering failed: {e} -->"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Verdict;

    fn result(id: &str, verdict: Verdict) -> CheckResult {
        crate::verdict::fixtures::result(id, "blocker", verdict)
    }

    #[test]
    fn verdict_kinds_map_to_junit_elements_and_output_is_stable() {
        let summary = crate::verdict::fixtures::summary(vec![
            result("a.pass", Verdict::pass("ok")),
            result("a.fail", Verdict::new(VerdictKind::Fail, "bad <&> \"x\"").with("cwd", Some("/w".into()), "/tmp/w")),
            result("b.warn", Verdict::new(VerdictKind::Warn, "meh \x1b[31mred\x07\x00")),
            result("b.error", Verdict::error("unreachable")),
            result("b.skip", Verdict::skip("n/a")),
        ]);
        let xml = render(&summary);
        assert_eq!(xml, render(&summary), "pure function of the verdicts");
        // a, b and the readiness suite, whose builds-here fails on the blocker a.fail.
        assert_eq!(xml.matches("<testsuite ").count(), 3);
        assert_eq!(xml.matches("<failure").count(), 2);
        assert!(xml.contains("name=\"builds-here\""), "{xml}");
        assert_eq!(xml.matches("<error").count(), 1);
        assert_eq!(xml.matches("<skipped").count(), 1);
        assert!(xml.contains("bad &lt;&amp;&gt;"), "{xml}");
        assert!(xml.contains("cwd: observed /tmp/w (expected /w)"), "{xml}");
        assert!(xml.contains("2023-11-14"), "{xml}");
        assert!(!xml.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r'), "{xml:?}");
    }
}
