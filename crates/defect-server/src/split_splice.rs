//! SplitBlob and SpliceBlob (REAPI v2.12): blobs split into fixed-size
//! chunks, which the spec allows (the chunking function answered is UNKNOWN:
//! "no specific algorithm"), and blobs spliced from chunks the CAS holds,
//! verified before they are stored.

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use prost::bytes::Bytes;
use tonic::Status;

use super::cas::{check_digest_in, CasService, MAX_BLOB_SIZE_BYTES};
use super::defects::Defect;
use super::Shared;

/// Size of every chunk but the last.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

impl Shared {
    /// Whether SplitBlob and SpliceBlob are advertised and served.
    pub(crate) fn splits_blobs(&self) -> bool {
        !self.defects.has(Defect::Sha256Only)
    }

    fn check_splits(&self, rpc: &str) -> Result<(), Status> {
        if self.splits_blobs() {
            Ok(())
        } else {
            Err(Status::unimplemented(format!("{rpc} is not supported")))
        }
    }
}

impl CasService {
    pub(crate) fn split(&self, request: re::SplitBlobRequest) -> Result<re::SplitBlobResponse, Status> {
        self.shared.check_splits("SplitBlob")?;
        let f = self
            .shared
            .request_function(request.digest_function, request.blob_digest.as_ref().map(|d| d.hash.as_str()))?;
        let digest = check_digest_in(f, request.blob_digest.as_ref(), "blob_digest")?;
        let Some(data) = self.shared.blobs.get_in(f, &digest) else {
            if self.shared.defects.has(Defect::SplitUnknownEmpty) {
                return Ok(re::SplitBlobResponse { chunk_digests: Vec::new(), chunking_function: 0 });
            }
            return Err(Status::not_found(format!("blob {}/{} not found", digest.hash, digest.size_bytes)));
        };
        let mut chunk_digests: Vec<re::Digest> =
            data.chunks(CHUNK_BYTES).map(|chunk| self.shared.blobs.put_in(f, Bytes::copy_from_slice(chunk))).collect();
        if self.shared.defects.has(Defect::SplitChunksIncomplete) && chunk_digests.len() > 1 {
            chunk_digests.pop();
        }
        Ok(re::SplitBlobResponse { chunk_digests, chunking_function: 0 })
    }

    pub(crate) fn splice(&self, request: re::SpliceBlobRequest) -> Result<re::SpliceBlobResponse, Status> {
        self.shared.check_splits("SpliceBlob")?;
        let f = self
            .shared
            .request_function(request.digest_function, request.blob_digest.as_ref().map(|d| d.hash.as_str()))?;
        let expected = check_digest_in(f, request.blob_digest.as_ref(), "blob_digest")?;
        if expected.size_bytes > MAX_BLOB_SIZE_BYTES {
            return Err(Status::invalid_argument(format!("blob of {} bytes is too large", expected.size_bytes)));
        }
        let mut data = Vec::new();
        for chunk in &request.chunk_digests {
            let chunk = check_digest_in(f, Some(chunk), "chunk_digests")?;
            let bytes = self
                .shared
                .blobs
                .get_in(f, &chunk)
                .ok_or_else(|| Status::not_found(format!("chunk {}/{} not found", chunk.hash, chunk.size_bytes)))?;
            if (data.len() + bytes.len()) as i64 > MAX_BLOB_SIZE_BYTES {
                return Err(Status::invalid_argument("the chunks add up to more than the largest blob served"));
            }
            data.extend_from_slice(&bytes);
        }
        if self.shared.defects.has(Defect::SpliceNotStored) {
            return Ok(re::SpliceBlobResponse { blob_digest: Some(expected) });
        }
        if self.shared.defects.has(Defect::SpliceAcceptsMismatch) {
            self.shared.blobs.put_unverified_in(f, &expected, Bytes::from(data));
            return Ok(re::SpliceBlobResponse { blob_digest: Some(expected) });
        }
        self.shared.blobs.put_verified_in(f, &expected, Bytes::from(data)).map_err(Status::invalid_argument)?;
        Ok(re::SpliceBlobResponse { blob_digest: Some(expected) })
    }
}
