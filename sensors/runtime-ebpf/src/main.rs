//! The runtime sensor's eBPF programs: process, file and network events into
//! a ring buffer, and the in-kernel half of RuntimePolicy enforcement (rule
//! lookups per cgroup, SIGKILL from tracepoints, EPERM from LSM hooks).
//!
//! Built for `bpfel-unknown-none` by `sensors/runtime/build.rs`; on the
//! host this crate is an empty program so `cargo build --workspace` works.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that could reach this; it is never loaded.
    loop {}
}

// The helpers that read process memory and send signals are GPL-only.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
