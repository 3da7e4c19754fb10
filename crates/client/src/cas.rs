//! Reading and writing CAS blobs: FindMissingBlobs, batches for small blobs,
//! ByteStream for large ones. Every call has a deadline, every blob read is
//! checked against its digest, and no size from the wire is trusted.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    batch_update_blobs_request, content_addressable_storage_client::ContentAddressableStorageClient,
    BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest, Directory, FindMissingBlobsRequest,
};
use bazel_remote_apis::google::bytestream::{byte_stream_client::ByteStreamClient, ReadRequest, WriteRequest};
use prost::Message;
use tonic::Code;

use crate::auth::AuthChannel;
use crate::digest;

/// Digests per FindMissingBlobs call (buildbox-casd uses groups of this order).
const FIND_MISSING_GROUP: usize = 512;
/// Chunk size of ByteStream writes.
const WRITE_CHUNK: usize = 1024 * 1024;
/// Per-blob allowance for request framing when packing batches.
const BATCH_OVERHEAD: usize = 256;
/// Buffers grow from at most this much, whatever size a digest claims.
const INITIAL_BUFFER: usize = 64 * 1024;
/// Responses may be large (batches of blobs).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A CAS operation that did not work.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// The call failed as a whole.
    #[error("{op} failed: {code:?}: {message}")]
    Rpc {
        /// The call, e.g. `BatchReadBlobs`.
        op: &'static str,
        /// The status that stood after the retries.
        code: Code,
        /// Its message, as the server (or transport) gave it.
        message: String,
        /// Made on our side (transport, deadline, undecodable answer): says nothing about the server.
        undecided: bool,
    },
    /// The blob is not in the CAS.
    #[error("{op}: blob {} is missing", digest::show(.digest))]
    Missing {
        /// The call that found it missing.
        op: &'static str,
        /// The missing blob.
        digest: Digest,
    },
    /// Nothing was learnt about the server: a transient per-blob status that
    /// outlived the retries, or an impossible claim (a negative size, or one
    /// larger than this client downloads).
    #[error("{op}: {why}")]
    Undecided {
        /// The call.
        op: &'static str,
        /// What could not be decided, in words.
        why: String,
    },
    /// The call worked but this blob did not: refused or corrupt.
    #[error("{op}: blob {digest} {why}")]
    Blob {
        /// The call.
        op: &'static str,
        /// The blob, as `hash/size`.
        digest: String,
        /// What was wrong with it.
        why: String,
        /// The gRPC code a worker reports for it.
        code: Code,
    },
}

impl CasError {
    fn rpc(op: &'static str, status: tonic::Status) -> Self {
        let undecided = crate::status::is_undecided(&status);
        CasError::Rpc { op, code: status.code(), message: status.message().to_string(), undecided }
    }

    /// The status rule's verdict on this failure: true when it says nothing
    /// about the server (see [`crate::status`]).
    pub fn is_undecided(&self) -> bool {
        matches!(self, CasError::Rpc { undecided: true, .. } | CasError::Undecided { .. })
    }

    fn blob(op: &'static str, d: &Digest, why: impl Into<String>, code: Code) -> Self {
        CasError::Blob { op, digest: digest::show(d), why: why.into(), code }
    }

    /// The gRPC code that describes the failure.
    pub fn code(&self) -> Code {
        match self {
            CasError::Rpc { code, .. } | CasError::Blob { code, .. } => *code,
            CasError::Missing { .. } => Code::FailedPrecondition,
            CasError::Undecided { .. } => Code::Unavailable,
        }
    }
}

/// Where the bytes of a blob to upload are.
#[derive(Debug, Clone)]
pub enum Source {
    /// Held in memory (shared, so retries need no copy).
    Bytes(Arc<Vec<u8>>),
    /// Read from this file when sent (large outputs are never held whole).
    File(PathBuf),
}

impl Source {
    /// Bytes held in memory.
    pub fn bytes(data: Vec<u8>) -> Source {
        Source::Bytes(Arc::new(data))
    }

    async fn load(self) -> Result<Arc<Vec<u8>>, CasError> {
        match self {
            Source::Bytes(b) => Ok(b),
            Source::File(p) => tokio::fs::read(&p).await.map(Arc::new).map_err(|e| CasError::Blob {
                op: "upload",
                digest: p.display().to_string(),
                why: format!("could not be read: {e}"),
                code: Code::Internal,
            }),
        }
    }
}

/// Limits and deadlines of a [`CasClient`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of a unary call; streams get one more second per MiB.
    pub rpc_timeout: Duration,
    /// Largest batch request, framing included (`max_batch_total_size_bytes`).
    pub max_batch: usize,
    /// Largest blob this client downloads; a digest claiming more is refused.
    pub max_read: i64,
}

/// A CAS and ByteStream client for one instance, cheap to clone.
#[derive(Clone, Debug)]
pub struct CasClient {
    instance: String,
    cas: ContentAddressableStorageClient<AuthChannel>,
    bytestream: ByteStreamClient<AuthChannel>,
    limits: Limits,
}

impl CasClient {
    /// A client of the CAS (and ByteStream) of `instance` on `channel`,
    /// batching within `limits`.
    pub fn new(channel: AuthChannel, instance: &str, limits: Limits) -> CasClient {
        CasClient {
            instance: instance.to_string(),
            cas: ContentAddressableStorageClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            bytestream: ByteStreamClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
            limits,
        }
    }

    /// The limits it batches within.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        req
    }

    /// The deadline of a transfer of `bytes`: at least 1 MiB/s.
    fn transfer_timeout(&self, bytes: usize) -> Duration {
        self.limits.rpc_timeout + Duration::from_secs((bytes / WRITE_CHUNK) as u64)
    }

    /// Makes the call `make` builds, enforcing the deadline on our side too
    /// (a server that sends headers and then nothing cannot hang the
    /// client), and again while the answer is transient ([`crate::retry`]).
    async fn call<T, Fut>(op: &'static str, timeout: Duration, mut make: impl FnMut() -> Fut) -> Result<T, CasError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        crate::retry::retrying(op, || {
            let fut = make();
            async move {
                match tokio::time::timeout(timeout + Duration::from_millis(500), fut).await {
                    Ok(r) => r.map(tonic::Response::into_inner),
                    Err(_) => {
                        Err(tonic::Status::deadline_exceeded(format!("no answer within {:.1}s", timeout.as_secs_f64())))
                    }
                }
            }
        })
        .await
        .map_err(|s| CasError::rpc(op, s))
    }

    fn resource_prefix(&self) -> String {
        if self.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.instance)
        }
    }

    /// The digests among `digests` the server does not have.
    pub async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, CasError> {
        let asked: HashSet<&str> = digests.iter().map(|d| d.hash.as_str()).collect();
        let mut missing = Vec::new();
        for group in digests.chunks(FIND_MISSING_GROUP) {
            let msg = FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: group.to_vec(),
                digest_function: 0,
            };
            let timeout = self.limits.rpc_timeout;
            let resp = Self::call("FindMissingBlobs", timeout, || {
                let (mut cas, req) = (self.cas.clone(), self.request(msg.clone(), timeout));
                async move { cas.find_missing_blobs(req).await }
            })
            .await?;
            if let Some(d) = resp.missing_blob_digests.iter().find(|d| !asked.contains(d.hash.as_str())) {
                return Err(CasError::blob("FindMissingBlobs", d, "was not asked about", Code::Internal));
            }
            missing.extend(resp.missing_blob_digests);
        }
        Ok(missing)
    }

    /// Ensures every blob is in the CAS: FindMissingBlobs, then batches for
    /// small blobs and ByteStream for large ones.
    pub async fn upload(&self, blobs: Vec<(Digest, Source)>) -> Result<(), CasError> {
        let mut by_hash: HashMap<String, (Digest, Source)> = HashMap::new();
        for (d, s) in blobs {
            by_hash.entry(d.hash.clone()).or_insert((d, s));
        }
        let all: Vec<Digest> = by_hash.values().map(|(d, _)| d.clone()).collect();
        let missing = self.find_missing(&all).await?;
        let mut batch = Vec::new();
        let mut batch_size = 0;
        for d in missing {
            let Some((_, source)) = by_hash.remove(&d.hash) else { continue };
            let data = source.load().await?;
            let cost = data.len() + BATCH_OVERHEAD;
            if cost > self.limits.max_batch {
                self.write(&d, &data).await?;
                continue;
            }
            if batch_size + cost > self.limits.max_batch {
                self.write_batch(std::mem::take(&mut batch)).await?;
                batch_size = 0;
            }
            batch_size += cost;
            batch.push(batch_update_blobs_request::Request { digest: Some(d), data: data.to_vec(), compressor: 0 });
        }
        self.write_batch(batch).await
    }

    async fn write_batch(&self, requests: Vec<batch_update_blobs_request::Request>) -> Result<(), CasError> {
        if requests.is_empty() {
            return Ok(());
        }
        let msg = BatchUpdateBlobsRequest { instance_name: self.instance.clone(), requests, digest_function: 0 };
        let timeout = self.limits.rpc_timeout;
        let resp = Self::call("BatchUpdateBlobs", timeout, || {
            let (mut cas, req) = (self.cas.clone(), self.request(msg.clone(), timeout));
            async move { cas.batch_update_blobs(req).await }
        })
        .await?;
        for r in resp.responses {
            let status = r.status.unwrap_or_default();
            if let Some(why) = crate::status::undecided_code(status.code) {
                let d = r.digest.unwrap_or_default();
                let why = format!("blob {} was not stored: {}", digest::show(&d), why.describe());
                return Err(CasError::Undecided { op: "BatchUpdateBlobs", why });
            }
            if status.code != 0 {
                let d = r.digest.unwrap_or_default();
                let why = format!("rejected with code {}: {}", status.code, status.message);
                return Err(CasError::blob("BatchUpdateBlobs", &d, why, Code::from(status.code)));
            }
        }
        Ok(())
    }

    /// Writes one blob through ByteStream; the server must commit all of it
    /// (it may answer early with the full size when it already has the blob).
    pub async fn write(&self, d: &Digest, data: &Arc<Vec<u8>>) -> Result<(), CasError> {
        let resource =
            format!("{}uploads/{}/blobs/{}/{}", self.resource_prefix(), uuid::Uuid::new_v4(), d.hash, d.size_bytes);
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
        let timeout = self.transfer_timeout(total);
        let resp = Self::call("ByteStream.Write", timeout, || {
            let (mut bytestream, req) =
                (self.bytestream.clone(), self.request(tokio_stream::iter(chunks.clone()), timeout));
            async move { bytestream.write(req).await }
        })
        .await?;
        if resp.committed_size != total as i64 {
            let why = format!("committed {} of {total} bytes", resp.committed_size);
            return Err(CasError::blob("ByteStream.Write", d, why, Code::DataLoss));
        }
        Ok(())
    }

    /// Downloads one blob and verifies it against its digest.
    pub async fn read(&self, d: &Digest) -> Result<Vec<u8>, CasError> {
        let mut blobs = self.read_many(std::slice::from_ref(d)).await?;
        blobs.remove(&d.hash).ok_or_else(|| CasError::Missing { op: "read", digest: d.clone() })
    }

    /// Downloads one blob and decodes it as `M`.
    pub async fn read_message<M: Message + Default>(&self, d: &Digest, what: &str) -> Result<M, CasError> {
        let bytes = self.read(d).await?;
        M::decode(bytes.as_slice())
            .map_err(|e| CasError::blob("read", d, format!("is no {what}: {e}"), Code::InvalidArgument))
    }

    /// Downloads blobs (deduplicated), in batches or streams by size, each
    /// verified against its digest; keyed by hash.
    pub async fn read_many(&self, digests: &[Digest]) -> Result<HashMap<String, Vec<u8>>, CasError> {
        let mut out = HashMap::new();
        let mut seen = HashSet::new();
        let mut batch: Vec<Digest> = Vec::new();
        let mut batch_size = 0;
        for d in digests {
            if !seen.insert(d.hash.clone()) {
                continue;
            }
            if d.size_bytes == 0 {
                out.insert(d.hash.clone(), Vec::new());
                continue;
            }
            if !(0..=self.limits.max_read).contains(&d.size_bytes) {
                // Impossible (negative) or more than we download: no verdict rests on it.
                let why = format!(
                    "blob {} claims a size outside 0..={} bytes; not downloaded",
                    digest::show(d),
                    self.limits.max_read
                );
                return Err(CasError::Undecided { op: "read", why });
            }
            let cost = d.size_bytes as usize + BATCH_OVERHEAD;
            if cost > self.limits.max_batch {
                let data = self.read_range(d, 0, 0).await?;
                out.insert(d.hash.clone(), verified(d, data)?);
                continue;
            }
            if batch_size + cost > self.limits.max_batch {
                self.read_batch(std::mem::take(&mut batch), &mut out).await?;
                batch_size = 0;
            }
            batch_size += cost;
            batch.push(d.clone());
        }
        self.read_batch(batch, &mut out).await?;
        Ok(out)
    }

    async fn read_batch(&self, digests: Vec<Digest>, out: &mut HashMap<String, Vec<u8>>) -> Result<(), CasError> {
        if digests.is_empty() {
            return Ok(());
        }
        let msg = BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: digests.clone(),
            acceptable_compressors: vec![],
            digest_function: 0,
        };
        let timeout = self.limits.rpc_timeout;
        let resp = Self::call("BatchReadBlobs", timeout, || {
            let (mut cas, req) = (self.cas.clone(), self.request(msg.clone(), timeout));
            async move { cas.batch_read_blobs(req).await }
        })
        .await?;
        let mut answers: HashMap<String, _> = HashMap::new();
        for r in resp.responses {
            let hash = r.digest.as_ref().map(|d| d.hash.clone()).unwrap_or_default();
            answers.insert(hash, r);
        }
        for d in digests {
            let Some(r) = answers.remove(&d.hash) else {
                return Err(CasError::blob("BatchReadBlobs", &d, "is missing from the response", Code::Internal));
            };
            let status = r.status.unwrap_or_default();
            if status.code == Code::NotFound as i32 {
                return Err(CasError::Missing { op: "BatchReadBlobs", digest: d });
            }
            if let Some(why) = crate::status::undecided_code(status.code) {
                let why = format!("blob {} was not read: {}", digest::show(&d), why.describe());
                return Err(CasError::Undecided { op: "BatchReadBlobs", why });
            }
            if status.code != 0 {
                let why = format!("not readable: code {}: {}", status.code, status.message);
                return Err(CasError::blob("BatchReadBlobs", &d, why, Code::from(status.code)));
            }
            let data = verified(&d, r.data)?;
            out.insert(d.hash, data);
        }
        Ok(())
    }

    /// A ByteStream read of `d` from `offset`, at most `limit` bytes (0: no
    /// limit), not verified (a range is not the blob). Never collects more
    /// than the digest's size, whatever the server sends.
    pub async fn read_range(&self, d: &Digest, offset: i64, limit: i64) -> Result<Vec<u8>, CasError> {
        // A stream broken by a transient condition is read again from the
        // start, within the same retry bound as a call.
        let mut retries = 0;
        loop {
            match self.read_range_once(d, offset, limit).await {
                Err(ReadBreak::Transient(s)) if retries < crate::retry::RETRIES => {
                    retries += 1;
                    crate::retry::record_status("ByteStream.Read", &s);
                    tokio::time::sleep(crate::retry::pause(retries)).await;
                }
                Err(ReadBreak::Transient(s)) => return Err(CasError::rpc("ByteStream.Read", s)),
                Err(ReadBreak::Final(e)) => return Err(e),
                Ok(data) => return Ok(data),
            }
        }
    }

    async fn read_range_once(&self, d: &Digest, offset: i64, limit: i64) -> Result<Vec<u8>, ReadBreak> {
        let msg = ReadRequest {
            resource_name: format!("{}blobs/{}/{}", self.resource_prefix(), d.hash, d.size_bytes),
            read_offset: offset,
            read_limit: limit,
        };
        let timeout = self.transfer_timeout(d.size_bytes.clamp(0, self.limits.max_read) as usize);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = Self::call("ByteStream.Read", timeout, || {
            let (mut bytestream, req) = (self.bytestream.clone(), self.request(msg.clone(), timeout));
            async move { bytestream.read(req).await }
        })
        .await
        .map_err(ReadBreak::Final)?;
        let mut data = Vec::with_capacity((d.size_bytes.max(0) as usize).min(INITIAL_BUFFER));
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => {
                    let late = tonic::Status::deadline_exceeded("read did not finish in time");
                    return Err(ReadBreak::Final(CasError::rpc("ByteStream.Read", late)));
                }
                Ok(Err(s)) if s.code() == Code::NotFound => {
                    return Err(ReadBreak::Final(CasError::Missing { op: "ByteStream.Read", digest: d.clone() }))
                }
                Ok(Err(s)) if crate::retry::is_retryable(&s) => return Err(ReadBreak::Transient(s)),
                Ok(Err(s)) => return Err(ReadBreak::Final(CasError::rpc("ByteStream.Read", s))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    data.extend_from_slice(&chunk.data);
                    if data.len() as i64 > d.size_bytes {
                        break; // more than the digest promises; the caller's check reports it
                    }
                }
            }
        }
        Ok(data)
    }

    /// Fetches every Directory of a tree, keyed by hash (root included),
    /// one level at a time.
    pub async fn read_tree(&self, root: &Digest) -> Result<HashMap<String, Directory>, CasError> {
        let mut dirs: HashMap<String, Directory> = HashMap::new();
        let mut level = vec![root.clone()];
        while !level.is_empty() {
            let blobs = self.read_many(&level).await?;
            let mut next = Vec::new();
            for d in &level {
                if dirs.contains_key(&d.hash) {
                    continue;
                }
                let bytes = blobs.get(&d.hash).map(Vec::as_slice).unwrap_or_default();
                let dir = Directory::decode(bytes)
                    .map_err(|e| CasError::blob("read", d, format!("is no Directory: {e}"), Code::InvalidArgument))?;
                next.extend(
                    dir.directories.iter().filter_map(|n| n.digest.clone()).filter(|c| !dirs.contains_key(&c.hash)),
                );
                dirs.insert(d.hash.clone(), dir);
            }
            level = next;
        }
        Ok(dirs)
    }
}

/// How one ByteStream read attempt ended short of the data.
enum ReadBreak {
    /// The stream broke in a way worth reading again.
    Transient(tonic::Status),
    /// An answer that stands.
    Final(CasError),
}

/// `data` if it is the blob `d` names.
fn verified(d: &Digest, data: Vec<u8>) -> Result<Vec<u8>, CasError> {
    let got = digest::of_bytes(&data);
    if got.hash != d.hash || got.size_bytes != d.size_bytes {
        let why = format!("came back with content of digest {}", digest::show(&got));
        return Err(CasError::blob("read", d, why, Code::DataLoss));
    }
    Ok(data)
}
