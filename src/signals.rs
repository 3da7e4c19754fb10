//! Termination signals (SIGINT, SIGTERM, SIGHUP), handled from the start of
//! a command: installed before its first network call, so no signal is lost
//! between one phase and the next (connect, capabilities, cluster start-up,
//! the run, `serve`'s wait), and none kills the harness without its clean-up.
//! The first signal starts the clean-up; a second one ends the process at
//! once, for a user who will not wait for it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the number of the first termination signal (CI systems
/// cancel with SIGTERM, closed terminals send SIGHUP). Pending for ever if
/// no handler could be installed.
#[derive(Debug)]
pub struct Interrupt(Option<tokio::sync::oneshot::Receiver<i32>>);

impl Future for Interrupt {
    type Output = i32;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        match self.0.as_mut() {
            None => Poll::Pending,
            Some(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(n)) => Poll::Ready(n),
                // The watcher is gone (runtime shutting down): no signal will come.
                Poll::Ready(Err(_)) => {
                    self.0 = None;
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Installs the handlers now (inside a Tokio runtime) and returns the first
/// signal as a future. From the second signal on, the process exits at once
/// with 128 + its number, after killing what it started.
pub fn install() -> Interrupt {
    let kinds = [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
    ];
    let mut streams = Vec::new();
    for (kind, number) in kinds {
        if let Ok(stream) = signal(kind) {
            streams.push((stream, number));
        }
    }
    if streams.is_empty() {
        return Interrupt(None);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let first = next(&mut streams).await;
        let _ = tx.send(first);
        let second = next(&mut streams).await;
        eprintln!("second signal: exiting at once, without waiting for the clean-up");
        crate::worker::kill_leftovers();
        std::process::exit(128 + second);
    });
    Interrupt(Some(rx))
}

async fn next(streams: &mut [(tokio::signal::unix::Signal, i32)]) -> i32 {
    let waits = streams.iter_mut().map(|(s, n)| {
        Box::pin(async move {
            s.recv().await;
            *n
        })
    });
    futures_util::future::select_all(waits).await.0
}
