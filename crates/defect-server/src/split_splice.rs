//! SplitBlob and SpliceBlob (REAPI v2.12): blobs split with FastCDC 2020
//! (the advertised parameters) when the client asks for it, else into
//! fixed-size chunks, which the spec allows (the chunking function answered
//! is then UNKNOWN: "no specific algorithm"); blobs spliced from chunks the
//! CAS holds, verified before they are stored.

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use prost::bytes::Bytes;
use tonic::Status;

use reapi_client::chunking::{fastcdc_2020_at_level, FastCdcNormalization};

use super::cas::{check_digest_in, CasService, MAX_BLOB_SIZE_BYTES};
use super::defects::Defect;
use super::Shared;

/// Size of every fixed-size chunk but the last.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;
/// The advertised FastCDC 2020 parameters: a small average keeps test blobs
/// small; a seed other than 0 shows it is applied.
pub(crate) const FASTCDC_PARAMS: re::FastCdc2020Params =
    re::FastCdc2020Params { avg_chunk_size_bytes: 4096, seed: 666 };

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
        let fastcdc = request.chunking_function == re::chunking_function::Value::FastCdc2020 as i32;
        let lengths: Vec<usize> = if fastcdc {
            // `fastcdc-level-1`: normalization level 1 where the spec says 2.
            let level = if self.shared.defects.has(Defect::FastcdcLevel1) {
                FastCdcNormalization::Level1
            } else {
                FastCdcNormalization::Level2
            };
            let (avg, seed) = (FASTCDC_PARAMS.avg_chunk_size_bytes, FASTCDC_PARAMS.seed);
            fastcdc_2020_at_level(&data, avg, seed, level)
                .ok_or_else(|| Status::internal("the advertised FastCDC parameters are out of range"))?
        } else {
            data.chunks(CHUNK_BYTES).map(<[u8]>::len).collect()
        };
        let mut at = 0;
        let mut chunk_digests: Vec<re::Digest> = lengths
            .iter()
            .map(|&n| {
                let chunk = data.slice(at..at + n);
                at += n;
                self.shared.blobs.put_in(f, chunk)
            })
            .collect();
        if self.shared.defects.has(Defect::SplitChunksIncomplete) && chunk_digests.len() > 1 {
            chunk_digests.pop();
        }
        let chunking_function = if fastcdc { re::chunking_function::Value::FastCdc2020 as i32 } else { 0 };
        Ok(re::SplitBlobResponse { chunk_digests, chunking_function })
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
