//! Builds `gateway-ebpf` for the BPF target (nightly + bpf-linker, through aya-build) and
//! leaves the object in `OUT_DIR`, where `src/dataplane/ebpf.rs` embeds it with
//! `include_bytes_aligned!`. The daemon is therefore one self-contained binary.
//!
//! Under `cargo fuzz` (which compiles with `--cfg fuzzing`) the object is left empty: the
//! fuzz targets call parsers and never load the program, and the nested BPF build would
//! cost minutes and see the fuzzer's sanitizer flags.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CARGO_CFG_FUZZING");
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow::anyhow!("OUT_DIR not set"))?;
        std::fs::write(std::path::Path::new(&out).join("gateway-ebpf"), [])?;
        return Ok(());
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "gateway-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
