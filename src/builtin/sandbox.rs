//! Built-in checks on the sandbox: what `/`, `/proc` and neighbouring actions look like.

use serde_json::Value;

use super::{completed_report, unmet};
use crate::evaluate;
use crate::harness::Harness;
use crate::suite::CheckSpec;
use crate::verdict::Verdict;

/// Entries the sandbox may add to `/` besides the input root: the runtime
/// mounts BuildStream's own sandbox provides (docs/requirements.md §3).
const RUNTIME_MOUNTS: &[&str] = &["dev", "proc", "tmp", "sys"];

/// `/` inside the action holds exactly the staged top-level entries plus
/// runtime mounts: nothing staged is missing, nothing of the worker host shows.
pub(super) async fn root_is_input_root(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (prepared, report) = completed_report(h, check).await?;
    let Some(root) = report.get("root").and_then(Value::as_object) else {
        return Ok(Verdict::new(unmet(check), "the probe could not list `/`").with(
            "root",
            Some("a readable /".into()),
            evaluate::excerpt(&report["errors"]),
        ));
    };
    let seen: Vec<&String> = root.keys().collect();
    let missing: Vec<&String> = prepared.root_entries.iter().filter(|e| !root.contains_key(*e)).collect();
    let foreign: Vec<&String> = seen
        .iter()
        .copied()
        .filter(|e| !prepared.root_entries.contains(e) && !RUNTIME_MOUNTS.contains(&e.as_str()))
        .collect();
    let expected = format!("{:?} plus at most {:?}", prepared.root_entries, RUNTIME_MOUNTS);
    if missing.is_empty() && foreign.is_empty() {
        return Ok(Verdict::pass(format!("/ holds {seen:?}")).with("root", Some(expected), format!("{seen:?}")));
    }
    let mut why = Vec::new();
    if !foreign.is_empty() {
        why.push(format!("entries not in the input root: {foreign:?}"));
    }
    if !missing.is_empty() {
        why.push(format!("staged entries missing: {missing:?}"));
    }
    Ok(Verdict::new(unmet(check), format!("/ is not the input root: {}", why.join("; ")))
        .with("root", Some(expected), format!("{seen:?}"))
        .with("cwd", None, evaluate::excerpt(&report["cwd"])))
}

/// Where a sandbox may mount things of its own: BuildStream's sandbox mounts
/// these (and nothing else) over the staged root.
const RUNTIME_MOUNT_POINTS: &[&str] = &["/dev", "/proc", "/sys", "/tmp"];

/// The mount table shows nothing bound over staged paths: every mount point
/// is `/` or under a runtime mount.
pub(super) async fn no_foreign_mounts(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, report) = completed_report(h, check).await?;
    let Some(lines) = report["mountinfo"].as_array() else {
        return Ok(Verdict::skip(
            "no /proc/self/mountinfo in the sandbox (no procfs): mounts over staged paths cannot be listed",
        ));
    };
    let foreign: Vec<String> = lines
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|line| {
            // "ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS ... - FSTYPE SOURCE ..."
            let fields: Vec<&str> = line.split(' ').collect();
            let (root, point) = (unescape_mountinfo(fields.get(3)?), unescape_mountinfo(fields.get(4)?));
            let fstype = fields.iter().position(|f| *f == "-").and_then(|i| fields.get(i + 1)).copied();
            let runtime =
                point == "/" || RUNTIME_MOUNT_POINTS.iter().any(|m| point == *m || point.starts_with(&format!("{m}/")));
            (!runtime).then(|| format!("{point} ({} {root})", fstype.unwrap_or("?")))
        })
        .collect();
    if foreign.is_empty() {
        return Ok(Verdict::pass(format!("{} mount(s), all at / or under {RUNTIME_MOUNT_POINTS:?}", lines.len())));
    }
    Ok(Verdict::new(unmet(check), format!("mounts over staged paths: {}", foreign.join(", "))).with(
        "mountinfo",
        Some(format!("mount points only at / or under {RUNTIME_MOUNT_POINTS:?}")),
        format!("{foreign:?}"),
    ))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// More processes than a sandbox's init, the probe and a helper or two means
/// the worker's PID namespace shows through.
const MAX_SANDBOX_PIDS: usize = 16;

/// `/proc` is a procfs of the action's own PID namespace.
pub(super) async fn proc_shows_own_processes(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let (_, report) = completed_report(h, check).await?;
    let unmet = unmet(check);
    let proc_mounted = report["mountinfo"].as_array().is_some_and(|lines| {
        lines.iter().filter_map(Value::as_str).any(|l| l.contains(" /proc ") && l.contains(" - proc "))
    });
    let Some(pids) = report["pids"].as_array() else {
        return Ok(Verdict::new(unmet, "/proc is not a procfs: no process entries")
            .with("pids", Some("the processes of the action's PID namespace".into()), "none (no procfs)")
            .with("probe.errors", None, evaluate::excerpt(&report["errors"])));
    };
    if !proc_mounted {
        return Ok(Verdict::new(unmet, "no procfs is mounted at /proc").with(
            "mountinfo",
            Some("a proc mount at /proc".into()),
            evaluate::excerpt(&report["mountinfo"]),
        ));
    }
    let own = &report["pid"];
    if !pids.contains(own) {
        return Ok(Verdict::new(unmet, format!("/proc does not list the probe itself (pid {own})")).with(
            "pids",
            Some(format!("including {own}")),
            evaluate::excerpt(&report["pids"]),
        ));
    }
    if let Some(foreign) = foreign_processes(&report) {
        if !foreign.is_empty() {
            return Ok(Verdict::new(
                unmet,
                format!(
                    "/proc shows {} process(es) that are not the action's own (not the probe's ancestors): {}",
                    foreign.len(),
                    foreign.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
                ),
            )
            .with(
                "processes",
                Some("only the probe and its ancestors (the sandbox's init, the shell)".into()),
                evaluate::excerpt(&report["processes"]),
            ));
        }
    } else if pids.len() > MAX_SANDBOX_PIDS {
        // An older probe or unreadable stat files: fall back on the count.
        return Ok(Verdict::new(
            unmet,
            format!("/proc shows {} processes: the worker's PID namespace, not the action's", pids.len()),
        )
        .with(
            "pids",
            Some(format!("at most {MAX_SANDBOX_PIDS}, including the probe")),
            evaluate::excerpt(&report["pids"]),
        ));
    }
    Ok(Verdict::pass(format!("/proc shows {} process(es), the probe is pid {own}", pids.len())))
}

/// Visible processes that are neither the probe nor one of its ancestors, as
/// "PID (NAME)"; `None` when the report has no parent links. In the action's
/// own PID namespace the sandbox's init and the command's chain are all there
/// is; anything else belongs to the worker or to another action.
fn foreign_processes(report: &Value) -> Option<Vec<String>> {
    let processes = report["processes"].as_array().filter(|p| !p.is_empty())?;
    let parent_of: std::collections::HashMap<i64, i64> =
        processes.iter().filter_map(|p| Some((p["pid"].as_i64()?, p["ppid"].as_i64().unwrap_or(0)))).collect();
    let mut lineage = std::collections::HashSet::new();
    let mut next = report["pid"].as_i64();
    // Bounded walk: a parent link cycle in a hostile report cannot loop.
    while let Some(pid) = next.filter(|pid| *pid > 0 && lineage.len() <= processes.len()) {
        if !lineage.insert(pid) {
            break;
        }
        next = parent_of.get(&pid).copied();
    }
    Some(
        processes
            .iter()
            .filter(|p| p["pid"].as_i64().is_some_and(|pid| !lineage.contains(&pid)))
            .map(|p| format!("{} ({})", p["pid"], p["name"].as_str().unwrap_or("?")))
            .collect(),
    )
}

/// How long after the writer the reader is submitted.
const READER_DELAY: std::time::Duration = std::time::Duration::from_millis(150);

/// Rounds of the isolation pair before giving up on seeing them overlap on one machine.
const ISOLATION_ROUNDS: usize = 3;

/// Two actions running at the same time on identical input roots do not see
/// each other's files, in `/tmp` or in the input root, nor share a PID
/// namespace. The probes' clocks and boot ids prove the two ran together on
/// one machine; a pair that did not is tried again, then left undecided.
pub(super) async fn actions_isolated(h: &Harness, check: &CheckSpec) -> Result<Verdict, Verdict> {
    let mut last_reason = String::new();
    let mut serial = None;
    for round in 0..ISOLATION_ROUNDS {
        let (writer, reader) = isolation_pair(h, check, round).await?;
        match judge_isolation(check, &writer, &reader) {
            Pair::Judged(verdict) => return Ok(verdict),
            // A pair run one after the other proves the files were not left
            // behind, but not that running actions are apart (a shared PID
            // namespace only shows while both run): a worker that can run
            // two at once is given the chance to, and one that never does
            // has its serial pass.
            Pair::Serial(verdict) => serial = Some(verdict),
            Pair::ProvesNothing(reason) => last_reason = reason,
        }
    }
    Ok(serial.unwrap_or_else(|| Verdict::error(format!("undecided after {ISOLATION_ROUNDS} tries: {last_reason}"))))
}

/// What one isolation pair shows.
enum Pair {
    /// A verdict that stands: something leaked, or the two overlapped apart.
    Judged(Verdict),
    /// They ran one after the other and nothing was left behind.
    Serial(Verdict),
    /// Nothing: the pair cannot be compared (why).
    ProvesNothing(String),
}

/// The reports of a writer and a reader started together: the writer writes
/// marker files then sleeps; the reader sleeps less, then reads them.
async fn isolation_pair(
    h: &Harness,
    check: &CheckSpec,
    round: usize,
) -> Result<(IsolationProbe, IsolationProbe), Verdict> {
    let marker = format!("isolation-{}", uuid::Uuid::new_v4().simple());
    let paths = vec![format!("/tmp/{marker}"), format!("./{marker}")];
    let mut writer = check.action.clone();
    writer.probe = paths.iter().flat_map(|p| ["--write".to_string(), format!("{p}=written")]).collect();
    writer.probe.extend(["--sleep".to_string(), "900".to_string()]);
    let mut reader = check.action.clone();
    reader.probe = vec!["--sleep".into(), "400".into()];
    reader.probe.extend(paths.iter().flat_map(|p| ["--read".to_string(), p.clone()]));
    // What leaked is removed once seen: on a worker that shares its /tmp the
    // marker would otherwise stay on the worker host.
    reader.probe.extend(paths.iter().flat_map(|p| ["--remove".to_string(), p.clone()]));
    let (writer_key, reader_key) = (format!("{}/writer-{round}", check.id), format!("{}/reader-{round}", check.id));
    // The reader goes second, so that a worker running one action at a time
    // most likely runs the writer first and the reader then sees its leftovers.
    let (w, r) = tokio::join!(super::report_of(h, &writer_key, check, &writer), async {
        tokio::time::sleep(READER_DELAY).await;
        super::report_of(h, &reader_key, check, &reader).await
    });
    Ok((IsolationProbe { report: w?.1, paths: paths.clone() }, IsolationProbe { report: r?.1, paths }))
}

struct IsolationProbe {
    report: Value,
    paths: Vec<String>,
}

impl IsolationProbe {
    fn clock(&self, which: &str) -> Option<i64> {
        self.report["clock"][which].as_i64()
    }
}

/// What one pair shows.
fn judge_isolation(check: &CheckSpec, writer: &IsolationProbe, reader: &IsolationProbe) -> Pair {
    let seen: Vec<&String> =
        reader.paths.iter().filter(|p| reader.report["paths"][p.as_str()]["exists"] != Value::Bool(false)).collect();
    if !seen.is_empty() {
        // Whenever the reader ran, another action's files must not be there.
        return Pair::Judged(
            Verdict::new(unmet(check), format!("files written by another action are visible: {seen:?}")).with(
                "reader",
                Some("absent".into()),
                evaluate::excerpt(&reader.report["paths"]),
            ),
        );
    }
    let (boot_w, boot_r) = (writer.report["boot_id"].as_str(), reader.report["boot_id"].as_str());
    if let (Some(w), Some(r)) = (boot_w, boot_r) {
        if w != r {
            return Pair::ProvesNothing("the two actions ran on different machines (their boot ids differ)".into());
        }
    }
    let (Some(wrote), Some(writer_end), Some(read)) =
        (writer.clock("start_ms"), writer.clock("end_ms"), reader.clock("end_ms"))
    else {
        return Pair::ProvesNothing("the probe reports carry no clock".into());
    };
    if read < wrote {
        return Pair::ProvesNothing(format!("the reader read {} ms before the writer wrote", wrote - read));
    }
    // One machine (or no boot ids to tell): the clocks are comparable.
    let caveat = if boot_w.is_none() || boot_r.is_none() { " (no boot ids: one machine assumed)" } else { "" };
    if read > writer_end {
        return Pair::Serial(Verdict::pass(format!(
            "the worker ran the two actions one after the other; the second saw nothing of the first{caveat}"
        )));
    }
    let (ns_w, ns_r) = (&writer.report["namespaces"]["pid"], &reader.report["namespaces"]["pid"]);
    if ns_w.is_i64() && ns_w == ns_r && boot_w.is_some() {
        return Pair::Judged(
            Verdict::new(unmet(check), format!("two actions running at the same time share PID namespace {ns_w}"))
                .with("reader.namespaces.pid", Some(format!("not {ns_w} (the writer's)")), ns_r.to_string()),
        );
    }
    Pair::Judged(Verdict::pass(format!(
        "while running at the same time ({} ms overlap), neither action saw the other's files{caveat}",
        writer_end - read
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn only_ancestors_are_the_actions_own() {
        let report = serde_json::json!({
            "pid": 3,
            "processes": [
                {"pid": 1, "ppid": 0, "name": "init"},
                {"pid": 2, "ppid": 1, "name": "sleep"},
                {"pid": 3, "ppid": 1, "name": "probe"},
            ],
        });
        assert_eq!(foreign_processes(&report), Some(vec!["2 (sleep)".to_string()]));
        let looped = serde_json::json!({"pid": 1, "processes": [{"pid": 1, "ppid": 2}, {"pid": 2, "ppid": 1}]});
        assert_eq!(foreign_processes(&looped), Some(vec![]));
    }
}
