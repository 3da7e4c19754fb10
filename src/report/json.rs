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
