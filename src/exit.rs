//! The exit statuses of the command, by name. The README's table and the
//! `--help` text are made from [`TABLE`] (a test keeps the README equal), so
//! the documented meaning is the one the code returns.

/// Every requirement the run gates on is met: BuildStream builds here (and
/// every `--needs` feature is available), no check FAILs (other profiles),
/// or every verdict is as expected (`--expect`).
pub const SUCCESS: i32 = 0;
/// The server fails what the run gates on: BuildStream does not build here
/// or a needed feature is unavailable, a check FAILs (other profiles), or a
/// verdict deviates from `--expect`.
pub const FINDINGS: i32 = 1;
/// Nothing could be concluded: a check the run gates on is ERROR, or the
/// harness could not run at all (bad flags or files, a cluster that does not
/// start, a report that cannot be written); one line says why.
pub const UNDECIDED: i32 = 2;
/// Added to the number of the signal (SIGINT 2, SIGTERM 15, SIGHUP 1) that
/// interrupted the run, after the operations in flight were cancelled and
/// the cluster stopped: 130, 143, 129.
pub const SIGNALLED: i32 = 128;

/// The status of a run interrupted by signal `n`.
pub fn signalled(n: i32) -> i32 {
    SIGNALLED + n
}

/// Each status with its meaning, in the order of the README's table.
pub const TABLE: &[(&str, &str)] = &[
    (
        "0",
        "BuildStream builds here, no sandbox capability is missing (with `--needs-only`: none that `--needs` names) and every `--needs` feature is available (`buildstream` profile); no check FAILs (`--profile reapi` or `all`); every verdict as expected (`--expect`)",
    ),
    (
        "1",
        "no element builds here, a sandbox capability is missing (with `--needs-only`: one `--needs` names) or a needed feature is unavailable; a check FAILs (other profiles); a verdict deviates from `--expect`",
    ),
    (
        "2",
        "undecided: a check the answer rests on is ERROR (in a run narrowed by `--suite`/`--filter`: any check), or the harness could not run (bad flags or files, a cluster that does not start, a report that cannot be written; one line says why)",
    ),
    ("128+n", "interrupted by signal n (130 SIGINT, 143 SIGTERM, 129 SIGHUP): operations cancelled, cluster stopped"),
];

/// The README's table of exit statuses, as Markdown.
pub fn markdown_table() -> String {
    let mut out = String::from("| exit status | meaning |\n|---|---|\n");
    for (code, meaning) in TABLE {
        out.push_str(&format!("| {code} | {meaning} |\n"));
    }
    out
}

/// The `--help` paragraph on exit statuses.
pub fn help_text() -> String {
    let mut out = String::from(
        "Runs suites of checks against a Remote Execution API v2 cluster — platform properties, the input root \
         staged as `/`, the sandbox BuildStream expects, the REAPI behaviour it relies on — and reports each \
         verdict (PASS, FAIL, WARN, ERROR, SKIP) with its evidence.\n\nExit status of `run`:",
    );
    for (code, meaning) in TABLE {
        out.push_str(&format!("\n  {code}: {}", meaning.replace('`', "")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_table_is_the_one_the_code_returns() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README's exit status table differs; it must read:\n{}",
            markdown_table()
        );
        assert_eq!(TABLE[0].0, SUCCESS.to_string());
        assert_eq!(TABLE[1].0, FINDINGS.to_string());
        assert_eq!(TABLE[2].0, UNDECIDED.to_string());
        assert_eq!(signalled(2), 130);
    }
}
