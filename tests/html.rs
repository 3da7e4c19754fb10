//! The HTML reports in a real browser: headless Chromium loads each page
//! (with and without JavaScript), and the DOM it builds must show the
//! readiness answer and the verdicts, with server text as text and the
//! filters working under the page's own Content-Security-Policy. Each page
//! is also saved as a screenshot (`target/tmp/html-report/*.png`) for a
//! human to look at.
//!
//! Needs Chromium (Debian `chromium`; `REAPI_CHROMIUM=FILE` names another);
//! without it the browser tests are ignored, saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use reapi_conformance::report::html;
use reapi_conformance::suite::{Impact, OutcomeClass, Severity};
use reapi_conformance::verdict::{CheckResult, RunSummary, Verdict, VerdictKind};

/// A browser that takes longer than this is stuck, not slow.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

const HOSTILE: &str = "<img src=x onerror=alert(1)><script>document.title='pwned'</script>\u{202e}";

fn chromium() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("REAPI_CHROMIUM") {
        return Ok(path.into());
    }
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .find_map(|name| which::which(name).ok())
        .ok_or_else(|| "no chromium on PATH (Debian: apt-get install chromium; or REAPI_CHROMIUM=FILE)".into())
}

fn check(id: &str, impact: &str, kind: VerdictKind, reason: &str) -> CheckResult {
    CheckResult {
        id: id.into(),
        suite: id.split('.').next().unwrap_or_default().into(),
        title: format!("title of {id}"),
        severity: if kind == VerdictKind::Warn { Severity::Should } else { Severity::Must },
        impact: impact.parse::<Impact>().expect("valid impact"),
        tags: vec!["buildstream".into()],
        source: "REAPI ContentAddressableStorage".into(),
        verdict: Verdict::new(kind, reason).with("outcome", Some("completed".into()), reason),
        hint: None,
        refusal_required: false,
        independent_of_root: false,
        duration: Duration::from_millis(120),
    }
}

fn run(target: &str, results: Vec<CheckResult>) -> RunSummary {
    RunSummary {
        target: target.into(),
        instance: String::new(),
        server: Some("buildbox-casd: buildbox-casd with local execution".into()),
        needs: Vec::new(),
        needs_only: false,
        partial: false,
        profile: Some("buildstream@2026.12".into()),
        results,
        started_at: 1_796_601_600,
        startup_time: Duration::from_millis(100),
        startup_steps: Vec::new(),
        wall_time: Duration::from_secs(2),
    }
}

/// A run with every verdict, a root cause with a consequence, a hint and
/// hostile server text.
fn broken_run() -> RunSummary {
    let mut hinted = check("input-root.marker-file", "blocker", VerdictKind::Fail, "marker missing");
    hinted.hint = Some(format!("mount /proc {HOSTILE}"));
    // Its command ran (from the host's root): it follows from the root cause.
    hinted.verdict.outcome = Some(OutcomeClass::Completed);
    run(
        "grpc://cluster.example:8980",
        vec![
            check("input-root.root-entries", "blocker", VerdictKind::Fail, "/ holds the host's root"),
            hinted,
            check("cas.empty-blob", "blocker", VerdictKind::Pass, "never missing"),
            check("cas.get-tree-resumable", "spec", VerdictKind::Warn, &format!("server said {HOSTILE}")),
            check("sandbox.unix-uid", "feature:build-uid", VerdictKind::Error, "unreachable"),
            check("protocol.idle-stream-survives", "blocker", VerdictKind::Skip, "opt-in: run with --long"),
        ],
    )
}

fn healthy_run() -> RunSummary {
    run(
        "local (buildbox-casd + buildbox-run bubblewrap)",
        vec![
            check("input-root.root-entries", "blocker", VerdictKind::Pass, "/ is the input root"),
            check("cas.empty-blob", "blocker", VerdictKind::Pass, "never missing"),
            check("cas.get-tree-resumable", "spec", VerdictKind::Pass, "tokens resume"),
        ],
    )
}

/// Runs the browser on `page` with `args`, bounded by [`BROWSER_DEADLINE`];
/// returns its standard output. Its own profile directory is a temporary
/// one, removed afterwards; as root it runs without its sandbox, which
/// refuses root.
fn browse(browser: &Path, page: &Path, args: &[&str]) -> Result<String, Failed> {
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(browser);
    cmd.args(["--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its helpers share its process group: a stuck browser is killed whole.
        .process_group(0);
    // Sound: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--no-sandbox");
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", browser.display()))?;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut out, &mut text).map(|_| text)
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > BROWSER_DEADLINE {
            // Sound: the group is the browser's own (process_group(0) above).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!("{} did not finish within {BROWSER_DEADLINE:?}", browser.display()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = reader.join().map_err(|_| "reader panicked")?.map_err(|e| e.to_string())?;
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{} exited with {status}: {stderr}", browser.display()).into());
    }
    Ok(stdout)
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html-report");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Saves `page` as `NAME.html` and `NAME.png` in the screenshot directory.
fn screenshot(browser: &Path, page: &Path, name: &str) -> Result<(), Failed> {
    let png = shots_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    browse(browser, page, &[&format!("--screenshot={}", png.display()), "--window-size=1280,1800"])?;
    let size = std::fs::metadata(&png).map_err(|e| format!("no screenshot {}: {e}", png.display()))?.len();
    if size < 10_000 {
        return Err(format!("screenshot {} is only {size} bytes", png.display()).into());
    }
    eprintln!("screenshot: {}", png.display());
    Ok(())
}

fn write_page(name: &str, text: &str) -> PathBuf {
    let path = shots_dir().join(format!("{name}.html"));
    std::fs::write(&path, text).expect("write page");
    path
}

fn expect(dom: &str, what: &str, needle: &str) -> Result<(), Failed> {
    if dom.contains(needle) {
        Ok(())
    } else {
        Err(format!("the DOM lacks {what} ({needle:?}):\n{dom}").into())
    }
}

fn the_run_page_shows_the_answer_and_every_verdict(browser: &Path) -> Result<(), Failed> {
    let page = write_page("run", &html::render(&broken_run()));
    let dom = browse(browser, &page, &["--dump-dom", "--virtual-time-budget=2000"])?;
    expect(
        &dom,
        "the readiness line",
        "<p class=\"line\" id=\"answer\">BuildStream builds here: NO — no element builds here</p>",
    )?;
    for kind in ["PASS", "FAIL", "WARN", "ERROR", "SKIP"] {
        expect(
            &dom,
            "a verdict cell of each kind",
            &format!("data-verdicts=\"{kind}\"><summary><span class=\"v v-{kind}\">{kind}</span>"),
        )?;
    }
    expect(
        &dom,
        "the root cause's consequences folded under it",
        "1 more that follow from it (their commands did not run from the input root)",
    )?;
    expect(&dom, "the profile version", "<code>buildstream@2026.12</code>")?;
    // The page's own script ran (its hash matches the policy): it shows the filters.
    expect(&dom, "the filters, shown by the script", "<form id=\"filters\">")?;
    // Server text stayed text: no element came of it, the title is the page's.
    expect(&dom, "server text as text", "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;")?;
    if dom.contains("<img") || dom.matches("<script").count() != 1 || dom.contains("pwned</title>") {
        return Err(format!("server text became markup:\n{dom}").into());
    }
    screenshot(browser, &page, "run")?;
    // And with every check open, to see evidence and hints laid out.
    let open = write_page(
        "run-open",
        &html::render(&broken_run()).replace("<details class=\"check\"", "<details open class=\"check\""),
    );
    screenshot(browser, &open, "run-open")
}

fn the_page_reads_without_javascript(browser: &Path) -> Result<(), Failed> {
    // `--dump-dom` needs script in the browser itself, so the page loses its
    // own instead: what a browser with JavaScript off runs of it.
    let text = html::render(&broken_run());
    let (head, tail) = text.split_once("<script>").ok_or("the page has no script")?;
    let stripped = format!("{head}{}", tail.split_once("</script>").ok_or("unclosed script")?.1);
    let page = write_page("run-no-js", &stripped);
    let dom = browse(browser, &page, &["--dump-dom"])?;
    expect(&dom, "the readiness line", "id=\"answer\">BuildStream builds here: NO — no element builds here</p>")?;
    expect(
        &dom,
        "a verdict",
        "<span class=\"v v-FAIL\">FAIL</span> <code class=\"id\">input-root.root-entries</code>",
    )?;
    // Controls that would do nothing stay hidden.
    expect(&dom, "the filters hidden", "<form id=\"filters\" hidden=\"\">")?;
    // Headless Chromium captures nothing with script switched off in the
    // browser: the picture is of the page without its script, as above.
    screenshot(browser, &page, "run-no-js")
}

fn the_matrix_shows_each_runs_answer_and_a_column_per_server(browser: &Path) -> Result<(), Failed> {
    let page = write_page("matrix", &html::matrix(&[healthy_run(), broken_run()]));
    // `#` and a hash would be read as a fragment: the filters are set by script below.
    let dom = browse(browser, &page, &["--dump-dom", "--virtual-time-budget=2000"])?;
    expect(
        &dom,
        "the first run's answer",
        "<td class=\"answer-cell yes\" title=\"BuildStream builds here: yes — every element",
    )?;
    expect(
        &dom,
        "the second run's answer",
        "title=\"BuildStream builds here: NO — no element builds here\">NO — no element builds here</td>",
    )?;
    expect(
        &dom,
        "a row with both servers' verdicts",
        "<td><code>input-root.root-entries</code></td><td>MUST</td><td class=\"cell\" title=\"/ is the input root\"><span class=\"v v-PASS\">PASS</span></td><td class=\"cell\" title=\"/ holds the host's root\"><span class=\"v v-FAIL\">FAIL</span></td>",
    )?;
    expect(&dom, "a check one run lacks", "title=\"not in this run\"><span class=\"v v-none\">—</span>")?;
    expect(&dom, "the filters, shown by the script", "<form id=\"filters\">")?;
    screenshot(browser, &page, "matrix")
}

/// The example the README links: a real run's page, opened as users open it.
fn the_committed_example_opens_and_names_no_machine(browser: &Path) -> Result<(), Failed> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/example-report.html");
    let text = std::fs::read_to_string(&example).map_err(|e| format!("{}: {e}", example.display()))?;
    for machine in ["/root/", "/home/", "/tmp/", "/work/", "/var/tmp/", "127.0.0.1", "localhost", ".cache/"] {
        if text.contains(machine) {
            return Err(format!("docs/example-report.html names a machine detail: {machine}").into());
        }
    }
    let dom = browse(browser, &example, &["--dump-dom", "--virtual-time-budget=2000"])?;
    expect(&dom, "the readiness line", "<p class=\"line\" id=\"answer\">BuildStream builds here: ")?;
    expect(&dom, "the profile version", "<code>buildstream@")?;
    screenshot(browser, &example, "example-report")
}

/// The page with a script of the test's that sets the filters the way a
/// user would (the policy is opened for it: the page's own allows only its
/// own script), so the DOM shows what the filters hid.
fn with_filters_set(page: &str, suite: &str, verdict: &str) -> Result<String, Failed> {
    let policy_start = page.find("script-src 'sha256-").ok_or("no script policy")?;
    let policy_end = policy_start + page[policy_start..].find(';').ok_or("unterminated policy")?;
    let setter = format!(
        "<script>document.getElementById('f-suite').value = '{suite}'; document.getElementById('f-verdict').value = '{verdict}'; \
         document.getElementById('f-verdict').dispatchEvent(new Event('change'));</script>\n</body>"
    );
    Ok(format!("{}script-src 'unsafe-inline'{}", &page[..policy_start], &page[policy_end..])
        .replace("</body>", &setter))
}

fn the_filters_hide_what_does_not_match(browser: &Path) -> Result<(), Failed> {
    let page = write_page("run-filtered", &with_filters_set(&html::render(&broken_run()), "", "FAIL")?);
    let dom = browse(browser, &page, &["--dump-dom"])?;
    expect(&dom, "a FAIL shown", "data-verdicts=\"FAIL\"><summary>")?;
    expect(&dom, "a PASS hidden", "data-verdicts=\"PASS\" hidden=\"\">")?;
    expect(&dom, "a suite with no FAIL hidden", "<section class=\"suite\" id=\"suite-protocol\" hidden=\"\">")?;
    let page = write_page(
        "matrix-filtered",
        &with_filters_set(&html::matrix(&[healthy_run(), broken_run()]), "cas", "differs")?,
    );
    let dom = browse(browser, &page, &["--dump-dom"])?;
    expect(&dom, "a differing row of the suite shown", "<tr data-suite=\"cas\" data-verdicts=\"PASS WARN differs\">")?;
    expect(&dom, "an agreeing row hidden", "<tr data-suite=\"cas\" data-verdicts=\"PASS\" hidden=\"\">")?;
    expect(
        &dom,
        "another suite hidden",
        "<tr data-suite=\"input-root\" data-verdicts=\"PASS FAIL differs\" hidden=\"\">",
    )
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reapi-conformance"))
}

/// `run --html` and `matrix --html` through the binary, against an address
/// nobody answers (every verdict ERROR, quickly), opened in the browser.
fn run_and_matrix_write_pages_a_browser_opens(browser: &Path) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (page, json, grid) = (dir.path().join("run.html"), dir.path().join("run.json"), dir.path().join("matrix.html"));
    let out = bin()
        .args(["run", "--endpoint", "http://127.0.0.1:1", "--filter", "cas.empty-blob", "--rpc-timeout", "5"])
        .arg("--html")
        .arg(&page)
        .arg("--json")
        .arg(&json)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.code() != Some(2) {
        return Err(format!("run: expected exit 2 (undecided), got {:?}", out.status.code()).into());
    }
    let dom = browse(browser, &page, &["--dump-dom"])?;
    expect(
        &dom,
        "the readiness line",
        "id=\"answer\">BuildStream builds here: undecided (a blocker check could not decide)</p>",
    )?;
    expect(
        &dom,
        "the ERROR verdict",
        "<span class=\"v v-ERROR\">ERROR</span> <code class=\"id\">cas.empty-blob</code>",
    )?;
    expect(&dom, "the profile as run", "<code>buildstream@2026.12, narrowed by --filter cas.empty-blob</code>")?;
    let out = bin().arg("matrix").arg(&json).arg(&json).arg("--html").arg(&grid).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("matrix failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let dom = browse(browser, &grid, &["--dump-dom"])?;
    expect(&dom, "both runs' answers", "<td class=\"answer-cell undecided\"")?;
    expect(&dom, "a verdict cell", "<td><code>cas.empty-blob</code></td><td>MUST</td><td class=\"cell\"")
}

/// Reports go to regular files only, refused before any work like the others.
fn html_reports_are_refused_where_other_reports_are() -> Result<(), Failed> {
    for args in [
        &["run", "--endpoint", "http://127.0.0.1:1", "--html", "/dev/null"][..],
        &["matrix", "x.json", "--html", "/dev/null"],
    ] {
        let out = bin().args(args).output().map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2)
            || err.trim().lines().count() != 1
            || !err.contains("--html /dev/null: is a character device")
        {
            return Err(format!("{args:?}: expected exit 2 and one line, got {:?}: {err}", out.status.code()).into());
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let found = chromium();
    if let Err(why) = &found {
        eprintln!("the HTML browser tests are ignored: {why}");
    }
    let browser_trial = |name: &'static str, test: fn(&Path) -> Result<(), Failed>| {
        let found = found.clone();
        Trial::test(name, move || {
            let browser = found.map_err(|why| Failed::from(format!("ignored: {why}")))?;
            test(&browser)
        })
        .with_ignored_flag(chromium().is_err())
    };
    let trials = vec![
        browser_trial(
            "the_run_page_shows_the_answer_and_every_verdict",
            the_run_page_shows_the_answer_and_every_verdict,
        ),
        browser_trial("the_page_reads_without_javascript", the_page_reads_without_javascript),
        browser_trial(
            "the_matrix_shows_each_runs_answer_and_a_column_per_server",
            the_matrix_shows_each_runs_answer_and_a_column_per_server,
        ),
        browser_trial(
            "the_committed_example_opens_and_names_no_machine",
            the_committed_example_opens_and_names_no_machine,
        ),
        browser_trial("the_filters_hide_what_does_not_match", the_filters_hide_what_does_not_match),
        browser_trial("run_and_matrix_write_pages_a_browser_opens", run_and_matrix_write_pages_a_browser_opens),
        Trial::test(
            "html_reports_are_refused_where_other_reports_are",
            html_reports_are_refused_where_other_reports_are,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
