//! Rebuild when `bpf-linker` changes: the crate depends on that binary, which cargo cannot
//! express (see aya-template). Its mtime stands in for its version.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!(
            "cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup` to install it"
        ),
    }
}
