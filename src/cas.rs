//! Uploading input roots and downloading results, within the limits the
//! server advertises: the shared CAS client (`reapi_client::cas`) plus what
//! only the harness needs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bazel_remote_apis::build::bazel::remote::execution::v2::Digest;
use reapi_client::cas::{CasClient, Limits, Source};

pub use reapi_client::cas::CasError;

use crate::connection::Clients;
use crate::tree::Blobs;

/// The largest blob the harness downloads. Everything it reads back (probe
/// reports, stdout, output trees of small actions) is far smaller; a digest
/// claiming more is refused instead of trusted.
pub const MAX_READ_BYTES: i64 = 256 * 1024 * 1024;

/// Uploads blobs, remembering what the server already has so the probe is
/// sent once per run however many checks stage it.
#[derive(Clone, Debug)]
pub struct Cas {
    clients: Clients,
    client: CasClient,
    present: Arc<Mutex<HashSet<String>>>,
}

impl Cas {
    /// A CAS on the target's clients, packing batches up to `max_batch_total_size_bytes` (the
    /// server's advertised limit; 0 or less: 4 MiB, gRPC's default message size).
    pub fn new(clients: Clients, max_batch_total_size_bytes: i64) -> Self {
        // 0 means "no server limit"; gRPC's default message size (4 MiB) still applies.
        let max_batch =
            if max_batch_total_size_bytes <= 0 { 4 * 1024 * 1024 } else { max_batch_total_size_bytes as usize };
        let limits = Limits { rpc_timeout: clients.rpc_timeout, max_batch, max_read: MAX_READ_BYTES };
        let client = CasClient::new(clients.cas_channel.clone(), &clients.cas_instance, limits);
        Cas { clients, client, present: Arc::default() }
    }

    /// The clients it was made with.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Ensures every blob is in the CAS, skipping those this run already sent.
    pub async fn upload(&self, blobs: &Blobs) -> Result<(), CasError> {
        let candidates: Vec<(Digest, Source)> = {
            let present = self.present.lock().unwrap_or_else(|p| p.into_inner());
            blobs
                .values()
                .filter(|(d, _)| !present.contains(&d.hash))
                .map(|(d, data)| (d.clone(), Source::Bytes(data.clone())))
                .collect()
        };
        self.client.upload(candidates).await?;
        let mut present = self.present.lock().unwrap_or_else(|p| p.into_inner());
        present.extend(blobs.keys().cloned());
        Ok(())
    }

    pub(crate) async fn write_bytestream(&self, d: &Digest, data: &Arc<Vec<u8>>) -> Result<(), CasError> {
        self.client.write(d, data).await
    }

    /// Downloads one blob and verifies it against its digest.
    pub async fn read(&self, d: &Digest) -> Result<Vec<u8>, CasError> {
        self.client.read(d).await
    }

    /// The whole blob through ByteStream, as the server sent it (unverified).
    pub(crate) async fn read_bytestream(&self, d: &Digest) -> Result<Vec<u8>, CasError> {
        self.client.read_range(d, 0, 0).await
    }

    /// A ByteStream read of `d` from `offset`, at most `limit` bytes (0: no limit).
    pub(crate) async fn read_range(&self, d: &Digest, offset: i64, limit: i64) -> Result<Vec<u8>, CasError> {
        self.client.read_range(d, offset, limit).await
    }
}
