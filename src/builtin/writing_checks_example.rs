//! The built-in check of `docs/writing-checks.md`, compiled and linted with
//! the tests so the example a newcomer copies builds as it is; a test keeps
//! the document's code block identical to it.

use super::{completed_report, unmet};
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::Verdict;

// docs/writing-checks.md: begin
pub(super) async fn my_check(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_prepared, report) = completed_report(h, check).await?; // ERROR/FAIL verdicts end it here
    if report["uid"] != 0 {
        return Ok(Verdict::new(unmet(check), "not root").with("uid", Some("0".into()), report["uid"].to_string()));
    }
    Ok(Verdict::pass("root"))
}
// docs/writing-checks.md: end

#[test]
fn the_document_shows_this_code() {
    let doc = include_str!("../../docs/writing-checks.md");
    let block = doc.split("```rust\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a rust block");
    let source = include_str!("writing_checks_example.rs");
    let example = source
        .split("// docs/writing-checks.md: begin\n")
        .nth(1)
        .and_then(|rest| rest.split("// docs/writing-checks.md: end").next())
        .expect("the markers");
    assert_eq!(block, example, "docs/writing-checks.md's example differs from src/builtin/writing_checks_example.rs");
    // Registered nowhere: it only has to build.
    let _ = my_check;
}
