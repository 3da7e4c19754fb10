//! Uploading input roots and downloading results, within the limits the
//! server advertises.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    batch_update_blobs_request, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest, FindMissingBlobsRequest,
};
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};

use crate::connection::Clients;
use crate::digest;
use crate::tree::Blobs;

/// Digests per FindMissingBlobs call (buildbox-casd, BuildStream's proxy, uses groups of this order).
const FIND_MISSING_GROUP: usize = 512;
/// Chunk size of ByteStream writes.
const WRITE_CHUNK: usize = 1024 * 1024;
/// Per-blob allowance for request framing when packing batches.
const BATCH_OVERHEAD: usize = 256;
/// The largest blob the harness downloads. Everything it reads back (probe
/// reports, stdout, output trees of small actions) is far smaller; a digest
/// claiming more is refused instead of trusted.
pub const MAX_READ_BYTES: i64 = 256 * 1024 * 1024;
/// Buffers grow from at most this much, whatever size a digest claims.
const INITIAL_BUFFER: usize = 64 * 1024;

/// A CAS operation that did not work; always a harness-side ERROR unless a
/// check is about the CAS itself.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error("{op} failed: {code:?}: {message}")]
    Rpc {
        op: &'static str,
        code: tonic::Code,
        message: String,
        /// Made on our side (transport, deadline, undecodable answer): says nothing about the server.
        undecided: bool,
    },
    #[error("{op}: blob {digest} {why}")]
    Blob { op: &'static str, digest: String, why: String },
}

impl CasError {
    pub(crate) fn rpc(op: &'static str, status: tonic::Status) -> Self {
        let undecided = crate::execute::is_transport(&status);
        CasError::Rpc { op, code: status.code(), message: status.message().to_string(), undecided }
    }
}

/// Uploads blobs, remembering what the server already has so the probe is
/// sent once per run however many checks stage it.
#[derive(Clone, Debug)]
pub struct Cas {
    clients: Clients,
    /// `max_batch_total_size_bytes` from the capabilities; 0 means no batches.
    max_batch: usize,
    present: Arc<Mutex<HashSet<String>>>,
}

impl Cas {
    pub fn new(clients: Clients, max_batch_total_size_bytes: i64) -> Self {
        // 0 means "no server limit"; gRPC's default message size (4 MiB) still applies.
        let max_batch =
            if max_batch_total_size_bytes <= 0 { 4 * 1024 * 1024 } else { max_batch_total_size_bytes as usize };
        Cas { clients, max_batch, present: Arc::default() }
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Ensures every blob is in the CAS: FindMissingBlobs, then batches for
    /// small blobs and ByteStream for large ones.
    pub async fn upload(&self, blobs: &Blobs) -> Result<(), CasError> {
        let candidates: Vec<&Digest> = {
            let present = self.present.lock().unwrap_or_else(|p| p.into_inner());
            blobs.values().map(|(d, _)| d).filter(|d| !present.contains(&d.hash)).collect()
        };
        let mut missing = Vec::new();
        for group in candidates.chunks(FIND_MISSING_GROUP) {
            let req = self.clients.request(FindMissingBlobsRequest {
                instance_name: self.clients.cas_instance.clone(),
                blob_digests: group.iter().map(|d| (*d).clone()).collect(),
                digest_function: 0,
            });
            let resp = self
                .clients
                .call(self.clients.cas.clone().find_missing_blobs(req))
                .await
                .map_err(|s| CasError::rpc("FindMissingBlobs", s))?;
            missing.extend(resp.missing_blob_digests);
        }
        let mut batch: Vec<batch_update_blobs_request::Request> = Vec::new();
        let mut batch_size = 0;
        for d in &missing {
            let data = &blobs
                .get(&d.hash)
                .ok_or_else(|| CasError::Blob {
                    op: "FindMissingBlobs",
                    digest: digest::show(d),
                    why: "was not asked about".into(),
                })?
                .1;
            let cost = data.len() + BATCH_OVERHEAD;
            if cost > self.max_batch {
                self.write_bytestream(d, data).await?;
                continue;
            }
            if batch_size + cost > self.max_batch {
                self.send_batch(std::mem::take(&mut batch)).await?;
                batch_size = 0;
            }
            batch_size += cost;
            batch.push(batch_update_blobs_request::Request {
                digest: Some(d.clone()),
                data: data.to_vec(),
                compressor: 0,
            });
        }
        self.send_batch(batch).await?;
        let mut present = self.present.lock().unwrap_or_else(|p| p.into_inner());
        present.extend(blobs.keys().cloned());
        Ok(())
    }

    async fn send_batch(&self, requests: Vec<batch_update_blobs_request::Request>) -> Result<(), CasError> {
        if requests.is_empty() {
            return Ok(());
        }
        let req = self.clients.request(BatchUpdateBlobsRequest {
            instance_name: self.clients.cas_instance.clone(),
            requests,
            digest_function: 0,
        });
        let resp = self
            .clients
            .call(self.clients.cas.clone().batch_update_blobs(req))
            .await
            .map_err(|s| CasError::rpc("BatchUpdateBlobs", s))?;
        for r in resp.responses {
            let status = r.status.unwrap_or_default();
            if status.code != 0 {
                return Err(CasError::Blob {
                    op: "BatchUpdateBlobs",
                    digest: r.digest.as_ref().map(digest::show).unwrap_or_default(),
                    why: format!("rejected with code {}: {}", status.code, status.message),
                });
            }
        }
        Ok(())
    }

    pub(crate) async fn write_bytestream(&self, d: &Digest, data: &Arc<Vec<u8>>) -> Result<(), CasError> {
        let prefix = if self.clients.cas_instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.clients.cas_instance)
        };
        let resource = format!("{prefix}uploads/{}/blobs/{}/{}", uuid::Uuid::new_v4(), d.hash, d.size_bytes);
        let data = data.clone();
        let total = data.len();
        let chunks: Vec<WriteRequest> = (0..total.max(1))
            .step_by(WRITE_CHUNK)
            .map(|offset| {
                let end = (offset + WRITE_CHUNK).min(total);
                WriteRequest {
                    resource_name: if offset == 0 { resource.clone() } else { String::new() },
                    write_offset: offset as i64,
                    finish_write: end == total,
                    data: data[offset..end].to_vec(),
                }
            })
            .collect();
        let mut req = tonic::Request::new(tokio_stream::iter(chunks));
        // Large writes get a proportionally longer deadline (at least 1 MiB/s).
        req.set_timeout(self.clients.rpc_timeout + std::time::Duration::from_secs((total / WRITE_CHUNK) as u64));
        let resp = self
            .clients
            .call(self.clients.bytestream.clone().write(req))
            .await
            .map_err(|s| CasError::rpc("ByteStream.Write", s))?;
        let committed = resp.committed_size;
        // A server may answer early with the full size when it already has the blob.
        if committed != total as i64 {
            return Err(CasError::Blob {
                op: "ByteStream.Write",
                digest: digest::show(d),
                why: format!("committed {committed} of {total} bytes"),
            });
        }
        Ok(())
    }

    /// Downloads one blob and verifies it against its digest.
    pub async fn read(&self, d: &Digest) -> Result<Vec<u8>, CasError> {
        if d.size_bytes == 0 {
            return Ok(Vec::new());
        }
        if !(0..=MAX_READ_BYTES).contains(&d.size_bytes) {
            return Err(CasError::Blob {
                op: "read",
                digest: digest::show(d),
                why: format!("claims a size outside 0..={MAX_READ_BYTES} bytes; not downloaded"),
            });
        }
        let data = if (d.size_bytes as usize) + BATCH_OVERHEAD <= self.max_batch {
            let req = self.clients.request(BatchReadBlobsRequest {
                instance_name: self.clients.cas_instance.clone(),
                digests: vec![d.clone()],
                acceptable_compressors: vec![],
                digest_function: 0,
            });
            let resp = self
                .clients
                .call(self.clients.cas.clone().batch_read_blobs(req))
                .await
                .map_err(|s| CasError::rpc("BatchReadBlobs", s))?;
            let r = resp.responses.into_iter().next().ok_or_else(|| CasError::Blob {
                op: "BatchReadBlobs",
                digest: digest::show(d),
                why: "missing from the response".into(),
            })?;
            let status = r.status.unwrap_or_default();
            if status.code != 0 {
                return Err(CasError::Blob {
                    op: "BatchReadBlobs",
                    digest: digest::show(d),
                    why: format!("not readable: code {}: {}", status.code, status.message),
                });
            }
            r.data
        } else {
            self.read_bytestream(d).await?
        };
        let got = digest::of_bytes(&data);
        if got.hash != d.hash || got.size_bytes != d.size_bytes {
            return Err(CasError::Blob {
                op: "read",
                digest: digest::show(d),
                why: format!("came back with content of digest {}", digest::show(&got)),
            });
        }
        Ok(data)
    }

    pub(crate) async fn read_bytestream(&self, d: &Digest) -> Result<Vec<u8>, CasError> {
        self.read_range(d, 0, 0).await
    }

    /// A ByteStream read of `d` from `offset`, at most `limit` bytes (0: no
    /// limit). Never collects more than the digest's size, whatever the server sends.
    pub(crate) async fn read_range(&self, d: &Digest, offset: i64, limit: i64) -> Result<Vec<u8>, CasError> {
        let prefix = if self.clients.cas_instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.clients.cas_instance)
        };
        let req = self.clients.request(ReadRequest {
            resource_name: format!("{prefix}blobs/{}/{}", d.hash, d.size_bytes),
            read_offset: offset,
            read_limit: limit,
        });
        let deadline = tokio::time::Instant::now() + self.clients.rpc_timeout;
        let mut stream = self
            .clients
            .call(self.clients.bytestream.clone().read(req))
            .await
            .map_err(|s| CasError::rpc("ByteStream.Read", s))?;
        let mut data = Vec::with_capacity((d.size_bytes.max(0) as usize).min(INITIAL_BUFFER));
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => {
                    return Err(CasError::rpc(
                        "ByteStream.Read",
                        tonic::Status::deadline_exceeded("read did not finish in time"),
                    ))
                }
                Ok(Err(s)) => return Err(CasError::rpc("ByteStream.Read", s)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    data.extend_from_slice(&chunk.data);
                    if data.len() as i64 > d.size_bytes {
                        break; // more than the digest promises; the check below reports it
                    }
                }
            }
        }
        Ok(data)
    }
}
