//! Retries of transient answers, as BuildStream's buildbox-casd gives them:
//! a call answered UNAVAILABLE or RESOURCE_EXHAUSTED (or whose connection
//! failed) is made again after a growing pause, a bounded number of times.
//! Only when the retries are spent does the answer stand, and then the
//! status rule ([`crate::status`]) calls it undecided, never a finding.
//!
//! Every retry is written to the log of the check it happened in (a
//! task-local, see [`RetryLog::scope`]), so the evidence says how many
//! retries a verdict took.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;

/// Retries after the first attempt.
pub const RETRIES: u32 = 4;
/// The first pause; each further one doubles (0.1 + 0.2 + 0.4 + 0.8 s).
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Whether an answer is worth asking again: the server said the condition is
/// transient, or the link broke before an answer. Our own deadline is not
/// retried: the budget is spent.
pub fn is_retryable(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
        || (std::error::Error::source(status).is_some() && status.code() != Code::DeadlineExceeded)
}

/// The pause before retry `n` (1-based).
pub fn pause(n: u32) -> Duration {
    FIRST_PAUSE * 2u32.saturating_pow(n.saturating_sub(1).min(10))
}

/// The retries made while one check ran, in order: `Execute: UNAVAILABLE`.
#[derive(Debug, Clone, Default)]
pub struct RetryLog(Arc<Mutex<Vec<String>>>);

tokio::task_local! {
    static LOG: RetryLog;
}

impl RetryLog {
    /// Runs `fut` with this log as the place its retries are written to.
    pub async fn scope<F: Future>(&self, fut: F) -> F::Output {
        LOG.scope(self.clone(), fut).await
    }

    /// The retries recorded so far.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One line for evidence: `3 (Execute: UNAVAILABLE ×2, BatchReadBlobs: UNAVAILABLE)`.
    pub fn summary(&self) -> Option<String> {
        let entries = self.entries();
        if entries.is_empty() {
            return None;
        }
        let mut counted: Vec<(String, usize)> = Vec::new();
        for e in &entries {
            match counted.iter_mut().find(|(name, _)| name == e) {
                Some((_, n)) => *n += 1,
                None => counted.push((e.clone(), 1)),
            }
        }
        let parts: Vec<String> =
            counted.iter().map(|(e, n)| if *n == 1 { e.clone() } else { format!("{e} ×{n}") }).collect();
        Some(format!("{} ({})", entries.len(), parts.join(", ")))
    }
}

/// Writes one retry of `call` answered `code` to the current check's log
/// (nothing outside a [`RetryLog::scope`]).
pub fn record(call: &str, code: Code) {
    record_line(format!("{call}: {}", code_label(code)));
}

/// [`record`] for a status: a broken link is named as such.
pub fn record_status(call: &str, status: &tonic::Status) {
    if std::error::Error::source(status).is_some() {
        record_line(format!("{call}: connection broken"));
    } else {
        record(call, status.code());
    }
}

fn record_line(line: String) {
    let _ = LOG.try_with(|log| log.0.lock().unwrap_or_else(|p| p.into_inner()).push(line));
}

fn code_label(code: Code) -> String {
    match code {
        Code::Unavailable => "UNAVAILABLE".into(),
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED".into(),
        other => format!("{other:?}"),
    }
}

/// Makes the call `attempt` builds, again while its answer is retryable,
/// at most [`RETRIES`] more times; returns the last answer.
pub async fn retrying<T, Fut>(call: &str, attempt: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    retry_while(call, attempt, |n, _| n < RETRIES).await
}

/// [`retrying`] for a call whose transient answer is expected to last
/// longer than casd's retries wait (1.5 s in all): retried with the same
/// growing pause, capped at the longest of those, until `window` has passed.
/// For a call that may meet a lock the server holds while it is busy (e.g.
/// BuildGrid answers CancelOperation UNAVAILABLE while its bot's row is
/// locked), where casd's budget would leave the outcome to chance.
pub async fn retrying_within<T, Fut>(
    call: &str,
    window: Duration,
    attempt: impl FnMut() -> Fut,
) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + window;
    retry_while(call, attempt, |_, wait| tokio::time::Instant::now() + wait <= deadline).await
}

/// The one retry loop: after a retryable answer, waits the growing pause
/// (capped at the [`RETRIES`]th) and asks again while `go_on(retries made,
/// next pause)` says so; returns the answer that stands.
async fn retry_while<T, Fut>(
    call: &str,
    mut attempt: impl FnMut() -> Fut,
    go_on: impl Fn(u32, Duration) -> bool,
) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut n = 0;
    loop {
        match attempt().await {
            Err(status) if is_retryable(&status) && go_on(n, pause((n + 1).min(RETRIES))) => {
                n += 1;
                record_status(call, &status);
                tokio::time::sleep(pause(n.min(RETRIES))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn transient_answers_are_retried_and_logged() {
        let log = RetryLog::default();
        let mut calls = 0;
        let got = log
            .scope(retrying("Execute", || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(tonic::Status::unavailable("busy"))
                    } else {
                        Ok(n)
                    }
                }
            }))
            .await;
        assert_eq!(got.unwrap(), 3);
        assert_eq!(log.summary().unwrap(), "2 (Execute: UNAVAILABLE ×2)");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_and_answers_stand() {
        let mut calls = 0;
        let got: Result<(), _> = retrying("FindMissingBlobs", || {
            calls += 1;
            async { Err(tonic::Status::resource_exhausted("full")) }
        })
        .await;
        assert_eq!(got.unwrap_err().code(), Code::ResourceExhausted);
        assert_eq!(calls, 1 + RETRIES as usize);
        let mut calls = 0;
        let got: Result<(), _> = retrying("GetTree", || {
            calls += 1;
            async { Err(tonic::Status::not_found("no")) }
        })
        .await;
        assert_eq!(got.unwrap_err().code(), Code::NotFound);
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_outlasts_the_count_and_then_the_answer_stands() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let got: Result<(), _> = retrying_within("CancelOperation", Duration::from_secs(8), || {
            calls += 1;
            async { Err(tonic::Status::unavailable("failed to lock the bot")) }
        })
        .await;
        assert_eq!(got.unwrap_err().code(), Code::Unavailable);
        // 0.1 + 0.2 + 0.4 + 0.8 s, then 0.8 s pauses while they fit in 8 s.
        assert_eq!(calls, 1 + 4 + 8);
        assert!(start.elapsed() <= Duration::from_secs(8));
        let mut calls = 0;
        let got = retrying_within("CancelOperation", Duration::from_secs(8), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 7 {
                    Err(tonic::Status::unavailable("busy"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), 7);
    }
}
