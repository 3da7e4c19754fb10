//! Clusters the harness can run against. Each is a small adapter that makes a
//! REAPI endpoint available and takes it away again.

use futures_util::future::BoxFuture;

use crate::connection::ConnectOptions;

pub mod buildgrid;
pub mod endpoint;
pub mod local;
mod process;
pub mod rundir;

pub use crate::worker::{descendants, kill_all};
pub use process::ManagedProcess;

/// A cluster could not be provisioned or started (harness-side: exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

/// A REAPI cluster: started (or merely targeted) before a run, stopped after.
pub trait Cluster: Send {
    /// Short human description for reports, e.g. `local (buildbox-casd)`.
    fn name(&self) -> String;
    /// Provisions what is missing, starts processes, waits until the endpoint
    /// answers, and returns how to reach it.
    fn start(&mut self) -> BoxFuture<'_, Result<ConnectOptions, ClusterError>>;
    /// Stops everything it started; safe to call twice.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
    /// Checks the target's URLs and credential files before any work starts.
    fn validate(&self) -> Result<(), crate::connection::ConnectError> {
        Ok(())
    }
    /// A process this cluster started that has exited although nobody stopped
    /// it, e.g. "the harness's postgres exited (signal: 9)". Verdicts of a run
    /// during which this happened cannot blame the server.
    fn died(&mut self) -> Option<String> {
        None
    }
    /// The server it runs, as named in `suites/servers/hints.yaml`, when known.
    fn server(&self) -> Option<&'static str> {
        None
    }
    /// How long each step of the last start took, for `--timings`.
    fn startup_steps(&self) -> Vec<(String, std::time::Duration)> {
        Vec::new()
    }
}
