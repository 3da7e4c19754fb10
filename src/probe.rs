//! The probe executable embedded in the harness (built by build.rs from
//! `probe/main.rs`; contract in `docs/probe.md`).

use std::sync::{Arc, OnceLock};

/// Bytes of the static probe executable.
pub const PROBE_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reapi-probe"));

/// The probe as a shared blob, so every input root references one copy.
pub fn probe_blob() -> Arc<Vec<u8>> {
    static BLOB: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    BLOB.get_or_init(|| Arc::new(PROBE_BYTES.to_vec())).clone()
}

/// Parses the probe's stdout: one JSON object (leading noise from a wrapper
/// is tolerated, a missing or broken report is not).
pub fn parse_report(stdout: &[u8]) -> Result<serde_json::Value, String> {
    let text = String::from_utf8_lossy(stdout);
    let start = text.find("{\"probe_version\"").ok_or_else(|| "no probe report in stdout".to_string())?;
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    match de.next() {
        Some(Ok(v)) if v.is_object() => Ok(v),
        Some(Err(e)) => Err(format!("probe report does not parse: {e}")),
        _ => Err("probe report is not a JSON object".into()),
    }
}

/// The host ISA in BuildStream's naming (used as the default `${isa}`).
pub fn host_isa() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86-32",
        "aarch64" => "aarch64",
        "arm" => "aarch32",
        "powerpc64" if cfg!(target_endian = "little") => "power-isa-le",
        "powerpc64" => "power-isa-be",
        "riscv64" => "rv64g",
        "sparc64" => "sparc-v9",
        "loongarch64" => "la64v100",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_is_a_static_elf() {
        let b = PROBE_BYTES;
        assert_eq!(&b[..5], b"\x7fELF\x02", "64-bit ELF");
        // A dynamically linked executable has a PT_INTERP program header naming its loader.
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        const PT_INTERP: u32 = 3;
        for i in 0..phnum {
            let o = phoff + i * phentsize;
            let p_type = u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            assert_ne!(p_type, PT_INTERP, "probe must not need a loader");
        }
    }

    #[test]
    fn report_is_found_after_noise() {
        let v = parse_report(b"warning: x\n{\"probe_version\":1,\"cwd\":\"/\"}\n").unwrap();
        assert_eq!(v["cwd"], "/");
        assert!(parse_report(b"hello").is_err());
        assert!(parse_report(b"{\"probe_version\":1,").is_err());
    }
}
