//! The compressors of REAPI's `compressed-blobs` resources and compressed
//! batches: ZSTD and DEFLATE (RFC 1951, no zlib or gzip header). The harness
//! uses them to check servers that advertise compressors; the defect server
//! to serve them. Decompression never produces more than a limit the caller
//! names, whatever the compressed data claims.

use std::io::Read;

pub use bazel_remote_apis::build::bazel::remote::execution::v2::compressor::Value as Compressor;

/// The compressors this crate can encode and decode (IDENTITY aside).
pub const SUPPORTED: &[Compressor] = &[Compressor::Zstd, Compressor::Deflate];

/// The lower-case name a resource name carries (`compressed-blobs/zstd/…`).
pub fn resource_segment(c: Compressor) -> String {
    c.as_str_name().to_ascii_lowercase()
}

/// The compressor a resource name segment names, if it is one.
pub fn from_segment(segment: &str) -> Option<Compressor> {
    Compressor::from_str_name(&segment.to_ascii_uppercase())
}

/// A compressor's name for evidence (`ZSTD`), also for unknown enum values.
pub fn name(value: i32) -> String {
    Compressor::try_from(value).map_or_else(|_| format!("compressor {value}"), |c| c.as_str_name().to_string())
}

/// `data` compressed with `c`; `None` for a compressor this crate cannot encode.
pub fn compress(c: Compressor, data: &[u8]) -> Option<Vec<u8>> {
    match c {
        Compressor::Identity => Some(data.to_vec()),
        Compressor::Zstd => Some(ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)),
        Compressor::Deflate => {
            use std::io::Write;
            let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).ok()?;
            enc.finish().ok()
        }
        Compressor::Brotli => None,
    }
}

/// `data` decompressed with `c`, refused when it is malformed, when the
/// compressor is one this crate cannot decode, or when it would expand past
/// `limit` bytes.
pub fn decompress(c: Compressor, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(limit.min(64 * 1024));
    let bound = limit as u64 + 1;
    match c {
        Compressor::Identity => out.extend_from_slice(data),
        Compressor::Zstd => {
            // A stream may hold several frames one after another.
            let mut rest = data;
            while !rest.is_empty() && out.len() <= limit {
                let decoder = ruzstd::decoding::StreamingDecoder::new(&mut rest).map_err(|e| format!("zstd: {e}"))?;
                decoder.take(bound - out.len() as u64).read_to_end(&mut out).map_err(|e| format!("zstd: {e}"))?;
            }
        }
        Compressor::Deflate => {
            flate2::read::DeflateDecoder::new(data)
                .take(bound)
                .read_to_end(&mut out)
                .map_err(|e| format!("deflate: {e}"))?;
        }
        Compressor::Brotli => return Err("BROTLI is not supported".into()),
    }
    if out.len() > limit {
        return Err(format!("expands past {limit} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds() {
        let data: Vec<u8> = b"compressible ".iter().copied().cycle().take(10_000).collect();
        for &c in SUPPORTED {
            let packed = compress(c, &data).unwrap();
            assert!(packed.len() < data.len() / 4, "{c:?} compresses");
            assert_eq!(decompress(c, &packed, data.len()).unwrap(), data);
            assert!(decompress(c, &packed, data.len() - 1).is_err(), "{c:?} honours the limit");
            assert!(decompress(c, b"not compressed at all", 100).is_err(), "{c:?} refuses garbage");
        }
        // Two zstd frames in a row are one blob.
        let mut two = compress(Compressor::Zstd, b"ab").unwrap();
        two.extend(compress(Compressor::Zstd, b"cd").unwrap());
        assert_eq!(decompress(Compressor::Zstd, &two, 4).unwrap(), b"abcd");
        assert_eq!(from_segment(&resource_segment(Compressor::Deflate)), Some(Compressor::Deflate));
        assert_eq!(name(1), "ZSTD");
        assert_eq!(name(9), "compressor 9");
    }
}
