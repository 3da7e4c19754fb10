//! JUnit XML for CI gates: a `testsuite` per suite, a `testcase` per check.
//! FAIL is a `failure`, ERROR an `error`, SKIP `skipped`; WARN passes (a
//! SHOULD is not a gate) and carries its warning in `system-out`.

use junit_report::{Duration, ReportBuilder, TestCase, TestSuiteBuilder};

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
        VerdictKind::Fail => TestCase::failure(&r.id, time, "FAIL", &r.verdict.reason),
        VerdictKind::Error => TestCase::error(&r.id, time, "ERROR", &r.verdict.reason),
        VerdictKind::Skip => TestCase::skipped_with_cause(&r.id, "SKIP", &r.verdict.reason),
    };
    tc.set_classname(&r.suite);
    tc.set_system_out(&details(r));
    tc
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
    let mut report = ReportBuilder::new();
    for (name, cases) in suites {
        report.add_testsuite(TestSuiteBuilder::new(&name).add_testcases(cases).build());
    }
    let mut out = Vec::new();
    match report.build().write_xml(&mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("<!-- JUnit rendering failed: {e} -->"),
    }
}
