//! Machine-readable report: every verdict with its evidence.

use serde::Serialize;

use crate::verdict::RunSummary;

/// Bumped when the JSON layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

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
    #[derive(serde::Deserialize)]
    struct Header {
        format_version: Option<serde_json::Value>,
    }
    // serde_json's message names the line and column.
    let not_a_report = |e: serde_json::Error| format!("not a `run --json` report: {e}");
    let header: Header = serde_json::from_str(text).map_err(not_a_report)?;
    match header.format_version {
        Some(v) if v == FORMAT_VERSION => serde_json::from_str(text).map_err(not_a_report),
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
        let newer = text.replacen("\"format_version\": 1", "\"format_version\": 2", 1);
        let err = parse(&newer).unwrap_err();
        assert!(err.contains("format version 2") && err.contains("reads version 1"), "{err}");
        let odd = text.replacen("\"format_version\": 1", "\"format_version\": \"1\"", 1);
        assert!(parse(&odd).unwrap_err().contains("format version \"1\""));
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
