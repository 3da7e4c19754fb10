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
/// is tolerated, a missing or broken report is not). The environment comes
/// back with the values of BuildStream's variables only (see
/// [`redact_environment`]).
pub fn parse_report(stdout: &[u8]) -> Result<serde_json::Value, String> {
    let text = String::from_utf8_lossy(stdout);
    let start = text.find("{\"probe_version\"").ok_or_else(|| "no probe report in stdout".to_string())?;
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    match de.next() {
        Some(Ok(mut v)) if v.is_object() => {
            redact_environment(&mut v);
            Ok(v)
        }
        Some(Err(e)) => Err(format!("probe report does not parse: {e}")),
        _ => Err("probe report is not a JSON object".into()),
    }
}

/// The value the report shows for a variable the action was not given.
pub const UNREPORTED: &str = "(not reported)";

/// Said next to evidence about the environment when some values are withheld.
pub const ENV_NOTE: &str = "values of variables the action was not given are not reported";

/// Whether the report keeps the value of a variable: only of those
/// BuildStream sets in the Command (plus `PWD`, which shells set).
pub fn value_reported(name: &str) -> bool {
    crate::suite::BUILDSTREAM_ENV_NAMES.contains(&name)
}

/// Replaces the value of every variable but BuildStream's with
/// [`UNREPORTED`]. A worker that leaks its own environment into actions (a
/// no-chroot runner, say) would otherwise put CI secrets into the evidence
/// and so into report files; the names stay, so checks that judge which
/// variables are present judge the same. Returns whether any was replaced.
pub fn redact_environment(report: &mut serde_json::Value) -> bool {
    let Some(env) = report.get_mut("env").and_then(serde_json::Value::as_object_mut) else { return false };
    let mut replaced = false;
    for (name, value) in env.iter_mut() {
        if !value_reported(name) && *value != UNREPORTED {
            *value = serde_json::Value::String(UNREPORTED.into());
            replaced = true;
        }
    }
    replaced
}

/// Whether a parsed report withholds some values (see [`redact_environment`]).
pub fn withholds_values(report: &serde_json::Value) -> bool {
    report.get("env").and_then(serde_json::Value::as_object).is_some_and(|env| env.values().any(|v| v == UNREPORTED))
}

/// The probe's stdout as evidence may show it: a report's environment with
/// the values [`redact_environment`] withholds, and of a report that does not
/// parse nothing from its environment on.
pub fn stdout_for_evidence(stdout: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stdout);
    let Some(start) = text.find("{\"probe_version\"") else { return stdout.to_vec() };
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    if let Some(Ok(mut report)) = de.next() {
        redact_environment(&mut report);
        let end = start + de.byte_offset();
        return format!("{}{report}{}", &text[..start], &text[end..]).into_bytes();
    }
    match text[start..].find("\"env\"") {
        Some(at) => format!("{}\"env\": … (not shown: {ENV_NOTE})", &text[..start + at]).into_bytes(),
        None => stdout.to_vec(),
    }
}

/// The host ISA in BuildStream's naming (used as the default `${isa}`).
pub fn host_isa() -> &'static str {
    reapi_client::isa::host()
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

    #[test]
    fn only_buildstream_variables_keep_their_values() {
        let stdout = br#"{"probe_version": 2, "env": {"PATH": "/usr/bin", "HOME": "/tmp", "PWD": "/w", "CI_JOB_TOKEN": "s3cret", "AWS_SECRET_ACCESS_KEY": "k3y"}, "env_order": ["PATH", "CI_JOB_TOKEN"]}"#;
        let v = parse_report(stdout).unwrap();
        assert_eq!((v["env"]["PATH"].as_str(), v["env"]["HOME"].as_str()), (Some("/usr/bin"), Some("/tmp")));
        assert_eq!(v["env"]["PWD"], "/w");
        assert_eq!(v["env"]["CI_JOB_TOKEN"], UNREPORTED);
        assert_eq!(v["env"]["AWS_SECRET_ACCESS_KEY"], UNREPORTED);
        assert!(withholds_values(&v));
        assert_eq!(v["env_order"][1], "CI_JOB_TOKEN", "names are still reported");
        let shown = String::from_utf8(stdout_for_evidence(stdout)).unwrap();
        assert!(!shown.contains("s3cret") && !shown.contains("k3y") && shown.contains("CI_JOB_TOKEN"), "{shown}");
        // A report cut short shows nothing from its environment on.
        let cut = &stdout[..stdout.len() - 40];
        let shown = String::from_utf8(stdout_for_evidence(cut)).unwrap();
        assert!(!shown.contains("s3cret") && shown.contains(ENV_NOTE), "{shown}");
        assert!(parse_report(cut).is_err());
    }
}
