//! In-memory CAS, ByteStream, ActionCache and Capabilities services.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::build::bazel::semver::SemVer;
use bazel_remote_apis::google::bytestream as bs;
use bazel_remote_apis::google::rpc;
use prost::bytes::Bytes;
use prost::Message;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

use re::compressor::Value as Compressor;
use reapi_client::compression;
use reapi_client::digest_function::Function;

use super::defects::Defect;
use super::{lock, Shared};

/// What batch RPCs accept and return at most, advertised in the capabilities.
pub(crate) const MAX_BATCH_TOTAL_SIZE_BYTES: i64 = 4 * 1024 * 1024;
/// Largest blob an upload may announce, advertised as max_cas_blob_size_bytes;
/// keeps memory bounded.
pub(crate) const MAX_BLOB_SIZE_BYTES: i64 = 16 * 1024 * 1024;
/// ByteStream.Read chunk size.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// GetTree page size when the client leaves it to the server.
const DEFAULT_TREE_PAGE_SIZE: usize = 1000;
/// Interrupted uploads kept for resumption at any one time.
const MAX_PARTIAL_UPLOADS: usize = 16;

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

// ---------------------------------------------------------------------------
// Digests and the blob store

/// SHA-256 digest of `data`.
pub(crate) use reapi_client::digest::of_bytes as digest_of;

/// Serialises `message` and returns its bytes with their digest.
pub(crate) fn encode_with_digest<M: Message>(message: &M) -> (re::Digest, Bytes) {
    let data = message.encode_to_vec();
    (digest_of(&data), Bytes::from(data))
}

/// A digest a client sent, after checking it is well formed for `f`.
pub(crate) fn check_digest_in(f: Function, digest: Option<&re::Digest>, what: &str) -> Result<re::Digest, Status> {
    let digest = digest.ok_or_else(|| Status::invalid_argument(format!("{what}: digest missing")))?;
    if !f.well_formed(&digest.hash) || digest.size_bytes < 0 {
        return Err(Status::invalid_argument(format!(
            "{what}: malformed {} digest {}/{}",
            f.name(),
            digest.hash,
            digest.size_bytes
        )));
    }
    Ok(digest.clone())
}

pub(crate) fn rpc_status(code: Code, message: impl Into<String>) -> rpc::Status {
    rpc::Status { code: code as i32, message: message.into(), details: Vec::new() }
}

/// Content-addressed blobs, keyed by digest function and hash; the empty
/// blob is always present.
#[derive(Default)]
pub(crate) struct BlobStore {
    blobs: RwLock<HashMap<String, Bytes>>,
}

/// The store's key: the hash alone for SHA-256, else prefixed with the
/// function (BLAKE3 and SHA-256 hashes have the same length).
pub(crate) fn key(f: Function, hash: &str) -> String {
    match f {
        Function::Sha256 => hash.to_string(),
        other => format!("{}:{hash}", other.name()),
    }
}

impl BlobStore {
    /// The blob of `digest` computed with `f`.
    pub(crate) fn get_in(&self, f: Function, digest: &re::Digest) -> Option<Bytes> {
        if digest.size_bytes == 0 && digest.hash == f.hash(b"") {
            return Some(Bytes::new());
        }
        let blobs = self.blobs.read().unwrap_or_else(|e| e.into_inner());
        blobs.get(&key(f, &digest.hash)).filter(|data| data.len() as i64 == digest.size_bytes).cloned()
    }

    /// Forgets a blob, as an evicting CAS does.
    pub(crate) fn remove_in(&self, f: Function, digest: &re::Digest) {
        self.blobs.write().unwrap_or_else(|e| e.into_inner()).remove(&key(f, &digest.hash));
    }

    pub(crate) fn contains_in(&self, f: Function, digest: &re::Digest) -> bool {
        self.get_in(f, digest).is_some()
    }

    /// Stores `data` under its own digest with `f` and returns that digest.
    pub(crate) fn put_in(&self, f: Function, data: Bytes) -> re::Digest {
        let digest = f.digest(&data);
        let mut blobs = self.blobs.write().unwrap_or_else(|e| e.into_inner());
        blobs.insert(key(f, &digest.hash), data);
        digest
    }

    /// Stores `data` under `claimed` without looking (the `batch-accepts-mismatch` defect).
    pub(crate) fn put_unverified_in(&self, f: Function, claimed: &re::Digest, data: Bytes) {
        let mut blobs = self.blobs.write().unwrap_or_else(|e| e.into_inner());
        blobs.insert(key(f, &claimed.hash), data);
    }

    /// Stores `data` if its digest with `f` is `expected`; the error says why not.
    pub(crate) fn put_verified_in(&self, f: Function, expected: &re::Digest, data: Bytes) -> Result<(), String> {
        let actual = f.digest(&data);
        if actual != *expected {
            return Err(format!(
                "data has {} digest {}/{}, not {}/{}",
                f.name(),
                actual.hash,
                actual.size_bytes,
                expected.hash,
                expected.size_bytes
            ));
        }
        self.put_in(f, data);
        Ok(())
    }
}

/// The blob store as seen by one digest function: what an action of that
/// function reads its inputs from and puts its outputs in.
#[derive(Clone, Copy)]
pub(crate) struct BlobView<'a> {
    pub(crate) store: &'a BlobStore,
    pub(crate) function: Function,
}

impl BlobStore {
    pub(crate) fn view(&self, function: Function) -> BlobView<'_> {
        BlobView { store: self, function }
    }
}

impl BlobView<'_> {
    pub(crate) fn get(&self, digest: &re::Digest) -> Option<Bytes> {
        self.store.get_in(self.function, digest)
    }

    pub(crate) fn contains(&self, digest: &re::Digest) -> bool {
        self.store.contains_in(self.function, digest)
    }

    pub(crate) fn put(&self, data: Bytes) -> re::Digest {
        self.store.put_in(self.function, data)
    }

    pub(crate) fn put_message<M: Message>(&self, message: &M) -> re::Digest {
        self.put(Bytes::from(message.encode_to_vec()))
    }

    pub(crate) fn get_message<M: Message + Default>(
        &self,
        digest: &re::Digest,
    ) -> Option<Result<M, prost::DecodeError>> {
        self.get(digest).map(|data| M::decode(data))
    }

    /// A digest of this view's function, checked to be well formed.
    pub(crate) fn check_digest(&self, digest: Option<&re::Digest>, what: &str) -> Result<re::Digest, Status> {
        check_digest_in(self.function, digest, what)
    }
}

/// What `wrong-digests` hands out instead of the stored data: one byte differs
/// (or one is added to an empty blob), so the digest can never match.
fn corrupt(data: &Bytes) -> Bytes {
    let mut bad = data.to_vec();
    match bad.last_mut() {
        Some(last) => *last ^= 0xff,
        None => bad.push(0),
    }
    Bytes::from(bad)
}

// ---------------------------------------------------------------------------
// ContentAddressableStorage

pub(crate) struct CasService {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl re::content_addressable_storage_server::ContentAddressableStorage for CasService {
    async fn find_missing_blobs(
        &self,
        request: Request<re::FindMissingBlobsRequest>,
    ) -> Result<Response<re::FindMissingBlobsResponse>, Status> {
        self.shared.fault_gate().await?;
        let request = request.into_inner();
        let f = self
            .shared
            .request_function(request.digest_function, request.blob_digests.first().map(|d| d.hash.as_str()))?;
        let mut missing = Vec::new();
        for digest in &request.blob_digests {
            let digest = check_digest_in(f, Some(digest), "blob_digests")?;
            let empty_counts_missing = digest.size_bytes == 0 && self.shared.defects.has(Defect::EmptyBlobMissing);
            let missing_here = !self.shared.blobs.contains_in(f, &digest) || empty_counts_missing;
            if missing_here && !self.shared.defects.has(Defect::FindMissingNone) {
                missing.push(digest);
            }
        }
        Ok(Response::new(re::FindMissingBlobsResponse { missing_blob_digests: missing }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<re::BatchUpdateBlobsRequest>,
    ) -> Result<Response<re::BatchUpdateBlobsResponse>, Status> {
        self.shared.fault_gate().await?;
        let request = request.into_inner();
        let first_hash = request.requests.first().and_then(|r| r.digest.as_ref()).map(|d| d.hash.as_str());
        let f = self.shared.request_function(request.digest_function, first_hash)?;
        let total: i64 = request.requests.iter().map(|r| r.data.len() as i64).sum();
        if total > MAX_BATCH_TOTAL_SIZE_BYTES {
            return Err(Status::invalid_argument(format!(
                "batch of {total} bytes exceeds max_batch_total_size_bytes {MAX_BATCH_TOTAL_SIZE_BYTES}"
            )));
        }
        // Buildfarm's gRPC-Java server with its default 4 MiB inbound limit:
        // the message of a batch as large as advertised (framing included) is
        // over it.
        let encoded = prost::Message::encoded_len(&request) as i64;
        if self.shared.defects.has(Defect::BatchLimitReset) && encoded > MAX_BATCH_TOTAL_SIZE_BYTES {
            return Err(Status::resource_exhausted(format!(
                "gRPC message exceeds maximum size {MAX_BATCH_TOTAL_SIZE_BYTES}: {encoded}"
            )));
        }
        let mut responses = Vec::with_capacity(request.requests.len());
        for blob in request.requests {
            let status = match check_digest_in(f, blob.digest.as_ref(), "requests.digest") {
                Err(e) => rpc_status(Code::InvalidArgument, e.message()),
                Ok(digest) if blob.compressor != Compressor::Identity as i32 => {
                    match self.decompressed_batch_blob(&digest, blob.compressor, &blob.data) {
                        Err(status) => status,
                        Ok(data) => match self.shared.blobs.put_verified_in(f, &digest, Bytes::from(data)) {
                            Ok(()) => rpc_status(Code::Ok, ""),
                            Err(why) => rpc_status(Code::InvalidArgument, why),
                        },
                    }
                }
                Ok(digest) if self.shared.defects.has(Defect::SizeNotChecked) && f.hash(&blob.data) == digest.hash => {
                    self.shared.blobs.put_unverified_in(f, &digest, Bytes::from(blob.data));
                    rpc_status(Code::Ok, "")
                }
                Ok(digest) if self.shared.defects.has(Defect::BatchAcceptsMismatch) => {
                    self.shared.blobs.put_unverified_in(f, &digest, Bytes::from(blob.data));
                    rpc_status(Code::Ok, "")
                }
                Ok(digest) => match self.shared.blobs.put_verified_in(f, &digest, Bytes::from(blob.data)) {
                    Ok(()) => rpc_status(Code::Ok, ""),
                    Err(why) => rpc_status(Code::InvalidArgument, why),
                },
            };
            responses.push(re::batch_update_blobs_response::Response { digest: blob.digest, status: Some(status) });
        }
        Ok(Response::new(re::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<re::BatchReadBlobsRequest>,
    ) -> Result<Response<re::BatchReadBlobsResponse>, Status> {
        self.shared.fault_gate().await?;
        let request = request.into_inner();
        let f =
            self.shared.request_function(request.digest_function, request.digests.first().map(|d| d.hash.as_str()))?;
        let digests =
            request.digests.iter().map(|d| check_digest_in(f, Some(d), "digests")).collect::<Result<Vec<_>, _>>()?;
        let total = digests.iter().fold(0i64, |sum, d| sum.saturating_add(d.size_bytes));
        if total > MAX_BATCH_TOTAL_SIZE_BYTES {
            return Err(Status::invalid_argument(format!(
                "batch of {total} bytes exceeds max_batch_total_size_bytes {MAX_BATCH_TOTAL_SIZE_BYTES}"
            )));
        }
        if self.shared.defects.has(Defect::BatchReadAllOrNothing) {
            if let Some(absent) = digests.iter().find(|d| self.shared.blobs.get_in(f, d).is_none()) {
                return Err(Status::not_found(format!("blob {}/{} not found", absent.hash, absent.size_bytes)));
            }
        }
        // The first acceptable compressor served, or IDENTITY.
        let reply_compressor = if self.shared.defects.has(Defect::BatchCompressorUnacceptable) {
            Some(Compressor::Zstd)
        } else {
            self.shared.compressors().iter().copied().find(|c| request.acceptable_compressors.contains(&(*c as i32)))
        };
        let mut responses = Vec::with_capacity(digests.len());
        for digest in digests {
            let (data, status) = match self.shared.blobs.get_in(f, &digest) {
                Some(data) if self.shared.defects.has(Defect::WrongDigests) => {
                    (corrupt(&data), rpc_status(Code::Ok, ""))
                }
                Some(data) => (data, rpc_status(Code::Ok, "")),
                None => (
                    Bytes::new(),
                    rpc_status(Code::NotFound, format!("blob {}/{} not found", digest.hash, digest.size_bytes)),
                ),
            };
            let (data, compressor) = match reply_compressor {
                Some(c) if status.code == 0 => (compression::compress(c, &data).unwrap_or_default(), c),
                _ => (data.to_vec(), Compressor::Identity),
            };
            responses.push(re::batch_read_blobs_response::Response {
                digest: Some(digest),
                data,
                compressor: compressor as i32,
                status: Some(status),
            });
        }
        Ok(Response::new(re::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = BoxStream<re::GetTreeResponse>;

    async fn get_tree(&self, request: Request<re::GetTreeRequest>) -> Result<Response<Self::GetTreeStream>, Status> {
        self.shared.fault_gate().await?;
        if self.shared.defects.has(Defect::GetTreeUnimplemented) {
            return Err(Status::unimplemented("GetTree is not implemented"));
        }
        let request = request.into_inner();
        let f = self
            .shared
            .request_function(request.digest_function, request.root_digest.as_ref().map(|d| d.hash.as_str()))?;
        let root = check_digest_in(f, request.root_digest.as_ref(), "root_digest")?;
        if !self.shared.blobs.contains_in(f, &root) && self.shared.defects.has(Defect::GetTreeMissingRootEmpty) {
            let page = re::GetTreeResponse::default();
            return Ok(Response::new(Box::pin(tokio_stream::iter([Ok(page)]))));
        }
        if !self.shared.blobs.contains_in(f, &root) {
            return Err(Status::not_found(format!("root directory {}/{} not found", root.hash, root.size_bytes)));
        }
        // The page token is the index of the first directory of the page in
        // the breadth-first listing; missing subtrees are left out (spec).
        let start: usize = if request.page_token.is_empty() || self.shared.defects.has(Defect::GetTreeTokenRestarts) {
            0
        } else {
            request.page_token.parse().map_err(|_| Status::invalid_argument("malformed page_token"))?
        };
        let page_size = if request.page_size > 0 && !self.shared.defects.has(Defect::GetTreePageSizeIgnored) {
            request.page_size as usize
        } else {
            DEFAULT_TREE_PAGE_SIZE
        };
        let all = self.breadth_first(f, &root)?;
        if start > all.len() {
            return Err(Status::invalid_argument("page_token past the end of the tree"));
        }
        let mut pages = Vec::new();
        let mut index = start;
        loop {
            let end = (index + page_size).min(all.len());
            let next_page_token = if end < all.len() && !self.shared.defects.has(Defect::GetTreeNoPageTokens) {
                end.to_string()
            } else {
                String::new()
            };
            pages.push(Ok(re::GetTreeResponse {
                directories: all[index..end].to_vec(),
                next_page_token: next_page_token.clone(),
            }));
            index = end;
            if index >= all.len() {
                break;
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(pages))))
    }

    async fn split_blob(
        &self,
        request: Request<re::SplitBlobRequest>,
    ) -> Result<Response<re::SplitBlobResponse>, Status> {
        self.shared.fault_gate().await?;
        self.split(request.into_inner()).map(Response::new)
    }

    type GetChunkMappingStream = BoxStream<re::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _: Request<re::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        self.shared.fault_gate().await?;
        Err(Status::unimplemented("GetChunkMapping is not supported"))
    }

    async fn splice_blob(
        &self,
        request: Request<re::SpliceBlobRequest>,
    ) -> Result<Response<re::SpliceBlobResponse>, Status> {
        self.shared.fault_gate().await?;
        self.splice(request.into_inner()).map(Response::new)
    }

    async fn register_chunk_mapping(
        &self,
        _: Request<Streaming<re::RegisterChunkMappingRequest>>,
    ) -> Result<Response<re::RegisterChunkMappingResponse>, Status> {
        self.shared.fault_gate().await?;
        Err(Status::unimplemented("RegisterChunkMapping is not supported"))
    }
}

impl CasService {
    /// The data of a compressed BatchUpdateBlobs entry, decompressed; the
    /// per-blob status when it cannot be.
    fn decompressed_batch_blob(
        &self,
        digest: &re::Digest,
        compressor: i32,
        data: &[u8],
    ) -> Result<Vec<u8>, rpc::Status> {
        let supported = Compressor::try_from(compressor).ok().filter(|c| self.shared.compressors().contains(c));
        let Some(c) = supported else {
            return Err(rpc_status(
                Code::InvalidArgument,
                format!("{} is not supported", compression::name(compressor)),
            ));
        };
        compression::decompress(c, data, digest.size_bytes.clamp(0, MAX_BATCH_TOTAL_SIZE_BYTES) as usize)
            .map_err(|e| rpc_status(Code::InvalidArgument, format!("data does not decompress: {e}")))
    }

    /// Every directory reachable from `root` that is in the CAS, root first,
    /// each distinct directory once.
    fn breadth_first(&self, f: Function, root: &re::Digest) -> Result<Vec<re::Directory>, Status> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([root.clone()]);
        let mut out = Vec::new();
        while let Some(digest) = queue.pop_front() {
            if !seen.insert(digest.hash.clone()) {
                continue;
            }
            let directory: re::Directory = match self.shared.blobs.get_in(f, &digest).map(re::Directory::decode) {
                None if self.shared.defects.has(Defect::GetTreePartialNotFound) => {
                    return Err(Status::not_found(format!("directory {}/{} not found", digest.hash, digest.size_bytes)))
                }
                None => continue,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    return Err(Status::invalid_argument(format!("blob {} is not a Directory: {e}", digest.hash)))
                }
            };
            queue.extend(directory.directories.iter().filter_map(|d| d.digest.clone()));
            out.push(directory);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// ByteStream

pub(crate) struct ByteStreamService {
    pub(crate) shared: Arc<Shared>,
}

/// What a ByteStream resource name names: a blob, and the compressor of the
/// data on the wire (`None` for plain `blobs/`).
struct Resource {
    digest: re::Digest,
    compressor: Option<Compressor>,
    /// The function its segment names, or its hash length.
    function: Function,
}

/// `{instance}/blobs/{digest_function/}{hash}/{size}[/...]` or
/// `{instance}/compressed-blobs/{compressor}/{digest_function/}{hash}/{size}`
/// (read), with `{instance}/uploads/{uuid}/` before `blobs` or
/// `compressed-blobs` (write): finds the `blobs` segment followed by a
/// digest. The instance name may hold slashes. The function segment is there
/// only for the functions the spec gives one (BLAKE3, GITSHA1, ...); the others
/// are told by their hash length.
fn parse_resource_name(shared: &Shared, name: &str, upload: bool) -> Result<Resource, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    for i in 0..parts.len() {
        let (compressor, digest_at) = match parts[i] {
            "blobs" => (None, i + 1),
            "compressed-blobs" => match parts.get(i + 1) {
                Some(segment) => match compression::from_segment(segment) {
                    Some(c) => (Some(c), i + 2),
                    None => return Err(Status::invalid_argument(format!("unknown compressor {segment:?}"))),
                },
                None => continue,
            },
            _ => continue,
        };
        if upload && (i < 2 || parts[i - 2] != "uploads") {
            continue;
        }
        let named = parts.get(digest_at).and_then(|segment| Function::from_segment(segment));
        let digest_at = if named.is_some() { digest_at + 1 } else { digest_at };
        let (Some(hash), Some(size)) = (parts.get(digest_at), parts.get(digest_at + 1)) else { continue };
        let Ok(size_bytes) = size.parse::<i64>() else { continue };
        let function = match named {
            // A server that knows the segment is there but uses its default function.
            Some(_) if shared.defects.has(Defect::BytestreamFunctionSegmentIgnored) => Function::Sha256,
            Some(f) => shared.served_function(f.value() as i32)?,
            None => shared.request_function(0, Some(hash))?,
        };
        let digest =
            check_digest_in(function, Some(&re::Digest { hash: hash.to_string(), size_bytes }), "resource_name")?;
        return Ok(Resource { digest, compressor, function });
    }
    let form = if upload { "{instance}/uploads/{uuid}/blobs/{hash}/{size}" } else { "{instance}/blobs/{hash}/{size}" };
    Err(Status::invalid_argument(format!("resource name {name:?} is not of the form {form}")))
}

impl Shared {
    /// The compressors served: ZSTD and DEFLATE, none with `no-compression`.
    pub(crate) fn compressors(&self) -> &'static [Compressor] {
        if self.defects.has(Defect::NoCompression) {
            &[]
        } else {
            compression::SUPPORTED
        }
    }

    /// Refuses a compressor this server does not serve.
    fn check_compressor(&self, c: Compressor) -> Result<(), Status> {
        if c == Compressor::Identity || self.compressors().contains(&c) {
            Ok(())
        } else {
            Err(Status::invalid_argument(format!("compressor {} is not supported", c.as_str_name())))
        }
    }
}

#[tonic::async_trait]
impl bs::byte_stream_server::ByteStream for ByteStreamService {
    type ReadStream = BoxStream<bs::ReadResponse>;

    async fn read(&self, request: Request<bs::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        self.shared.fault_gate().await?;
        let mut request = request.into_inner();
        let Resource { digest, compressor, function } =
            parse_resource_name(&self.shared, &request.resource_name, false)?;
        if let Some(c) = compressor {
            return self.read_compressed(c, function, &digest, request.read_offset, request.read_limit);
        }
        if digest.size_bytes == 0 && self.shared.defects.has(Defect::EmptyBlobBytestreamMissing) {
            return Err(Status::not_found("blob not found (the empty blob was never uploaded)"));
        }
        let mut data = self
            .shared
            .blobs
            .get_in(function, &digest)
            .ok_or_else(|| Status::not_found(format!("blob {}/{} not found", digest.hash, digest.size_bytes)))?;
        if self.shared.defects.has(Defect::WrongDigests) {
            data = corrupt(&data);
        }
        if request.read_offset as u64 > data.len() as u64 && self.shared.defects.has(Defect::BytestreamOffsetIgnored) {
            return Ok(Response::new(Box::pin(tokio_stream::iter(Vec::new()))));
        }
        if request.read_offset < 0 && self.shared.defects.has(Defect::NegativeOffsetFromStart) {
            request.read_offset = 0;
        }
        if request.read_limit > 0 && self.shared.defects.has(Defect::ReadLimitIgnored) {
            request.read_limit = 0;
        }
        if request.read_offset < 0 || request.read_offset as u64 > data.len() as u64 {
            return Err(Status::out_of_range(format!(
                "read_offset {} outside blob of {} bytes",
                request.read_offset,
                data.len()
            )));
        }
        if request.read_limit < 0 {
            return Err(Status::out_of_range("negative read_limit"));
        }
        let start = request.read_offset as usize;
        let end = if request.read_limit == 0 {
            data.len()
        } else {
            start.saturating_add(request.read_limit as usize).min(data.len())
        };
        let chunks: Vec<Result<bs::ReadResponse, Status>> = data
            .slice(start..end)
            .chunks(READ_CHUNK_BYTES)
            .map(|c| Ok(bs::ReadResponse { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn write(
        &self,
        request: Request<Streaming<bs::WriteRequest>>,
    ) -> Result<Response<bs::WriteResponse>, Status> {
        self.shared.fault_gate().await?;
        let mut stream = request.into_inner();
        let mut resource_name = String::new();
        let mut digest: Option<re::Digest> = None;
        let mut function = Function::Sha256;
        let mut buffer: Vec<u8> = Vec::new();
        let mut finished = false;
        while let Some(message) = stream.message().await? {
            if digest.is_none() {
                let Resource { digest: d, compressor, function: f } =
                    parse_resource_name(&self.shared, &message.resource_name, true)?;
                if let Some(c) = compressor {
                    return self.write_compressed(c, f, d, message, stream).await;
                }
                function = f;
                if d.size_bytes > MAX_BLOB_SIZE_BYTES && !self.shared.defects.has(Defect::BlobSizeLimitUnenforced) {
                    return Err(Status::invalid_argument(format!("blob of {} bytes is too large", d.size_bytes)));
                }
                if self.shared.defects.has(Defect::WriteExistingAlreadyExists) && self.shared.blobs.contains_in(f, &d) {
                    return Err(Status::already_exists(format!("blob {}/{} already exists", d.hash, d.size_bytes)));
                }
                resource_name = message.resource_name.clone();
                digest = Some(d);
                // A Write with the resource name of an interrupted one resumes it.
                let resumed = lock(&self.shared.partial_uploads).remove(&resource_name);
                if !self.shared.defects.has(Defect::ResumeOffsetRefused) {
                    buffer = resumed.unwrap_or_default();
                }
            } else if !message.resource_name.is_empty() && message.resource_name != resource_name {
                return Err(Status::invalid_argument("resource_name changed during the upload"));
            }
            if message.write_offset != buffer.len() as i64 {
                return Err(Status::invalid_argument(format!(
                    "write_offset {} but {} bytes were received",
                    message.write_offset,
                    buffer.len()
                )));
            }
            let expected_size = digest.as_ref().map_or(0, |d| d.size_bytes);
            if (buffer.len() + message.data.len()) as i64 > expected_size {
                return Err(Status::invalid_argument("more data than the resource name's size"));
            }
            buffer.extend_from_slice(&message.data);
            lock(&self.shared.uploads).insert(resource_name.clone(), (buffer.len() as i64, false));
            if message.finish_write {
                finished = true;
                break;
            }
        }
        let Some(digest) = digest else {
            return Err(Status::invalid_argument("empty write stream"));
        };
        if !finished && self.shared.defects.has(Defect::HalfClosedWriteUnanswered) {
            // Buildfarm's write handler waits for more data that never comes.
            std::future::pending::<()>().await;
        }
        if !finished {
            // Kept for a Write that resumes it (a few at a time: it is a test server).
            let committed_size = buffer.len() as i64;
            let mut partial = lock(&self.shared.partial_uploads);
            if partial.len() >= MAX_PARTIAL_UPLOADS {
                partial.clear();
            }
            partial.insert(resource_name, buffer);
            return Ok(Response::new(bs::WriteResponse { committed_size }));
        }
        let committed = buffer.len() as i64;
        if self.shared.defects.has(Defect::BytestreamAcceptsMismatch) {
            self.shared.blobs.put_unverified_in(function, &digest, Bytes::from(buffer));
        } else {
            self.shared
                .blobs
                .put_verified_in(function, &digest, Bytes::from(buffer))
                .map_err(Status::invalid_argument)?;
        }
        lock(&self.shared.uploads).insert(resource_name, (committed, true));
        Ok(Response::new(bs::WriteResponse { committed_size: committed }))
    }

    async fn query_write_status(
        &self,
        request: Request<bs::QueryWriteStatusRequest>,
    ) -> Result<Response<bs::QueryWriteStatusResponse>, Status> {
        self.shared.fault_gate().await?;
        if self.shared.defects.has(Defect::QueryWriteStatusUnimplemented) {
            return Err(Status::unimplemented("QueryWriteStatus is not implemented"));
        }
        let name = request.into_inner().resource_name;
        let known = lock(&self.shared.uploads).get(&name).copied();
        match known {
            Some((committed_size, complete)) => {
                Ok(Response::new(bs::QueryWriteStatusResponse { committed_size, complete }))
            }
            None if self.shared.defects.has(Defect::QueryWriteStatusWrong) => {
                Ok(Response::new(bs::QueryWriteStatusResponse { committed_size: 0, complete: false }))
            }
            None => Err(Status::not_found(format!("no upload named {name:?}"))),
        }
    }
}

impl ByteStreamService {
    /// A compressed-blobs read: `read_offset` counts uncompressed bytes and a
    /// `read_limit` is refused, as the spec says.
    fn read_compressed(
        &self,
        c: Compressor,
        f: Function,
        digest: &re::Digest,
        offset: i64,
        limit: i64,
    ) -> Result<Response<BoxStream<bs::ReadResponse>>, Status> {
        let defects = &self.shared.defects;
        self.shared.check_compressor(c)?;
        if limit != 0 && !defects.has(Defect::CompressedReadLimitHonoured) {
            return Err(Status::invalid_argument("read_limit must be 0 for compressed-blobs reads"));
        }
        let data = self
            .shared
            .blobs
            .get_in(f, digest)
            .ok_or_else(|| Status::not_found(format!("blob {}/{} not found", digest.hash, digest.size_bytes)))?;
        if offset < 0 || offset as u64 > data.len() as u64 {
            return Err(Status::out_of_range(format!("read_offset {offset} outside blob of {} bytes", data.len())));
        }
        let encode = |bytes: &[u8]| {
            if defects.has(Defect::CompressedReadUncompressed) {
                bytes.to_vec()
            } else {
                compression::compress(c, bytes).unwrap_or_default()
            }
        };
        let mut wire = if defects.has(Defect::CompressedOffsetOnCompressed) {
            let mut all = encode(&data);
            all.split_off((offset as usize).min(all.len()))
        } else {
            encode(&data[offset as usize..])
        };
        if limit > 0 {
            wire.truncate(limit as usize);
        }
        let chunks: Vec<Result<bs::ReadResponse, Status>> =
            wire.chunks(READ_CHUNK_BYTES).map(|c| Ok(bs::ReadResponse { data: c.to_vec() })).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    /// A compressed-blobs upload, from its first message on: `write_offset`
    /// is the first message's plus the compressed bytes before it; the data is
    /// checked once decompressed. A blob the CAS holds ends the upload at once
    /// with committed_size -1.
    async fn write_compressed(
        &self,
        c: Compressor,
        f: Function,
        digest: re::Digest,
        first: bs::WriteRequest,
        mut stream: Streaming<bs::WriteRequest>,
    ) -> Result<Response<bs::WriteResponse>, Status> {
        let defects = &self.shared.defects;
        self.shared.check_compressor(c)?;
        if digest.size_bytes > MAX_BLOB_SIZE_BYTES {
            return Err(Status::invalid_argument(format!("blob of {} bytes is too large", digest.size_bytes)));
        }
        if self.shared.blobs.contains_in(f, &digest) {
            let committed_size = if defects.has(Defect::CompressedExistingSize) { digest.size_bytes } else { -1 };
            return Ok(Response::new(bs::WriteResponse { committed_size }));
        }
        if first.write_offset != 0 {
            return Err(Status::invalid_argument("compressed uploads start at write_offset 0 here"));
        }
        let mut wire = Vec::new();
        let mut message = Some(first);
        while let Some(m) = message.take() {
            if m.write_offset != wire.len() as i64 {
                return Err(Status::invalid_argument(format!(
                    "write_offset {} but {} compressed bytes were received",
                    m.write_offset,
                    wire.len()
                )));
            }
            if (wire.len() + m.data.len()) as i64 > MAX_BLOB_SIZE_BYTES {
                return Err(Status::invalid_argument("compressed upload too large"));
            }
            wire.extend_from_slice(&m.data);
            if m.finish_write {
                break;
            }
            message = stream.message().await?;
            if message.is_none() {
                return Err(Status::invalid_argument("the upload ended without finish_write"));
            }
        }
        let data = compression::decompress(c, &wire, digest.size_bytes as usize)
            .map_err(|e| Status::invalid_argument(format!("compressed data does not decompress: {e}")))?;
        if defects.has(Defect::CompressedUploadUnverified) {
            self.shared.blobs.put_unverified_in(f, &digest, Bytes::from(data));
        } else {
            self.shared.blobs.put_verified_in(f, &digest, Bytes::from(data)).map_err(Status::invalid_argument)?;
        }
        Ok(Response::new(bs::WriteResponse { committed_size: wire.len() as i64 }))
    }
}

// ---------------------------------------------------------------------------
// ActionCache

pub(crate) struct ActionCacheService {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl re::action_cache_server::ActionCache for ActionCacheService {
    async fn get_action_result(
        &self,
        request: Request<re::GetActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        self.shared.fault_gate().await?;
        let request = request.into_inner();
        let (f, digest) = self.shared.action_digest(request.digest_function, request.action_digest.as_ref())?;
        match self.shared.cached_result_in(f, &digest) {
            Some(result) => Ok(Response::new(result)),
            None if self.shared.defects.has(Defect::WrongStatusCodes) => {
                Err(Status::internal("action cache lookup failed"))
            }
            None => {
                Err(Status::not_found(format!("no cached result for action {}/{}", digest.hash, digest.size_bytes)))
            }
        }
    }

    async fn update_action_result(
        &self,
        request: Request<re::UpdateActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        self.shared.fault_gate().await?;
        let request = request.into_inner();
        let (f, digest) = self.shared.action_digest(request.digest_function, request.action_digest.as_ref())?;
        let result = request.action_result.ok_or_else(|| Status::invalid_argument("action_result missing"))?;
        let failing_dropped = self.shared.defects.has(Defect::AcFailingUpdatesDropped) && result.exit_code != 0;
        if !self.shared.defects.has(Defect::AcUpdateDropped) && !failing_dropped {
            lock(&self.shared.action_cache).insert(key(f, &digest.hash), result.clone());
        }
        Ok(Response::new(result))
    }
}

impl Shared {
    pub(crate) fn cached_result_in(&self, f: Function, action: &re::Digest) -> Option<re::ActionResult> {
        lock(&self.action_cache).get(&key(f, &action.hash)).cloned()
    }

    /// The function and action digest of an action-cache request.
    fn action_digest(&self, value: i32, digest: Option<&re::Digest>) -> Result<(Function, re::Digest), Status> {
        let f = self.request_function(value, digest.map(|d| d.hash.as_str()))?;
        // The defect keeps the key SHA-256-shaped whatever the function.
        let checked_as = if self.defects.has(Defect::AcSha256Only) { Function::Sha256 } else { f };
        Ok((f, check_digest_in(checked_as, digest, "action_digest")?))
    }
}

// ---------------------------------------------------------------------------
// Capabilities

pub(crate) struct CapabilitiesService {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl re::capabilities_server::Capabilities for CapabilitiesService {
    async fn get_capabilities(
        &self,
        _: Request<re::GetCapabilitiesRequest>,
    ) -> Result<Response<re::ServerCapabilities>, Status> {
        self.shared.fault_gate().await?;
        let sha256 = re::digest_function::Value::Sha256 as i32;
        let version = |minor| Some(SemVer { major: 2, minor, patch: 0, prerelease: String::new() });
        Ok(Response::new(re::ServerCapabilities {
            cache_capabilities: Some(re::CacheCapabilities {
                digest_functions: self.shared.cache_functions().iter().map(|f| f.value() as i32).collect(),
                split_blob_support: self.shared.splits_blobs(),
                splice_blob_support: self.shared.splits_blobs(),
                fast_cdc_2020_params: self.shared.splits_blobs().then_some(crate::split_splice::FASTCDC_PARAMS),
                action_cache_update_capabilities: Some(re::ActionCacheUpdateCapabilities { update_enabled: true }),
                max_batch_total_size_bytes: MAX_BATCH_TOTAL_SIZE_BYTES,
                symlink_absolute_path_strategy: re::symlink_absolute_path_strategy::Value::Allowed as i32,
                max_cas_blob_size_bytes: MAX_BLOB_SIZE_BYTES,
                supported_compressors: self.shared.compressors().iter().map(|c| *c as i32).collect(),
                supported_batch_update_compressors: self.shared.compressors().iter().map(|c| *c as i32).collect(),
                ..Default::default()
            }),
            execution_capabilities: Some(re::ExecutionCapabilities {
                digest_function: if self.shared.defects.has(Defect::ExecDigestFunctionUnset) { 0 } else { sha256 },
                exec_enabled: true,
                digest_functions: self.shared.cache_functions().iter().map(|f| f.value() as i32).collect(),
                supported_node_properties: crate::execution::SUPPORTED_NODE_PROPERTIES
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                ..Default::default()
            }),
            deprecated_api_version: None,
            low_api_version: if self.shared.defects.has(Defect::ApiVersionsUnset) { None } else { version(0) },
            // What it implements: output_paths (2.1), Action.platform (2.2),
            // output_directory_format and root_directory_digest (2.8).
            high_api_version: if self.shared.defects.has(Defect::ApiVersionsUnset) { None } else { version(8) },
        }))
    }
}
