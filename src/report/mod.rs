//! Reports are pure functions of a [`RunSummary`](crate::verdict::RunSummary): the same verdicts always
//! give the same text, whoever prints it.

pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod terminal;

use crate::verdict::Evidence;

/// The one sanitiser, a leaf module of its own so that what reports show
/// (readiness, expectations, hints) needs no arrow back into `report`.
pub use crate::text::{one_line, printable};

/// Evidence as indented `label: observed (expected …)` lines.
pub fn evidence_lines(evidence: &[Evidence]) -> Vec<String> {
    evidence
        .iter()
        .map(|e| match &e.expected {
            Some(exp) => format!(
                "{}: observed {} (expected {})",
                one_line(&e.label, 80),
                one_line(&e.observed, 300),
                one_line(exp, 200)
            ),
            None => format!("{}: {}", one_line(&e.label, 80), one_line(&e.observed, 300)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_never_reach_a_report() {
        let hostile = "boom\x1b]0;pwned\x07\x1b[31mred\x00end";
        let line = super::one_line(hostile, 200);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.starts_with("boom") && line.ends_with("end"));
    }

    #[test]
    fn bidi_overrides_and_controls_are_shown_escaped() {
        let hostile = "grpc://evil\u{202e}moc.elgoog\u{2066}\u{200f}\x1b[2J\r\u{85}\u{fffe}ok\n\tnext";
        let shown = super::printable(hostile);
        assert_eq!(shown, "grpc://evil\\u{202e}moc.elgoog\\u{2066}\\u{200f}\\u{1b}[2J\\u{d}\\u{85}\\u{fffe}ok\n\tnext");
        assert_eq!(super::printable(&shown), shown, "escaping twice changes nothing");
    }
}
