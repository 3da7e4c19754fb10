//! The worker's view of the CAS: the shared client (`reapi_client::cas`)
//! with the limits a worker needs, and failures as the gRPC status a lease
//! reports.

use std::collections::HashMap;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, Directory};
use prost::Message;
use reapi_client::cas::{CasClient, CasError, Limits};
use tonic::transport::Channel;

pub use reapi_client::cas::Source;
pub use reapi_client::digest::of_bytes as digest_of;

/// Toolchains in BuildStream roots hold big files: inputs up to 4 GiB are
/// staged (the limit only stops a size from the wire from being trusted
/// blindly); blobs up to 2 MiB travel in batches.
const LIMITS: Limits =
    Limits { rpc_timeout: Duration::from_secs(60), max_batch: 2 * 1024 * 1024, max_read: 4 * 1024 * 1024 * 1024 };

/// Why a lease could not be run; `code` is the gRPC code to report in the lease status.
#[derive(Debug, Clone)]
pub struct CasFailure {
    pub code: tonic::Code,
    pub message: String,
    /// The blob that was not found, when that is the failure.
    pub missing: Option<Digest>,
}

impl CasFailure {
    pub fn io(what: &str, e: std::io::Error) -> Self {
        CasFailure::new(tonic::Code::Internal, format!("{what}: {e}"))
    }
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        CasFailure { code, message: message.into(), missing: None }
    }
}

impl From<CasError> for CasFailure {
    fn from(e: CasError) -> Self {
        let missing = match &e {
            CasError::Missing { digest, .. } => Some(digest.clone()),
            _ => None,
        };
        CasFailure { code: e.code(), message: e.to_string(), missing }
    }
}

/// The CAS of the server that handed out the lease.
#[derive(Clone)]
pub struct LeaseCas(CasClient);

impl LeaseCas {
    pub fn new(channel: Channel, instance: &str) -> LeaseCas {
        LeaseCas(CasClient::new(reapi_client::auth::anonymous(channel), instance, LIMITS))
    }

    /// Blobs keyed by hash, each verified.
    pub async fn read_many(&self, digests: &[Digest]) -> Result<HashMap<String, Vec<u8>>, CasFailure> {
        Ok(self.0.read_many(digests).await?)
    }

    pub async fn read_message<M: Message + Default>(&self, d: &Digest, what: &str) -> Result<M, CasFailure> {
        Ok(self.0.read_message(d, what).await?)
    }

    /// Every Directory of a tree, keyed by hash (root included).
    pub async fn read_tree(&self, root: &Digest) -> Result<HashMap<String, Directory>, CasFailure> {
        Ok(self.0.read_tree(root).await?)
    }

    /// Uploads what the server does not have yet.
    pub async fn upload(&self, blobs: Vec<(Digest, Source)>) -> Result<(), CasFailure> {
        Ok(self.0.upload(blobs).await?)
    }
}
