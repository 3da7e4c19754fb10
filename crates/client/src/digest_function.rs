//! The digest functions of REAPI's `DigestFunction.Value` that the harness
//! can compute: SHA-256, SHA-1, MD5, SHA-384, SHA-512, BLAKE3 and GITSHA1
//! (SHA-1 over a Git blob header), each from a maintained crate, and
//! SHA256TREE (a tree of SHA-256 compressions, written here from the enum's
//! description and held to the spec's test vectors). Not covered: VSO
//! (Microsoft's paged hash) and MURMUR3 (128-bit x64 with REAPI's byte
//! order), for which no maintained crate is made.

use bazel_remote_apis::build::bazel::remote::execution::v2::digest_function::Value;
use bazel_remote_apis::build::bazel::remote::execution::v2::Digest;
use sha2::Digest as _;

/// A digest function the harness can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// SHA-256, the function every server takes.
    Sha256,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
    /// BLAKE3 (256-bit output).
    Blake3,
    /// Git's blob hash: SHA-1 of `blob <size>\0` and the data.
    GitSha1,
    /// SHA256TREE: SHA-256 over a tree of 1 KiB leaves, as REAPI defines it.
    Sha256Tree,
}

impl Function {
    /// Every function the harness computes, SHA-256 first.
    pub const ALL: &'static [Function] = &[
        Function::Sha256,
        Function::Sha1,
        Function::Md5,
        Function::Sha384,
        Function::Sha512,
        Function::Blake3,
        Function::GitSha1,
        Function::Sha256Tree,
    ];

    /// The function of a `DigestFunction.Value`, if the harness computes it.
    pub fn from_value(value: i32) -> Option<Function> {
        Function::ALL.iter().copied().find(|f| f.value() as i32 == value)
    }

    /// Its `DigestFunction.Value`.
    pub fn value(self) -> Value {
        match self {
            Function::Sha256 => Value::Sha256,
            Function::Sha1 => Value::Sha1,
            Function::Md5 => Value::Md5,
            Function::Sha384 => Value::Sha384,
            Function::Sha512 => Value::Sha512,
            Function::Blake3 => Value::Blake3,
            Function::GitSha1 => Value::Gitsha1,
            Function::Sha256Tree => Value::Sha256tree,
        }
    }

    /// The enum's name, e.g. `BLAKE3`.
    pub fn name(self) -> &'static str {
        self.value().as_str_name()
    }

    /// Hex characters of its hashes.
    pub fn hex_len(self) -> usize {
        match self {
            Function::Md5 => 32,
            Function::Sha1 | Function::GitSha1 => 40,
            Function::Sha256 | Function::Blake3 | Function::Sha256Tree => 64,
            Function::Sha384 => 96,
            Function::Sha512 => 128,
        }
    }

    /// The `{digest_function}` segment of ByteStream resource names
    /// (REAPI v2.11+): the lower-case enum name for the functions added after
    /// the original seven; the spec says the segment MUST be omitted for MD5,
    /// MURMUR3, SHA1, SHA256, SHA384, SHA512 and VSO (the server infers those
    /// from the hash length).
    pub fn resource_segment(self) -> Option<&'static str> {
        match self {
            Function::Blake3 => Some("blake3"),
            Function::GitSha1 => Some("gitsha1"),
            Function::Sha256Tree => Some("sha256tree"),
            _ => None,
        }
    }

    /// The function a resource-name segment names, if it is one of the
    /// functions that carry a segment.
    pub fn from_segment(segment: &str) -> Option<Function> {
        Function::ALL.iter().copied().find(|f| f.resource_segment() == Some(segment))
    }

    /// Lower-case hex hash of `data`.
    pub fn hash(self, data: &[u8]) -> String {
        match self {
            Function::Sha256 => hex::encode(sha2::Sha256::digest(data)),
            Function::Sha1 => hex::encode(sha1::Sha1::digest(data)),
            Function::Md5 => hex::encode(md5::Md5::digest(data)),
            Function::Sha384 => hex::encode(sha2::Sha384::digest(data)),
            Function::Sha512 => hex::encode(sha2::Sha512::digest(data)),
            Function::Blake3 => blake3::hash(data).to_hex().to_string(),
            Function::GitSha1 => {
                // Git's object id of a blob: the header, then the content.
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {}\0", data.len()).as_bytes());
                h.update(data);
                hex::encode(h.finalize())
            }
            Function::Sha256Tree => hex::encode(sha256tree(data)),
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Digest {
        Digest { hash: self.hash(data), size_bytes: data.len() as i64 }
    }

    /// Whether `hash` is well formed for this function: lower-case hex of its length.
    pub fn well_formed(self, hash: &str) -> bool {
        hash.len() == self.hex_len() && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

/// SHA256TREE: plain SHA-256 up to 1024 bytes; above, the hashes of a left
/// part of the largest power of two below the length and of the rest, as one
/// 64-byte block through the SHA-256 compression function started from
/// other initial values and without the final addition of those values.
fn sha256tree(data: &[u8]) -> [u8; 32] {
    /// The fractional parts of the square roots of the 9th to 16th primes.
    const H: [u32; 8] =
        [0xcbbb9d5d, 0x629a292a, 0x9159015a, 0x152fecd8, 0x67332667, 0x8eb44a87, 0xdb0c2e0d, 0x47b5481d];
    if data.len() <= 1024 {
        return sha2::Sha256::digest(data).into();
    }
    // m = 2^k with 0 < len - m <= m.
    let m = 1usize << (usize::BITS - 1 - (data.len() - 1).leading_zeros());
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(&sha256tree(&data[..m]));
    block[32..].copy_from_slice(&sha256tree(&data[m..]));
    let mut state = H;
    sha2::compress256(&mut state, &[block.into()]);
    // compress256 adds the initial values back (Davies-Meyer); SHA256TREE does not.
    let mut out = [0u8; 32];
    for (i, (word, initial)) in state.iter().zip(H).enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.wrapping_sub(initial).to_be_bytes());
    }
    out
}

/// Hex characters of a hash of `value`, for every known function (those the
/// harness cannot compute included), so a request can name a function with a
/// hash of the right length.
pub fn hex_len_of(value: Value) -> usize {
    match value {
        Value::Md5 | Value::Murmur3 => 32,
        Value::Sha1 | Value::Gitsha1 => 40,
        Value::Unknown | Value::Sha256 | Value::Sha256tree | Value::Blake3 => 64,
        Value::Vso => 66,
        Value::Sha384 => 96,
        Value::Sha512 => 128,
    }
}

/// A name for a `DigestFunction.Value` that may be none the enum knows.
pub fn name_of(value: i32) -> String {
    Value::try_from(value).map_or_else(|_| format!("unknown value {value}"), |v| v.as_str_name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hashes_of_the_empty_blob_and_abc() {
        let cases = [
            (Function::Sha256, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (Function::Sha1, "", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            (Function::Md5, "", "d41d8cd98f00b204e9800998ecf8427e"),
            (Function::Blake3, "", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
            (Function::Sha1, "abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (Function::Md5, "abc", "900150983cd24fb0d6963f7d28e17f72"),
            (Function::Sha384, "abc", "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"),
            (Function::Sha512, "abc", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
            // `git hash-object` of an empty file.
            (Function::GitSha1, "", "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"),
        ];
        for (f, data, hash) in cases {
            assert_eq!(f.hash(data.as_bytes()), hash, "{} of {data:?}", f.name());
            assert!(f.well_formed(hash));
            assert_eq!(hash.len(), hex_len_of(f.value()));
        }
    }

    /// The spec's SHA256TREE test vectors (sha256tree_test_vectors.txt
    /// beside remote_execution.proto): the repeating bytes 0..=250 of each length.
    #[test]
    fn sha256tree_matches_the_spec_vectors() {
        let vectors = [
            (1025, "36c0998b21839ef74300b9de47d96d1f62323dc81f2b4231e98ce70cd6ffe750"),
            (2048, "b584996386f01793751c5cf0c39561f51b7e9924b818943b3cb2f6928cea0fa9"),
            (2049, "7318d2029b0392edf4cf109edb5a086b4bdadbb7950f710a1483eb881d9e5d44"),
            (3073, "517d20c0e5835f060a1bd6388ed68574f63424bdac2a2c3a35a5c2ef859d8fe2"),
            (4096, "2f72bb93880012168c027f6781527ff08177c7c8dccb443f4d2c6389c186633d"),
            (8193, "113c6e3a2452f388b6fad13dfab66ee0bff597a0a9a517ad8d0165f7190b603e"),
            (16384, "a7a10149a8cb00be537000560edb83b196306b780b72fad8af218f369f75fc19"),
            (31744, "2cdf7662636c173d4b236f6ea03bf84c65e7f6487b53b2a61c420e26cf8a98c7"),
            (102400, "0668d69e5331840d2f1823d717b7b3f5d1fdc8a09504cddb692b87ff83d50e5f"),
        ];
        for (len, hash) in vectors {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(Function::Sha256Tree.hash(&data), hash, "length {len}");
        }
        // Up to 1024 bytes it is SHA-256.
        let small: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(Function::Sha256Tree.hash(&small), Function::Sha256.hash(&small));
    }

    #[test]
    fn names_values_and_segments_agree() {
        for &f in Function::ALL {
            assert_eq!(Function::from_value(f.value() as i32), Some(f));
            if let Some(segment) = f.resource_segment() {
                assert_eq!(segment, f.name().to_lowercase());
                assert_eq!(Function::from_segment(segment), Some(f));
            }
        }
        assert_eq!(Function::from_value(Value::Vso as i32), None);
        assert_eq!(Function::Sha256.resource_segment(), None);
        assert!(!Function::Sha1.well_formed(&Function::Sha256.hash(b"")));
    }
}
