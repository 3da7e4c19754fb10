//! Executing a lease with `buildbox-run` (the bubblewrap runner).
//!
//! The runner talks to the server's CAS itself: `--disable-localcas` makes it
//! download the input root into `--workspace-path` over plain REAPI CAS and
//! upload outputs the same way, so no buildbox-casd is needed next to it. It
//! then runs the command under bwrap with the input root bound as `/`, plus
//! `/proc`, `/dev` and a tmpfs `/tmp`, in new PID, network, IPC, UTS and user
//! namespaces, as uid/gid 0 — the sandbox BuildStream's CI gets from
//! buildbox-worker.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2::{Action, ActionResult, Digest};
use prost::Message;

use super::ctx::Ctx;
use super::lease_cas::CasFailure;
use super::process::{self, ScratchDir};
use super::LeaseOutcome;

/// buildbox-run's exit status when it stopped a command at its timeout
/// (128 + SIGALRM); it still writes the ActionResult.
const RUNNER_TIMED_OUT: i32 = 142;
/// Extra time the runner gets past the action's own timeout before it is killed.
const RUNNER_GRACE: Duration = Duration::from_secs(60);

pub async fn execute(ctx: &Ctx, runner: &Path, action: &Action) -> LeaseOutcome {
    let scratch = match ScratchDir::create(&ctx.config.work_dir) {
        Ok(s) => s,
        Err(e) => return CasFailure::io("creating the lease directory", e).into(),
    };
    let dir = &scratch.0;
    let (action_file, result_file, log_file, workspace) =
        (dir.join("action.bin"), dir.join("result.bin"), dir.join("runner.log"), dir.join("workspace"));
    if let Err(e) = std::fs::write(&action_file, action.encode_to_vec()).and_then(|_| std::fs::create_dir(&workspace)) {
        return CasFailure::io("writing the action file", e).into();
    }
    let log = match std::fs::File::create(&log_file).and_then(|f| Ok((f.try_clone()?, f))) {
        Ok(l) => l,
        Err(e) => return CasFailure::io("creating the runner log", e).into(),
    };
    let mut cmd = tokio::process::Command::new(runner);
    cmd.arg(format!("--remote={}", ctx.config.endpoint))
        .arg(format!("--instance={}", ctx.config.instance))
        .arg(format!("--action={}", action_file.display()))
        .arg(format!("--action-result={}", result_file.display()))
        .arg("--disable-localcas")
        .arg(format!("--workspace-path={}", workspace.display()))
        .arg("--log-level=warning")
        // Its temporary files (`buildboxXXXXXX`) go in the lease directory and
        // leave with it, also when the worker is killed before it can clean up.
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.0))
        .stderr(Stdio::from(log.1));
    let started = Instant::now();
    let mut child = match process::spawn(cmd) {
        Ok(c) => c,
        Err(e) => {
            return LeaseOutcome::error(tonic::Code::Internal, format!("cannot start {}: {e}", runner.display()));
        }
    };
    let timeout = action.timeout.as_ref().map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32));
    let waited = match timeout {
        Some(t) if !t.is_zero() => tokio::time::timeout(t + RUNNER_GRACE, child.wait()).await,
        _ => Ok(child.wait().await),
    };
    // Whatever the runner left behind in its process group goes now.
    child.kill_group();
    let status = match waited {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return LeaseOutcome::error(tonic::Code::Internal, format!("waiting for buildbox-run: {e}")),
        Err(_) => {
            return LeaseOutcome::error(
                tonic::Code::DeadlineExceeded,
                "buildbox-run did not finish after the action timeout",
            )
        }
    };
    let result = std::fs::read(&result_file).ok().and_then(|b| ActionResult::decode(b.as_slice()).ok());
    let log_text = std::fs::read_to_string(&log_file).unwrap_or_default();
    let code = status.code().unwrap_or(-1);
    match result {
        Some(result) if status.success() => LeaseOutcome::ok(result),
        Some(result) if code == RUNNER_TIMED_OUT || timeout.is_some_and(|t| !t.is_zero() && started.elapsed() >= t) => {
            LeaseOutcome {
                result: Some(result),
                ..LeaseOutcome::error(tonic::Code::DeadlineExceeded, "the action timed out")
            }
        }
        Some(result) => LeaseOutcome {
            result: Some(result),
            ..LeaseOutcome::error(
                tonic::Code::Internal,
                format!("buildbox-run failed ({status}): {}", last_error(&log_text)),
            )
        },
        None => match missing_blob(&log_text) {
            Some(d) => CasFailure {
                missing: Some(d),
                ..CasFailure::new(tonic::Code::FailedPrecondition, last_error(&log_text))
            }
            .into(),
            None => LeaseOutcome::error(
                tonic::Code::Internal,
                format!("buildbox-run failed ({status}): {}", last_error(&log_text)),
            ),
        },
    }
}

/// The most useful line of the runner's log: the last error, else the last line.
fn last_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let line = lines.iter().rev().find(|l| l.contains("[ERROR]")).or(lines.last()).copied().unwrap_or("no output");
    // Keep the message, not the timestamp/thread/source prefix buildbox adds.
    let msg = line.split_once("errMsg = ").or_else(|| line.split_once("[ERROR] ")).map_or(line, |(_, m)| m);
    msg.trim().trim_matches('"').to_string()
}

/// buildbox-run reports an input it could not fetch as
/// `Failed to download blob, digest=HASH/SIZE code=5` (5 = NOT_FOUND).
fn missing_blob(log: &str) -> Option<Digest> {
    let line = log.lines().rev().find(|l| l.contains("Failed to download blob") && l.contains("code=5"))?;
    let rest = line.split("digest=").nth(1)?;
    let token = rest.split_whitespace().next()?;
    let (hash, size) = token.split_once('/')?;
    let size = size.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?;
    Some(Digest { hash: hash.to_string(), size_bytes: size })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-24T22:39:30.522+0000 [16262:139934285478464] [buildboxcommon_runner.cpp:546] [ERROR] \
        [actionDigest=f3a4/144] Error executing command: std::runtime_error exception thrown at \
        [buildboxcommon_casclient.cpp:1533], errMsg = \"Failed to download blob, digest=2637749d/1283081 code=5 message=\"";

    #[test]
    fn finds_the_missing_blob() {
        let d = missing_blob(LOG).expect("digest");
        assert_eq!((d.hash.as_str(), d.size_bytes), ("2637749d", 1283081));
        assert!(missing_blob("Failed to download blob, digest=ab/1 code=14").is_none());
    }

    #[test]
    fn last_error_strips_the_prefix() {
        assert!(last_error(LOG).starts_with("Failed to download blob"), "{}", last_error(LOG));
        assert_eq!(last_error(""), "no output");
    }
}
