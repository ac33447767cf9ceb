//! The process's descriptor limit (`RLIMIT_NOFILE`), and the kernel's cap on accept queues
//! (`net.core.somaxconn`).

use std::io;

/// `RLIMIT_NOFILE`: (soft, hard).
pub fn limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (nginx's `worker_rlimit_nofile`, which
/// systemd's `LimitNOFILE=` and most distributions leave at 1024 soft), and logs both. The
/// soft limit is what `accept` runs into; the hard one is the most an unprivileged process
/// may take, and raising it needs privileges the gateway does not keep.
pub fn raise_soft_limit() {
    let (soft, hard) = match limits() {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read RLIMIT_NOFILE");
            return;
        }
    };
    if soft >= hard {
        tracing::info!(soft, hard, "descriptor limit (RLIMIT_NOFILE)");
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: `raised` is a valid `rlimit`; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::info!(
            from = soft,
            to = hard,
            "raised the soft descriptor limit (RLIMIT_NOFILE) to the hard limit"
        );
    } else {
        let error = io::Error::last_os_error();
        tracing::warn!(soft, hard, %error, "cannot raise the soft descriptor limit (RLIMIT_NOFILE)");
    }
}

/// `net.core.somaxconn` of the gateway's network namespace: the most a `listen(2)` backlog
/// can be (the kernel silently caps a larger one).
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}
