//! The little CAS client a worker needs: read blobs and directory trees,
//! upload outputs. Every call carries a deadline.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    batch_update_blobs_request, content_addressable_storage_client::ContentAddressableStorageClient,
    BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest, Directory, FindMissingBlobsRequest,
};
use bazel_remote_apis::google::bytestream::{byte_stream_client::ByteStreamClient, ReadRequest, WriteRequest};
use futures_util::StreamExt;
use prost::Message;
use tonic::transport::Channel;

/// Blobs up to this size travel in batches; larger ones through ByteStream.
const BATCH_LIMIT: usize = 2 * 1024 * 1024;
/// The largest input blob a lease may stage. Toolchains in BuildStream roots
/// hold big files, so this is generous; it only stops a size from the wire
/// from being trusted blindly.
const MAX_BLOB_BYTES: i64 = 4 * 1024 * 1024 * 1024;
const WRITE_CHUNK: usize = 1024 * 1024;
const UNARY_DEADLINE: Duration = Duration::from_secs(60);
const STREAM_DEADLINE: Duration = Duration::from_secs(600);
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A CAS failure; `code` is the gRPC code to report in the lease status.
#[derive(Debug, Clone)]
pub struct CasFailure {
    pub code: tonic::Code,
    pub message: String,
    /// The blob that was not found, when that is the failure.
    pub missing: Option<Digest>,
}

impl CasFailure {
    fn rpc(op: &str, s: tonic::Status) -> Self {
        CasFailure { code: s.code(), message: format!("{op}: {}", s.message()), missing: None }
    }
    fn missing(d: &Digest) -> Self {
        CasFailure {
            code: tonic::Code::FailedPrecondition,
            message: format!("missing blob {}/{}", d.hash, d.size_bytes),
            missing: Some(d.clone()),
        }
    }
    pub fn io(what: &str, e: std::io::Error) -> Self {
        CasFailure::new(tonic::Code::Internal, format!("{what}: {e}"))
    }
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        CasFailure { code, message: message.into(), missing: None }
    }
}

/// Where the bytes of a blob to upload are.
pub enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
}

pub use crate::digest::of_bytes as digest_of;

#[derive(Clone)]
pub struct Cas {
    instance: String,
    cas: ContentAddressableStorageClient<Channel>,
    bytestream: ByteStreamClient<Channel>,
}

fn req<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(deadline);
    r
}

/// Awaits a call, enforcing the deadline locally as well.
async fn call<T>(
    op: &str,
    deadline: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CasFailure> {
    match tokio::time::timeout(deadline + Duration::from_secs(1), fut).await {
        Ok(r) => r.map(tonic::Response::into_inner).map_err(|s| CasFailure::rpc(op, s)),
        Err(_) => Err(CasFailure::new(tonic::Code::DeadlineExceeded, format!("{op}: no answer"))),
    }
}

impl Cas {
    pub fn new(channel: Channel, instance: &str) -> Cas {
        Cas {
            instance: instance.to_string(),
            cas: ContentAddressableStorageClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            bytestream: ByteStreamClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
        }
    }

    /// Reads blobs (deduplicated), in batches or streams by size.
    pub async fn read_many(&self, digests: &[Digest]) -> Result<HashMap<String, Vec<u8>>, CasFailure> {
        let mut out = HashMap::new();
        let mut seen = HashSet::new();
        let mut batch: Vec<Digest> = Vec::new();
        let mut batch_size = 0usize;
        for d in digests {
            if !seen.insert(d.hash.clone()) {
                continue;
            }
            if d.size_bytes == 0 {
                out.insert(d.hash.clone(), Vec::new());
                continue;
            }
            if !(0..=MAX_BLOB_BYTES).contains(&d.size_bytes) {
                return Err(CasFailure::new(
                    tonic::Code::InvalidArgument,
                    format!("blob {}/{} claims a size outside 0..={} bytes", d.hash, d.size_bytes, MAX_BLOB_BYTES),
                ));
            }
            let size = d.size_bytes as usize;
            if size > BATCH_LIMIT {
                out.insert(d.hash.clone(), self.read_stream(d).await?);
                continue;
            }
            if batch_size + size > BATCH_LIMIT {
                self.read_batch(std::mem::take(&mut batch), &mut out).await?;
                batch_size = 0;
            }
            batch_size += size;
            batch.push(d.clone());
        }
        if !batch.is_empty() {
            self.read_batch(batch, &mut out).await?;
        }
        Ok(out)
    }

    pub async fn read(&self, d: &Digest) -> Result<Vec<u8>, CasFailure> {
        let mut map = self.read_many(std::slice::from_ref(d)).await?;
        map.remove(&d.hash).ok_or_else(|| CasFailure::missing(d))
    }

    pub async fn read_message<M: Message + Default>(&self, d: &Digest, what: &str) -> Result<M, CasFailure> {
        let bytes = self.read(d).await?;
        M::decode(bytes.as_slice()).map_err(|e| {
            CasFailure::new(
                tonic::Code::InvalidArgument,
                format!("{what} {}/{} does not decode: {e}", d.hash, d.size_bytes),
            )
        })
    }

    async fn read_batch(&self, digests: Vec<Digest>, out: &mut HashMap<String, Vec<u8>>) -> Result<(), CasFailure> {
        let msg = BatchReadBlobsRequest { instance_name: self.instance.clone(), digests, ..Default::default() };
        let resp =
            call("BatchReadBlobs", UNARY_DEADLINE, self.cas.clone().batch_read_blobs(req(msg, UNARY_DEADLINE))).await?;
        for r in resp.responses {
            let d = r.digest.unwrap_or_default();
            let code = r.status.map(|s| s.code).unwrap_or(0);
            if code == tonic::Code::NotFound as i32 {
                return Err(CasFailure::missing(&d));
            }
            if code != 0 {
                return Err(CasFailure::new(tonic::Code::from(code), format!("reading {}: code {code}", d.hash)));
            }
            if digest_of(&r.data).hash != d.hash {
                return Err(CasFailure::new(tonic::Code::Internal, format!("blob {} came back corrupt", d.hash)));
            }
            out.insert(d.hash, r.data);
        }
        Ok(())
    }

    async fn read_stream(&self, d: &Digest) -> Result<Vec<u8>, CasFailure> {
        let name = if self.instance.is_empty() {
            format!("blobs/{}/{}", d.hash, d.size_bytes)
        } else {
            format!("{}/blobs/{}/{}", self.instance, d.hash, d.size_bytes)
        };
        let fetch = async {
            let msg = ReadRequest { resource_name: name, read_offset: 0, read_limit: 0 };
            let mut stream = self.bytestream.clone().read(req(msg, STREAM_DEADLINE)).await?.into_inner();
            let mut data = Vec::with_capacity((d.size_bytes.max(0) as usize).min(64 * 1024));
            while let Some(chunk) = stream.next().await {
                data.extend_from_slice(&chunk?.data);
                if data.len() as i64 > d.size_bytes {
                    break; // more than the digest promises; the digest check below refuses it
                }
            }
            Ok::<_, tonic::Status>(data)
        };
        let data = match tokio::time::timeout(STREAM_DEADLINE, fetch).await {
            Ok(Ok(data)) => data,
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => return Err(CasFailure::missing(d)),
            Ok(Err(s)) => return Err(CasFailure::rpc("ByteStream.Read", s)),
            Err(_) => return Err(CasFailure::new(tonic::Code::DeadlineExceeded, "ByteStream.Read: no answer")),
        };
        if digest_of(&data).hash != d.hash {
            return Err(CasFailure::new(tonic::Code::Internal, format!("blob {} came back corrupt", d.hash)));
        }
        Ok(data)
    }

    /// Fetches every Directory of a tree, keyed by hash (root included).
    pub async fn read_tree(&self, root: &Digest) -> Result<HashMap<String, Directory>, CasFailure> {
        let mut dirs: HashMap<String, Directory> = HashMap::new();
        let mut level = vec![root.clone()];
        while !level.is_empty() {
            let blobs = self.read_many(&level).await?;
            let mut next = Vec::new();
            for d in &level {
                if dirs.contains_key(&d.hash) {
                    continue;
                }
                let dir = Directory::decode(blobs[&d.hash].as_slice()).map_err(|e| {
                    CasFailure::new(tonic::Code::InvalidArgument, format!("Directory {} does not decode: {e}", d.hash))
                })?;
                next.extend(
                    dir.directories.iter().filter_map(|n| n.digest.clone()).filter(|c| !dirs.contains_key(&c.hash)),
                );
                dirs.insert(d.hash.clone(), dir);
            }
            level = next;
        }
        Ok(dirs)
    }

    /// Uploads what the server does not have yet.
    pub async fn upload(&self, blobs: Vec<(Digest, Source)>) -> Result<(), CasFailure> {
        let mut by_hash: HashMap<String, (Digest, Source)> = HashMap::new();
        for (d, s) in blobs {
            if d.size_bytes > 0 {
                by_hash.entry(d.hash.clone()).or_insert((d, s));
            }
        }
        let mut missing = Vec::new();
        let all: Vec<Digest> = by_hash.values().map(|(d, _)| d.clone()).collect();
        for group in all.chunks(1000) {
            let msg = FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: group.to_vec(),
                ..Default::default()
            };
            let resp =
                call("FindMissingBlobs", UNARY_DEADLINE, self.cas.clone().find_missing_blobs(req(msg, UNARY_DEADLINE)))
                    .await?;
            missing.extend(resp.missing_blob_digests);
        }
        let mut batch = Vec::new();
        let mut batch_size = 0usize;
        for d in missing {
            let Some((_, source)) = by_hash.remove(&d.hash) else { continue };
            let data = match source {
                Source::Bytes(b) => b,
                Source::File(p) => {
                    tokio::fs::read(&p).await.map_err(|e| CasFailure::io(&format!("reading {}", p.display()), e))?
                }
            };
            if data.len() > BATCH_LIMIT {
                self.write_stream(&d, data).await?;
                continue;
            }
            if batch_size + data.len() > BATCH_LIMIT {
                self.write_batch(std::mem::take(&mut batch)).await?;
                batch_size = 0;
            }
            batch_size += data.len();
            batch.push(batch_update_blobs_request::Request { digest: Some(d), data, compressor: 0 });
        }
        if !batch.is_empty() {
            self.write_batch(batch).await?;
        }
        Ok(())
    }

    async fn write_batch(&self, requests: Vec<batch_update_blobs_request::Request>) -> Result<(), CasFailure> {
        let msg = BatchUpdateBlobsRequest { instance_name: self.instance.clone(), requests, ..Default::default() };
        let resp =
            call("BatchUpdateBlobs", UNARY_DEADLINE, self.cas.clone().batch_update_blobs(req(msg, UNARY_DEADLINE)))
                .await?;
        for r in resp.responses {
            let code = r.status.map(|s| s.code).unwrap_or(0);
            if code != 0 {
                let hash = r.digest.map(|d| d.hash).unwrap_or_default();
                return Err(CasFailure::new(tonic::Code::from(code), format!("uploading {hash}: code {code}")));
            }
        }
        Ok(())
    }

    async fn write_stream(&self, d: &Digest, data: Vec<u8>) -> Result<(), CasFailure> {
        let prefix = if self.instance.is_empty() { String::new() } else { format!("{}/", self.instance) };
        let name = format!("{prefix}uploads/{}/blobs/{}/{}", uuid::Uuid::new_v4(), d.hash, d.size_bytes);
        let total = data.len();
        let mut chunks = Vec::new();
        let mut offset = 0;
        while offset < total {
            let end = (offset + WRITE_CHUNK).min(total);
            chunks.push(WriteRequest {
                resource_name: if offset == 0 { name.clone() } else { String::new() },
                write_offset: offset as i64,
                finish_write: end == total,
                data: data[offset..end].to_vec(),
            });
            offset = end;
        }
        let stream = futures_util::stream::iter(chunks);
        call("ByteStream.Write", STREAM_DEADLINE, self.bytestream.clone().write(req(stream, STREAM_DEADLINE))).await?;
        Ok(())
    }
}
