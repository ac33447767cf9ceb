//! Whether this process may load eBPF programs and manage sockmaps.
use std::fs;

/// `CAP_NET_ADMIN`, see capability.h.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_BPF` (Linux 5.8+), see capability.h.
const CAP_BPF: u32 = 39;
/// `CAP_PERFMON` (Linux 5.8+): the verdict program reads kernel memory
/// (`bpf_probe_read_kernel`), which the verifier allows only with it.
const CAP_PERFMON: u32 = 38;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN in the ambient set, so that the
/// processes we start (cargo, the test binaries, the daemon) hold them too.
pub fn can_load_ebpf() -> bool {
    is_root()
        || fs::read_to_string("/proc/self/status")
            .is_ok_and(|status| ambient_has(&status, &[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]))
}

/// Whether the `CapAmb:` line of a `/proc/<pid>/status` text holds every capability in `caps`.
fn ambient_has(status: &str, caps: &[u32]) -> bool {
    let Some(hex) = status.lines().find_map(|line| line.strip_prefix("CapAmb:")) else {
        return false;
    };
    let Ok(mask) = u64::from_str_radix(hex.trim(), 16) else {
        return false;
    };
    caps.iter().all(|&cap| mask & (1 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambient_capabilities_are_read_from_the_status_text() {
        let both = format!("Name:\tx\nCapAmb:\t{:016x}\n", (1u64 << 39) | (1 << 12));
        assert!(ambient_has(&both, &[CAP_BPF, CAP_NET_ADMIN]));
        assert!(!ambient_has(
            "CapAmb:\t0000000000001000\n",
            &[CAP_BPF, CAP_NET_ADMIN]
        ));
        assert!(!ambient_has("Name:\tx\n", &[CAP_BPF]));
    }
}
