//! A cluster someone else runs: nothing to start or stop.

use futures_util::future::BoxFuture;

use super::{Cluster, ClusterError};
use crate::connection::ConnectOptions;

/// An existing REAPI endpoint.
pub struct Endpoint {
    /// How to reach it, as the user gave it; its endpoint URL is also its name in reports.
    pub options: ConnectOptions,
}

impl Cluster for Endpoint {
    fn name(&self) -> String {
        self.options.endpoint.clone()
    }
    fn start(&mut self) -> BoxFuture<'_, Result<ConnectOptions, ClusterError>> {
        let opts = self.options.clone();
        Box::pin(async move { Ok(opts) })
    }
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn validate(&self) -> Result<(), crate::connection::ConnectError> {
        self.options.validate()
    }
}
