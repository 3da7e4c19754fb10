//! Machine-readable report: every verdict with its evidence.

use serde::Serialize;

use crate::verdict::RunSummary;

/// Bumped when the JSON layout or the meaning of its fields changes
/// incompatibly. 2: built-in checks record their outcome class and results
/// say whether their probe ran from the working directory; readiness is
/// derived from both, so a version-1 report would read back with another
/// answer than it was written with.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Serialize)]
struct Document<'a> {
    format_version: u32,
    tool: &'static str,
    tool_version: &'static str,
    #[serde(flatten)]
    summary: &'a RunSummary,
    readiness: crate::readiness::Readiness,
}

/// Reads back a report [`render`] wrote (for `matrix`). A report of another
/// `format_version` is refused rather than misread: its layout may differ
/// in ways deserialisation alone would not notice.
pub fn parse(text: &str) -> Result<RunSummary, String> {
    // serde_json's message names the line and column.
    let not_a_report = |e: serde_json::Error| format!("not a `run --json` report: {e}");
    let document: serde_json::Value = serde_json::from_str(text).map_err(not_a_report)?;
    let Some(document) = document.as_object() else {
        return Err("not a `run --json` report: not a JSON object".into());
    };
    match document.get("format_version") {
        Some(v) if *v == FORMAT_VERSION => serde_json::from_str(text).map_err(not_a_report),
        Some(v) => Err(format!(
            "a `run --json` report of format version {v}; this reapi-conformance ({}) reads version {FORMAT_VERSION}",
            env!("CARGO_PKG_VERSION")
        )),
        None => Err("not a `run --json` report: it has no format_version".into()),
    }
}

/// Pretty-printed JSON document.
pub fn render(summary: &RunSummary) -> String {
    let doc = Document {
        format_version: FORMAT_VERSION,
        tool: "reapi-conformance",
        tool_version: env!("CARGO_PKG_VERSION"),
        summary,
        readiness: crate::readiness::assess(summary, &summary.needs),
    };
    // Serialising plain data structures cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_back_and_other_versions_are_refused() {
        let run = crate::verdict::fixtures::summary(Vec::new());
        let text = render(&run);
        assert_eq!(parse(&text).unwrap().target, run.target);
        assert!(text.contains("\"profile\": \"buildstream@2026.12\""), "{text}");
        assert_eq!(parse(&text).unwrap().profile.as_deref(), Some("buildstream@2026.12"));
        // A report of a harness that recorded no profile still reads.
        let older = text.replace("  \"profile\": \"buildstream@2026.12\",\n", "");
        assert_eq!(parse(&older).unwrap().profile, None);
        let current = format!("\"format_version\": {FORMAT_VERSION}");
        assert!(text.contains(&current), "{text}");
        // Version 1 (before built-in checks recorded outcomes) is refused, not misread.
        let older_format = text.replacen(&current, "\"format_version\": 1", 1);
        let err = parse(&older_format).unwrap_err();
        assert!(err.contains("format version 1") && err.contains(&format!("reads version {FORMAT_VERSION}")), "{err}");
        let newer = text.replacen(&current, "\"format_version\": 99", 1);
        assert!(parse(&newer).unwrap_err().contains("format version 99"));
        let odd = text.replacen(&current, "\"format_version\": \"2\"", 1);
        assert!(parse(&odd).unwrap_err().contains("format version \"2\""));
        assert!(parse("{}").unwrap_err().contains("no format_version"));
        assert!(parse("[1]").unwrap_err().contains("not a `run --json` report"));
    }

    #[test]
    fn a_consequence_names_its_root_cause_and_still_reads_back() {
        use crate::suite::OutcomeClass;
        use crate::verdict::fixtures::{result, summary};
        use crate::verdict::{Verdict, VerdictKind};
        let ran = |v: Verdict| v.with_outcome(OutcomeClass::Completed);
        let run = summary(vec![
            result("input-root.root-entries", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /"))),
            result("input-root.marker-file", "blocker", ran(Verdict::new(VerdictKind::Fail, "host /etc"))),
        ]);
        let text = render(&run);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let readiness = &doc["readiness"];
        assert_eq!(
            readiness["root_causes"],
            serde_json::json!({"input-root.marker-file": "input-root.root-entries"}),
            "{text}"
        );
        assert_eq!(readiness["blockers"][1]["follows_from"], "input-root.root-entries", "{text}");
        // The map is derived, not read: the report reads back, and so does
        // one written before the map existed.
        assert_eq!(parse(&text).unwrap().results.len(), 2);
        let mut older = doc.clone();
        older["readiness"].as_object_mut().unwrap().remove("root_causes");
        assert_eq!(parse(&older.to_string()).unwrap().results[1].id, "input-root.marker-file");
        // Without a root cause, the field is left out.
        assert!(!render(&summary(Vec::new())).contains("root_causes"));
    }
}
