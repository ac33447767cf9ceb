//! What the kernel tests share: skipping without privileges, and a network namespace of
//! their own, so their loopback traffic, sockets and per-namespace TCP settings are theirs
//! alone (the eBPF maps are global, and each test only ever sees its own keys in them).

use std::process::Command;

/// Whether `GATEWAY_TEST_UNPRIVILEGED=1` asks to skip `name` (reported as skipped).
pub fn skip(name: &str) -> bool {
    let skip = std::env::var("GATEWAY_TEST_UNPRIVILEGED").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SKIPPED (GATEWAY_TEST_UNPRIVILEGED=1): {name}");
    }
    skip
}

/// Moves the calling thread into a network namespace of its own, loopback up. Only this
/// thread moves (`unshare` is per thread): the test harness runs each test on a thread of
/// its own, and sockets opened from here on live in the new namespace.
pub fn private_network() {
    // SAFETY: unshare affects only the calling thread's namespaces.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    // A child forked from this thread starts in its namespace.
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip");
    assert!(status.success(), "ip link set lo up: {status}");
}
