//! The eBPF object depends on the `bpf-linker` binary, which cargo does not
//! track: rebuild when the one on PATH changes.

fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(e) => println!("cargo:warning=bpf-linker not found ({e}); run `cargo xtask setup`"),
    }
}
