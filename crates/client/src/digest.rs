//! SHA-256 digests as REAPI uses them: one definition for the whole
//! workspace (the core re-exports it as `digest`; the worker and the defect
//! server use it).

use bazel_remote_apis::build::bazel::remote::execution::v2::Digest;
use prost::Message;
use sha2::{Digest as _, Sha256};

/// Digest of raw bytes.
pub fn of_bytes(data: &[u8]) -> Digest {
    Digest { hash: hex::encode(Sha256::digest(data)), size_bytes: data.len() as i64 }
}

/// Serialises a message and returns its digest with the bytes.
pub fn of_message<M: Message>(msg: &M) -> (Digest, Vec<u8>) {
    let bytes = msg.encode_to_vec();
    (of_bytes(&bytes), bytes)
}

/// `hash/size`, the form used in resource names and evidence.
pub fn show(d: &Digest) -> String {
    format!("{}/{}", d.hash, d.size_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_inputs() {
        for (data, hash) in [
            (&b""[..], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (&b"abc"[..], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ] {
            let d = of_bytes(data);
            assert_eq!(d.hash, hash);
            assert_eq!(d.size_bytes, data.len() as i64);
        }
    }
}
