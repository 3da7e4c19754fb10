//! JUnit XML for CI gates: a `testsuite` per suite, a `testcase` per check.
//! FAIL is a `failure`, ERROR an `error`, SKIP `skipped`; WARN passes (a
//! SHOULD is not a gate) and carries its warning in `system-out`.

use junit_report::{Duration, OffsetDateTime, ReportBuilder, TestCase, TestSuiteBuilder};

use crate::verdict::{CheckResult, RunSummary, VerdictKind};

/// Text for an attribute or element name: what XML 1.0 does not allow
/// (controls but tab and newline, U+FFFE, U+FFFF) is shown escaped, like
/// everything `printable` escapes; junit-report escapes markup itself.
fn text(s: &str) -> String {
    super::printable(s)
}

/// Text for a CDATA section (junit-report writes `system-out` as one,
/// verbatim): as [`text`], and every `]]>`, which would end the section
/// early, split across two sections so the reader gets it back whole.
fn cdata(s: &str) -> String {
    text(s).replace("]]>", "]]]]><![CDATA[>")
}

/// A check's `system-out`; a consequence (`root`: the root cause its verdict
/// follows from, `Readiness::root_causes`) says so on its second line.
fn details(r: &CheckResult, root: Option<&str>) -> String {
    let mut text = format!("{} {} [{}; {}]\n", r.verdict.kind, r.id, r.severity.label(), r.tags.join(", "));
    if let Some(root) = root {
        text.push_str(&format!("follows from {root} (its command did not run from the input root)\n"));
    }
    text.push_str(&format!("{}\nsource: {}\n", r.verdict.reason, r.source));
    if let Some(hint) = &r.hint {
        text.push_str(&format!("hint: {hint}\n"));
    }
    for line in super::evidence_lines(&r.verdict.evidence) {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

fn testcase(r: &CheckResult, root: Option<&str>) -> TestCase {
    let time = Duration::seconds_f64(r.duration.as_secs_f64());
    // Server text may hold anything; XML 1.0 does not allow everything.
    let id = text(&r.id);
    // A CI page often shows the message alone: the root cause leads it.
    let reason = match root {
        Some(root) => text(&format!("follows from {root}: {}", r.verdict.reason)),
        None => text(&r.verdict.reason),
    };
    let mut tc = match r.verdict.kind {
        VerdictKind::Pass | VerdictKind::Warn => TestCase::success(&id, time),
        VerdictKind::Fail => TestCase::failure(&id, time, "FAIL", &reason),
        VerdictKind::Error => TestCase::error(&id, time, "ERROR", &reason),
        VerdictKind::Skip => TestCase::skipped_with_cause(&id, "SKIP", &reason),
    };
    tc.set_classname(&text(&r.suite));
    tc.set_system_out(&cdata(&details(r, root)));
    tc
}

/// The readiness answer as test cases: `builds-here` fails when BuildStream
/// does not build, and each feature the user needs (`--needs`) fails when
/// unavailable; features no check assessed are skipped; the others pass
/// with their state in `system-out`.
fn readiness_cases(r: &crate::readiness::Readiness, summary: &RunSummary) -> Vec<TestCase> {
    use crate::readiness::{BuildsHere, FeatureState};
    let zero = Duration::ZERO;
    let readiness = cdata(&r.render());
    let mut builds = match r.builds_here {
        BuildsHere::No => TestCase::failure("builds-here", zero, "FAIL", "BuildStream does not build here"),
        BuildsHere::Undecided => TestCase::error("builds-here", zero, "ERROR", "a blocker check could not decide"),
        BuildsHere::NotAssessed => TestCase::skipped_with_cause("builds-here", "SKIP", "partial run"),
        BuildsHere::Yes => TestCase::success("builds-here", zero),
    };
    builds.set_classname("buildstream-readiness");
    builds.set_system_out(&readiness);
    let mut cases = vec![builds];
    for (name, f) in &r.features {
        let id = text(&format!("feature.{name}"));
        let mut tc = if let Some(root) = &f.follows_from {
            TestCase::skipped_with_cause(&id, "SKIP", &text(&format!("not assessed: follows from {root}")))
        } else if f.state == crate::readiness::FeatureState::NotAssessed {
            TestCase::skipped_with_cause(&id, "SKIP", "no check of the feature ran")
        } else if summary.needs.contains(name) && !f.state.usable() {
            TestCase::failure(&id, zero, "FAIL", &text(&format!("needed feature {name} is {}", f.state.label())))
        } else {
            TestCase::success(&id, zero)
        };
        tc.set_classname("buildstream-readiness");
        tc.set_system_out(&cdata(&format!("{name}: {}", f.state.label())));
        cases.push(tc);
    }
    // A missing capability fails the elements that use it: a failure when it
    // gates the run (every capability unless --needs-only), else a pass that
    // says so.
    for (name, c) in &r.capabilities {
        let id = text(&format!("capability.{name}"));
        let mut tc = match c.state {
            FeatureState::NotAssessed if c.follows_from.is_some() => TestCase::skipped_with_cause(
                &id,
                "SKIP",
                &text(&format!("not assessed: follows from {}", c.follows_from.as_deref().unwrap_or_default())),
            ),
            FeatureState::NotAssessed => TestCase::skipped_with_cause(&id, "SKIP", "no check of the capability ran"),
            FeatureState::Undecided if c.gated => {
                TestCase::error(&id, zero, "ERROR", &text(&format!("{} could not be decided", c.facility)))
            }
            _ if c.missing() && c.gated => {
                TestCase::failure(&id, zero, "FAIL", &text(&format!("{} missing: {}", c.facility, c.used_by)))
            }
            _ => TestCase::success(&id, zero),
        };
        tc.set_classname("buildstream-readiness");
        tc.set_system_out(&cdata(&format!("{}: {}", c.facility, c.label())));
        cases.push(tc);
    }
    cases
}

/// Renders the run as a JUnit XML document.
pub fn render(summary: &RunSummary) -> String {
    let readiness = crate::readiness::assess(summary, &summary.needs);
    let mut suites: Vec<(String, Vec<TestCase>)> = Vec::new();
    for r in &summary.results {
        let case = testcase(r, readiness.root_causes.get(&r.id).map(String::as_str));
        match suites.iter_mut().find(|(name, _)| *name == r.suite) {
            Some((_, cases)) => cases.push(case),
            None => suites.push((r.suite.clone(), vec![case])),
        }
    }
    suites.push(("buildstream-readiness".to_string(), readiness_cases(&readiness, summary)));
    // The run's own start time, not "now": the same verdicts give the same XML.
    let timestamp =
        OffsetDateTime::from_unix_timestamp(summary.started_at as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // What was run, on every suite: a CI gate may show any one of them alone.
    let run = cdata(&format!(
        "profile: {}\nreapi-conformance {}\ntarget: {}\n",
        summary.profile.as_deref().unwrap_or("(not recorded)"),
        env!("CARGO_PKG_VERSION"),
        summary.target
    ));
    let mut report = ReportBuilder::new();
    for (name, cases) in suites {
        report.add_testsuite(
            TestSuiteBuilder::new(&text(&name))
                .set_timestamp(timestamp)
                .set_system_out(&run)
                .add_testcases(cases)
                .build(),
        );
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
        assert_eq!(xml.matches("profile: buildstream@2026.12").count(), 3, "every suite names the profile: {xml}");
        assert!(!xml.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r'), "{xml:?}");
    }

    #[test]
    fn a_missing_capability_fails_its_case_unless_needs_only_leaves_it_out() {
        let mut summary = crate::verdict::fixtures::summary(vec![
            result("input-root.root-entries", Verdict::pass("ok")),
            result("sandbox.proc-own-processes", Verdict::new(VerdictKind::Fail, "no procfs")),
            result("sandbox.dev-nodes", Verdict::pass("ok")),
        ]);
        let xml = render(&summary);
        let case = |xml: &str, name: &str| {
            let at = xml.find(&format!("name=\"{name}\"")).unwrap_or_else(|| panic!("{name}: {xml}"));
            xml[at..].split("</testcase>").next().unwrap_or_default().to_string()
        };
        assert!(case(&xml, "capability.proc").contains("<failure"), "{xml}");
        assert!(case(&xml, "capability.proc").contains("clang, cargo, rustc"), "{xml}");
        assert!(!case(&xml, "capability.dev-nodes").contains("<failure"), "{xml}");
        assert!(!case(&xml, "builds-here").contains("<failure"), "plain elements build: {xml}");
        summary.needs_only = true;
        assert!(!case(&render(&summary), "capability.proc").contains("<failure"));
    }

    #[test]
    fn a_consequence_names_its_root_cause() {
        use crate::suite::OutcomeClass;
        let ran = |v: Verdict| v.with_outcome(OutcomeClass::Completed);
        let xml = render(&crate::verdict::fixtures::summary(vec![
            result("input-root.root-entries", ran(Verdict::new(VerdictKind::Fail, "host /"))),
            result("input-root.marker-file", ran(Verdict::new(VerdictKind::Fail, "host /etc"))),
        ]));
        let cases = parse(&xml).unwrap();
        let case = |name: &str| cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name}: {xml}"));
        let marker = case("input-root.marker-file");
        assert_eq!(marker.message.as_deref(), Some("follows from input-root.root-entries: host /etc"), "{xml}");
        assert!(
            marker.system_out.starts_with(
                "FAIL input-root.marker-file [MUST; buildstream]\nfollows from input-root.root-entries (its command did not run from the input root)\nhost /etc\n"
            ),
            "{xml}"
        );
        let root = case("input-root.root-entries");
        assert_eq!(root.message.as_deref(), Some("host /"));
        assert!(!root.system_out.contains("follows from"), "{xml}");
    }

    use proptest::prelude::*;
    use quick_xml::events::Event;

    /// XML 1.0's `Char` production: what a well-formed document may hold.
    fn xml_char(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}')
    }

    /// Any text, with more than its share of what breaks XML: `]]>` (and its
    /// halves), U+FFFE, U+FFFF, C0 and C1 controls, markup and bidi overrides.
    fn hostile() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            any::<char>().prop_map(String::from),
            prop::sample::select(vec![
                "]]>",
                "]]",
                "]",
                ">",
                "<",
                "&",
                "&amp;",
                "<![CDATA[",
                "\"'",
                "\u{fffe}",
                "\u{ffff}",
                "\r\n",
                "\u{85}",
                "\u{202e}",
                "\x00",
                "\x1b[31m",
                " ",
            ])
            .prop_map(String::from),
            (0u32..0x20).prop_map(|c| char::from_u32(c).map(String::from).unwrap_or_default()),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    /// What a reader sees of one test case: its name, the `message` of its
    /// failure/error/skipped element, and its `system-out`.
    #[derive(Debug, Default)]
    struct Parsed {
        name: String,
        message: Option<String>,
        system_out: String,
    }

    /// Parses a JUnit document, failing on anything not well-formed.
    fn parse(xml: &str) -> Result<Vec<Parsed>, String> {
        let attr = |e: &quick_xml::events::BytesStart, key: &[u8]| -> Result<Option<String>, String> {
            for a in e.attributes() {
                let a = a.map_err(|e| e.to_string())?;
                if a.key.as_ref() == key {
                    let v = a.normalized_value(quick_xml::XmlVersion::Explicit1_0).map_err(|e| e.to_string())?;
                    return Ok(Some(v.into_owned()));
                }
            }
            Ok(None)
        };
        let mut reader = quick_xml::Reader::from_str(xml);
        // A testsuite's own system-out (what was run) belongs to no case.
        let (mut cases, mut in_out, mut in_case) = (Vec::new(), false, false);
        loop {
            match reader.read_event().map_err(|e| format!("not well-formed: {e}"))? {
                Event::Start(e) if e.name().as_ref() == b"testcase" => {
                    in_case = true;
                    cases.push(Parsed { name: attr(&e, b"name")?.unwrap_or_default(), ..Default::default() });
                }
                Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                    cases.push(Parsed { name: attr(&e, b"name")?.unwrap_or_default(), ..Default::default() });
                }
                Event::End(e) if e.name().as_ref() == b"testcase" => in_case = false,
                Event::Start(e) if e.name().as_ref() == b"system-out" => in_out = in_case,
                Event::End(e) if e.name().as_ref() == b"system-out" => in_out = false,
                Event::Start(e) | Event::Empty(e)
                    if [&b"failure"[..], b"error", b"skipped"].contains(&e.name().as_ref()) =>
                {
                    if let Some(case) = cases.last_mut() {
                        case.message = attr(&e, b"message")?;
                    }
                }
                Event::CData(t) if in_out => {
                    if let Some(case) = cases.last_mut() {
                        case.system_out.push_str(&t.decode().map_err(|e| e.to_string())?);
                    }
                }
                Event::Text(t) if in_out && !t.decode().map_err(|e| e.to_string())?.trim().is_empty() => {
                    return Err(format!("text outside CDATA in system-out: {t:?}"));
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(cases)
    }

    /// Attribute-value normalisation: a reader sees tabs and newlines as spaces.
    fn as_attribute(s: &str) -> String {
        s.replace(['\t', '\n'], " ")
    }

    proptest! {
        // No regression files in the source tree: failures print their input.
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_server_text_gives_well_formed_junit_that_reads_back(
            id in hostile(),
            reason in hostile(),
            label in hostile(),
            expected in hostile(),
            observed in hostile(),
            hint in hostile(),
            kind in prop::sample::select(vec![
                VerdictKind::Pass, VerdictKind::Fail, VerdictKind::Warn, VerdictKind::Error, VerdictKind::Skip,
            ]),
        ) {
            let verdict = Verdict::new(kind, reason.clone()).with(label, Some(expected), observed);
            let mut r = result(&format!("s.{id}"), verdict);
            r.hint = Some(hint);
            let xml = render(&crate::verdict::fixtures::summary(vec![r.clone()]));
            let bad: Vec<char> = xml.chars().filter(|&c| !xml_char(c)).collect();
            prop_assert!(bad.is_empty(), "characters XML 1.0 forbids: {:?}", bad);
            let cases = parse(&xml).map_err(TestCaseError::fail)?;
            let case = &cases[0];
            // Everything comes back as written, only the escaped characters changed.
            prop_assert_eq!(&case.name, &as_attribute(&text(&r.id)));
            prop_assert_eq!(&case.system_out, &text(&details(&r, None)));
            match kind {
                VerdictKind::Pass | VerdictKind::Warn => prop_assert_eq!(&case.message, &None),
                _ => prop_assert_eq!(&case.message, &Some(as_attribute(&text(&r.verdict.reason)))),
            }
            prop_assert!(cases.iter().any(|c| c.name == "builds-here"), "the readiness suite follows");
        }
    }

    #[test]
    fn cdata_terminators_are_split_and_noncharacters_escaped() {
        let r = result("s.x", Verdict::new(VerdictKind::Fail, "a]]>b\u{fffe}\u{ffff}"));
        let xml = render(&crate::verdict::fixtures::summary(vec![r.clone()]));
        assert!(xml.contains("a]]]]><![CDATA[>b\\u{fffe}\\u{ffff}"), "{xml}");
        let cases = parse(&xml).unwrap();
        assert!(cases[0].system_out.contains("a]]>b\\u{fffe}\\u{ffff}"), "{:?}", cases[0]);
    }
}
