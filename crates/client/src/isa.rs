//! The ISA of this machine in BuildStream's own naming (`x86-64`,
//! `aarch64`, …), which BuildStream sends as the `ISA` platform property.
//! One copy for the harness and the defect server; the probe, which has no
//! dependencies by design, maps the sandbox's `uname` machine names itself.

/// This build's target architecture in BuildStream's naming, or Rust's name
/// when BuildStream has none for it.
pub fn host() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86-32",
        "aarch64" if cfg!(target_endian = "big") => "aarch64-be",
        "aarch64" => "aarch64",
        "arm" => "aarch32",
        "powerpc64" if cfg!(target_endian = "little") => "power-isa-le",
        "powerpc64" => "power-isa-be",
        "riscv64" => "rv64g",
        "riscv32" => "rv32g",
        "sparc64" => "sparc-v9",
        "loongarch64" => "la64v100",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_has_a_buildstream_name() {
        if cfg!(target_arch = "x86_64") {
            assert_eq!(super::host(), "x86-64");
        }
    }
}
