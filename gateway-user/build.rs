//! Builds `gateway-ebpf` for the BPF target (nightly + bpf-linker, through aya-build) and
//! leaves the object in `OUT_DIR`, where `src/dataplane/ebpf.rs` embeds it with
//! `include_bytes_aligned!`. The daemon is therefore one self-contained binary.
fn main() -> anyhow::Result<()> {
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
